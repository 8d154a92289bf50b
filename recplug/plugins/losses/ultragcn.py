"""UltraGCN's constraint losses (Mao et al., "UltraGCN: Ultra Simplification of Graph Convolutional Networks for
Recommendation", CIKM 2021): graph convolution of infinite depth approximated by weighting the loss, not by
propagating."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recplug.core.model.components import AuxLoss
from recplug.core.data.dataset import InteractionData
from recplug.core.errors import check_count, check_name, check_number
from recplug.core.ops.sparse import distinct_pairs
from recplug.core.model.types import BPRBatch, ModelOutput


def constraint_factors(users: Tensor, items: Tensor, num_users: int, num_items: int) -> tuple[Tensor, Tensor]:
    """``(β_u [M], β_i [N])`` with ``β_{u,i} = β_u β_i = (1/d_u) sqrt((d_u + 1) / (d_i + 1))`` (UltraGCN Eq. 10).

    ``d`` are the degrees over distinct training ``(user, item)`` pairs. An item without training interactions
    gets ``β_i = 1`` (Eq. 10 at ``d_i = 0``, as in the official code), so as a negative it is pushed down like
    any other item; a user without training interactions (never in a batch) gets 0.
    """
    deg_users = torch.bincount(users, minlength=num_users).double()
    deg_items = torch.bincount(items, minlength=num_items).double()
    beta_users = torch.where(deg_users > 0, (deg_users + 1).sqrt() / deg_users.clamp(min=1), 0.0)
    beta_items = (deg_items + 1).rsqrt()
    return beta_users.float(), beta_items.float()


def item_item_neighbors(
    users: Tensor, items: Tensor, num_users: int, num_items: int, k: int, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """The ``k`` heaviest neighbours of every item in the co-occurrence graph ``G = RᵀR`` (UltraGCN §3.3).

    ``ω_ij = G_ij / (g_i - G_ii) · sqrt(g_i / g_j)`` with ``g_i = Σ_k G_ik`` (Eq. 14), ``j ≠ i``. Rows of ``G``
    are formed ``chunk_size`` items at a time by a sparse product, so peak memory is ``O(chunk_size · N)``,
    never ``N²``. ``users``/``items`` are distinct training pairs. Returns ``(neighbours LongTensor[N, k], ω FloatTensor[N, k])``; an item with fewer than
    ``k`` co-occurring items gets weight-0 padding.
    """
    deg_users = torch.bincount(users, minlength=num_users).double()
    deg_items = torch.bincount(items, minlength=num_items).double()
    row_sums = torch.zeros(num_items, dtype=torch.float64).index_add_(0, items, deg_users[users])  # g_i
    off_diagonal = row_sums - deg_items  # g_i - G_ii: G_ii is the item's own degree
    ones = torch.ones(len(users))
    user_item = torch.sparse_coo_tensor(
        torch.stack([users, items]), ones, (num_users, num_items), check_invariants=True
    ).coalesce()
    item_user = user_item.t().coalesce()
    k = min(k, max(num_items - 1, 1))
    neighbours = torch.zeros(num_items, k, dtype=torch.long)
    weights = torch.zeros(num_items, k)
    inv_sqrt_g = torch.where(row_sums > 0, row_sums.clamp(min=1).rsqrt(), 0.0)
    for start in range(0, num_items, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_items))
        cooccurrence = torch.sparse.mm(item_user.index_select(0, rows), user_item).to_dense().double()
        cooccurrence[torch.arange(len(rows)), rows] = 0.0
        scale = torch.where(off_diagonal[rows] > 0, row_sums[rows].sqrt() / off_diagonal[rows].clamp(min=1), 0.0)
        omega = cooccurrence * scale[:, None] * inv_sqrt_g[None, :]
        top = omega.topk(k, dim=1)
        neighbours[rows], weights[rows] = top.indices, top.values.float()
    return neighbours, weights


class UltraGCNLoss(AuxLoss):
    """UltraGCN's objective (Mao et al., CIKM 2021, Eq. 16): ``L_O + L_C + λ L_I + γ ‖θ‖²/2`` as three terms.

    * ``<name>`` — ``L_O + L_C`` (Eqs. 12-13): weighted binary cross-entropy of each positive and of
      ``num_negatives`` uniformly drawn items per positive (with replacement, as the UltraGCN code does), each
      weighted ``w₁ + w₂ β_{u,i}`` (positives) or ``w₃ + w₄ β_{u,j}`` (negatives), the negatives' mean scaled by
      ``negative_weight``; summed over the batch.
    * ``<name>_item`` — ``λ L_I`` (Eq. 15): ``-Σ ω_ij log σ(e_u·e_j)`` over the ``num_neighbors`` heaviest
      co-occurrence neighbours ``j`` of each positive item.
    * ``<name>_norm`` — ``γ (‖E_U‖² + ‖E_I‖²)/2`` on the whole ID tables.

    UltraGCN trains on this loss alone: use it with ``model.bpr_weight: 0`` and an ``IdEmbedding`` encoder
    (``configs/ultragcn.yaml``). It scores with the final embeddings, so it can also sit on other encoders.

    Args:
        num_negatives: negatives drawn per positive.
        negative_weight: multiplier of the negatives' mean loss.
        w1: constant weight of positive terms.
        w2: weight of ``β_{u,i}`` on positive terms.
        w3: constant weight of negative terms.
        w4: weight of ``β_{u,j}`` on negative terms.
        item_weight: ``λ`` of the item-item constraint ``L_I`` (0 switches it off).
        num_neighbors: co-occurrence neighbours per item in ``L_I``.
        norm_weight: ``γ`` of the L2 norm of the ID tables.
        weight: multiplier applied to every term.
        name: the logged terms' prefix.
    """

    def __init__(
        self,
        num_negatives: int = 300,
        negative_weight: float = 300.0,
        w1: float = 1e-6,
        w2: float = 1.0,
        w3: float = 1e-6,
        w4: float = 1.0,
        item_weight: float = 5e-4,
        num_neighbors: int = 10,
        norm_weight: float = 1e-4,
        weight: float = 1.0,
        name: str = "ultragcn",
    ) -> None:
        super().__init__(weight)
        check_count(self, "num_negatives", num_negatives)
        check_count(self, "num_neighbors", num_neighbors)
        check_name(self, "name", name)
        for argument, value in (("negative_weight", negative_weight), ("w1", w1), ("w2", w2), ("w3", w3),
                                ("w4", w4), ("item_weight", item_weight), ("norm_weight", norm_weight)):
            check_number(self, argument, value, 0)
        self.num_negatives, self.negative_weight = num_negatives, negative_weight
        self.w1, self.w2, self.w3, self.w4 = w1, w2, w3, w4
        self.item_weight, self.num_neighbors, self.norm_weight = item_weight, num_neighbors, norm_weight
        self.name = name
        self.num_items = 0

    def recplug_build(self, num_items: int) -> None:
        self.num_items = num_items

    def recplug_setup(self, data: InteractionData) -> None:
        users, items = distinct_pairs(*data.split("train"), data.num_items)
        beta_users, beta_items = constraint_factors(users, items, data.num_users, data.num_items)
        self.register_buffer("beta_users", beta_users, persistent=False)
        self.register_buffer("beta_items", beta_items, persistent=False)
        if self.item_weight > 0:
            neighbours, omega = item_item_neighbors(users, items, data.num_users, data.num_items, self.num_neighbors)
            self.register_buffer("neighbours", neighbours, persistent=False)
            self.register_buffer("omega", omega, persistent=False)

    def sampling_refusal(self) -> str:
        return "it draws negatives over the whole catalogue and regularises the whole ID tables"

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        if not hasattr(self, "beta_users"):
            raise RuntimeError("UltraGCNLoss: no degrees yet; recplug_setup (RecModule.prepare) must run first")
        users = output.users[batch.users]  # [B, d]
        pos = (users * output.items[batch.pos_items]).sum(-1)
        negatives = torch.randint(self.num_items, (len(batch), self.num_negatives), device=users.device)
        neg = torch.einsum("bd,bkd->bk", users, output.items[negatives])
        beta_u = self.beta_users[batch.users]
        pos_weight = self.w1 + self.w2 * beta_u * self.beta_items[batch.pos_items]
        neg_weight = self.w3 + self.w4 * beta_u[:, None] * self.beta_items[negatives]
        pos_loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), weight=pos_weight, reduction="none")
        neg_loss = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), weight=neg_weight, reduction="none")
        terms = {self.name: (pos_loss + self.negative_weight * neg_loss.mean(-1)).sum()}
        if self.item_weight > 0:
            neighbour_scores = torch.einsum("bd,bkd->bk", users, output.items[self.neighbours[batch.pos_items]])
            item_loss = -(self.omega[batch.pos_items] * F.logsigmoid(neighbour_scores)).sum()
            terms[f"{self.name}_item"] = self.item_weight * item_loss
        if self.norm_weight > 0:
            norm = output.ego_users.pow(2).sum() + output.ego_items.pow(2).sum()
            terms[f"{self.name}_norm"] = self.norm_weight * norm / 2
        return {name: self.weight * value for name, value in terms.items()}
