"""Gated Multimodal Unit fusion (Arevalo, Solorio, Montes-y-Gómez & González, ICLR Workshop 2017).

The bimodal GMU of the paper (§3, eq. 1-4)::

    h_v = tanh(W_v x_v)      h_t = tanh(W_t x_t)      z = σ(W_z [x_v ; x_t])      h = z ⊙ h_v + (1 - z) ⊙ h_t

generalised to ``M`` modalities with a softmax over modalities per output dimension: ``z = softmax_m(W_z [x_1 ;
... ; x_M])`` reshaped to ``[N, M, d]``, ``h = Σ_m z_m ⊙ tanh(W_m x_m)``. For ``M = 2`` the softmax of two
logits is the sigmoid of their difference, so this is exactly the paper's unit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recplug import FusionModule


class GMUFusion(FusionModule):
    """Gated Multimodal Unit: per-item, per-dimension gates choose how much each modality contributes.

    Args:
        trainable_features: train the raw feature tables too.
        modalities: modalities to use (default: all the dataset has).
        dropout: dropout on the raw features during training.
    """

    def __init__(
        self, trainable_features: bool = False, modalities: list[str] | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(trainable_features, modalities)
        self.dropout = nn.Dropout(dropout)

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.hidden = nn.ModuleDict({m: nn.Linear(dim, embedding_dim, bias=False) for m, dim in feature_dims.items()})
        self.gate = nn.Linear(sum(feature_dims.values()), len(feature_dims) * embedding_dim, bias=False)

    def gates(self) -> Tensor:
        """``z``: ``[N, M, d]`` gate values, summing to one over the modalities (for inspection and tests)."""
        return self._gates(self._inputs())

    def _inputs(self) -> list[Tensor]:
        return [self.dropout(x) for x in self.features().values()]

    def _gates(self, inputs: list[Tensor]) -> Tensor:
        logits = self.gate(torch.cat(inputs, dim=1))
        return logits.view(logits.shape[0], len(inputs), -1).softmax(dim=1)

    def recplug_fuse(self) -> Tensor:
        inputs = self._inputs()
        hidden = torch.stack([torch.tanh(self.hidden[m](x)) for m, x in zip(self.feature_dims, inputs)], dim=1)
        return (self._gates(inputs) * hidden).sum(dim=1)
