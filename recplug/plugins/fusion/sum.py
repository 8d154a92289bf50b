"""Sum (averaging) fusion: the other "shallow fusion" baseline of CRANE (arXiv 2601.11151, §1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recplug.core.model.components import FusionModule
from recplug.core.errors import ConfigError, check_weights


class SumFusion(FusionModule):
    """``f_i = (1/M) Σ_m (W_m x_i^m + b_m)``: project every modality to ``d`` and average.

    Args:
        trainable_features: train the raw feature tables too.
        modalities: modalities to use (default: all).
        weights: fixed per-modality weights (default: uniform); they must sum to 1.
    """

    def __init__(
        self,
        trainable_features: bool = False,
        modalities: list[str] | None = None,
        weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(trainable_features, modalities)
        if weights is not None:
            check_weights(self, "weights", weights)
        self.weights = dict(weights) if weights is not None else None

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embedding_dim) for m, dim in feature_dims.items()})
        if self.weights is None:
            self.weights = {m: 1.0 / len(feature_dims) for m in feature_dims}
        if set(self.weights) != set(feature_dims) or abs(sum(self.weights.values()) - 1.0) > 1e-6:
            raise ConfigError(
                f"model.fusion.init_args.weights must give every modality {sorted(feature_dims)} "
                f"a weight, summing to 1; got {self.weights}"
            )

    def recplug_refine(self) -> dict[str, Tensor]:
        """The projected modalities ``{m: W_m x^m + b_m}`` ``[N, d]`` before the weighted average."""
        return {m: self.proj[m](x) for m, x in self.features().items()}

    def recplug_fuse(self) -> Tensor:
        return torch.stack([self.weights[m] * x for m, x in self.recplug_refine().items()]).sum(0)
