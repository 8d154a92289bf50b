"""Alignment and uniformity of user and item embeddings (DirectAU: Wang, Yu, Ma, Liu, Ma & Zhang, KDD 2022).

DirectAU observes that BPR-trained embeddings improve by becoming *aligned* (a user is close to the items she
interacts with) and *uniform* (embeddings spread over the unit hypersphere), after Wang & Isola (ICML 2020),
and optimises both directly on ℓ2-normalised embeddings ``ũ``, ``ĩ``::

    l_align   = E_(u,i)~positives ‖ũ - ĩ‖²
    l_uniform = (log E_(u,u') exp(-2‖ũ - ũ'‖²) + log E_(i,i') exp(-2‖ĩ - ĩ'‖²)) / 2
    L = l_align + γ l_uniform

Here it is an auxiliary loss added to recplug's BPR loss, on the final embeddings or on one named view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recplug import AuxLoss, BPRBatch, ModelOutput, check_number


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """``mean_k ‖x̃_k - ỹ_k‖²`` over paired rows, after ℓ2 normalisation (in ``[0, 4]``)."""
    return (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(dim=-1).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log mean_{k<l} exp(-t ‖x̃_k - x̃_l‖²)`` over row pairs (in ``[-4t, 0]``; lower = more uniform); 0 for
    fewer than two rows, which have no pair (an epoch's last batch may hold one pair)."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    return torch.pdist(F.normalize(x, dim=-1), p=2).pow(2).mul(-t).exp().mean().log()


class AlignUniformLoss(AuxLoss):
    """DirectAU's alignment + γ·uniformity on the batch's users and positive items, logged as two terms.

    Uniformity is computed over the batch's *distinct* users and items (a repeated row would be a zero
    distance that rewards nothing).

    Args:
        weight: multiplies both terms.
        gamma: ``γ``, the weight of uniformity relative to alignment (DirectAU tunes it in ``[0.2, 10]``).
        view: the named view to regularise (default: the final, combined embeddings that are scored).
        name: prefix of the logged terms ``<name>_align`` and ``<name>_uniform``.
    """

    def __init__(self, weight: float = 0.1, gamma: float = 1.0, view: str | None = None, name: str = "au") -> None:
        super().__init__(weight)
        check_number(self, "gamma", gamma, 0)
        self.gamma, self.view, self.name = gamma, view, name

    def recplug_check(self, views: list[str]) -> None:
        if self.view is not None:
            self.require_view("view", views)

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        if self.view is None:
            users, items = output.users, output.items
        else:
            users, items = output.views[self.view].users, output.views[self.view].items
        align = alignment(users[batch.users], items[batch.pos_items])
        uniform = (uniformity(users[torch.unique(batch.users)]) + uniformity(items[torch.unique(batch.pos_items)])) / 2
        return {f"{self.name}_align": self.weight * align, f"{self.name}_uniform": self.weight * self.gamma * uniform}
