"""Concatenation fusion: the "shallow fusion" baseline CRANE argues against (arXiv 2601.11151, §1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recplug.core.model.components import FusionModule
from recplug.core.errors import check_probability


class ConcatFusion(FusionModule):
    """``f_i = W [x_i^1 ; ... ; x_i^M] + b``: concatenate the raw modality features, project to ``d``.

    Args:
        trainable_features: train the raw feature tables too.
        modalities: modalities to use (default: all).
        dropout: dropout on the concatenated features during training.
    """

    def __init__(
        self, trainable_features: bool = False, modalities: list[str] | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(trainable_features, modalities)
        check_probability(self, "dropout", dropout)
        self.dropout = nn.Dropout(dropout)

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.proj = nn.Linear(sum(feature_dims.values()), embedding_dim)

    def recplug_fuse(self) -> Tensor:
        joint = torch.cat(list(self.features().values()), dim=1)
        return self.proj(self.dropout(joint))
