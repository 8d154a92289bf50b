"""Built-in combiners: how the encoders' views become the final user and item embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from recplug.core.errors import ConfigError
from recplug.core.model.components import Combiner
from recplug.core.model.types import GraphView


class SumCombiner(Combiner):
    """Sum of the views: ``z = sum_v e_v`` (LightGCN, FREEDOM, CRANE: ``z_i = b_i + h_i``, ``z_u = b_u + p_u``).

    All views must have the same width.
    """

    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        widths = {v.name: v.users.shape[1] for v in views}
        if len(set(widths.values())) > 1:
            raise ConfigError(f"SumCombiner needs views of equal width, got {widths}; use ConcatCombiner")
        users = torch.stack([v.users for v in views]).sum(0)
        items = torch.stack([v.items for v in views]).sum(0)
        return users, items

    def sampling_refusal(self) -> None:
        return None  # row by row


class ConcatCombiner(Combiner):
    """Concatenation of the views, so the score is the sum of per-view dot products.

    VBPR (He & McAuley, AAAI 2016): ``score = γ_u·γ_i + θ_u·(E f_i)`` is the dot product of ``[γ_u; θ_u]``
    and ``[γ_i; E f_i]``.
    """

    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        return torch.cat([v.users for v in views], dim=1), torch.cat([v.items for v in views], dim=1)

    def sampling_refusal(self) -> None:
        return None  # row by row
