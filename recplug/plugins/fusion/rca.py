"""Recursive joint cross-modal attention (RCA), CRANE's fusion (arXiv 2601.11151), linear in the items."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recplug.core.model.components import FusionModule
from recplug.core.errors import MAX_EMBEDDING_DIM, check_flag, check_layers, check_number, check_probability


class RCALayer(nn.Module):
    """One recursion ``r`` of RCA over ``M`` modality matrices ``X_m ∈ R^{N x d}`` (rows are items).

    Set-level form (Variant A of the CRANE reconstruction, after Praveen et al.'s RJCA, ICASSP 2023)::

        E   = [X_1 ‖ ... ‖ X_M] W_tr + b_tr                          joint latent space   [N, d_j]
        C_m = tanh((X_m W_km)ᵀ E / (N sqrt(d_j)))                    cross-correlation     [d, d_j]
        A_m = ReLU(tanh((X_m W_vm) C_m))                             joint attention       [N, d_j]
        X_m ← X_m + Dropout(ReLU(A_m W_om + b_om))                   residual refinement   [N, d]

    Dividing by ``N`` makes ``C_m`` a mean over items, so ``tanh`` stays out of saturation however many items
    there are; every step is ``O(N d d_j)`` time and ``O(N d_j)`` memory.
    """

    def __init__(self, num_modalities: int, dim: int, joint_dim: int, dropout: float) -> None:
        super().__init__()
        self.joint = nn.Linear(num_modalities * dim, joint_dim)
        self.key = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_modalities))
        self.value = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_modalities))
        self.out = nn.ModuleList(nn.Linear(joint_dim, dim) for _ in range(num_modalities))
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(joint_dim)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        joint = self.joint(torch.cat(xs, dim=1))
        scale = self.scale / xs[0].shape[0]
        refined = []
        for x, key, value, out in zip(xs, self.key, self.value, self.out):
            correlation = torch.tanh(key(x).T @ joint * scale)
            attention = torch.relu(torch.tanh(value(x) @ correlation))
            refined.append(x + self.dropout(torch.relu(out(attention))))
        return refined


class RCAFusion(FusionModule):
    """CRANE's Recursive Cross-modal Attention: refine every modality from the joint space ``R`` times.

    CRANE (Dai et al., arXiv 2601.11151, §3.2-3.3): project each modality to ``d``
    (``x_m = W_m v_m + b_m``), apply ``R`` :class:`RCALayer` recursions (unshared weights unless
    ``shared_weights``), then ``f = [X_1⁽ᴿ⁾ ‖ ... ‖ X_M⁽ᴿ⁾] W_f + b_f``. Works for any ``M >= 2`` modalities and
    never forms an item x item matrix (unlike the released code's attention over items).

    Args:
        trainable_features: train the raw feature tables too (the CRANE code does).
        modalities: modalities to use (default: all, at least 2).
        num_recursions: ``R``.
        joint_dim: ``d_j``, width of the joint space (default: ``d``).
        dropout: dropout on each residual update.
        shared_weights: reuse one layer for all recursions (an ablation).
    """

    min_modalities = 2

    def __init__(
        self,
        trainable_features: bool = False,
        modalities: list[str] | None = None,
        num_recursions: int = 2,
        joint_dim: int | None = None,
        dropout: float = 0.0,
        shared_weights: bool = False,
    ) -> None:
        super().__init__(trainable_features, modalities)
        check_layers(self, "num_recursions", num_recursions)
        if joint_dim is not None:
            check_number(self, "joint_dim", joint_dim, 1, MAX_EMBEDDING_DIM, integer=True)
        check_probability(self, "dropout", dropout)
        check_flag(self, "shared_weights", shared_weights)
        self.num_recursions, self.joint_dim = num_recursions, joint_dim
        self.dropout, self.shared_weights = dropout, shared_weights

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        count, joint_dim = len(feature_dims), self.joint_dim or embedding_dim
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embedding_dim) for m, dim in feature_dims.items()})
        distinct = 1 if self.shared_weights else self.num_recursions
        self.layers = nn.ModuleList(
            RCALayer(count, embedding_dim, joint_dim, self.dropout) for _ in range(min(distinct, self.num_recursions))
        )
        self.final = nn.Linear(count * embedding_dim, embedding_dim)

    def recplug_refine(self) -> dict[str, Tensor]:
        """The refined modality features ``{m: X_m⁽ᴿ⁾}`` ``[N, d]`` the final projection concatenates."""
        xs = [self.proj[m](x) for m, x in self.features().items()]
        for r in range(self.num_recursions):
            xs = self.layers[0 if self.shared_weights else r](xs)
        return dict(zip(self.feature_dims, xs))

    def recplug_fuse(self) -> Tensor:
        return self.final(torch.cat(list(self.recplug_refine().values()), dim=1))
