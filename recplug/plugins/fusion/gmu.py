"""Gated Multimodal Unit fusion (Arevalo, Solorio, Montes-y-Gómez & González, "Gated Multimodal Units for
Information Fusion", ICLR Workshop 2017), for any number of modalities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recplug.core.model.components import FusionModule
from recplug.core.errors import check_probability


class GatedFusion(FusionModule):
    """The GMU: per item and output dimension, learned gates choose how much each modality contributes.

    The paper's bimodal unit (§3, Eq. 1-4) is ``h_v = tanh(W_v x_v)``, ``h_t = tanh(W_t x_t)``,
    ``z = σ(W_z [x_v ; x_t])``, ``f = z ⊙ h_v + (1 - z) ⊙ h_t``. For ``M`` modalities the gate is a softmax over
    the modalities per output dimension, ``z = softmax_m(W_z [x_1 ; ... ; x_M])`` reshaped to ``[N, M, d]`` and
    ``f = Σ_m z_m ⊙ h_m``; with two modalities the softmax of two logits is the sigmoid of their difference, so
    this is exactly the paper's unit (its ``W_z`` split into the two rows' difference). No biases, as in the
    paper's equations.

    Args:
        trainable_features: train the raw feature tables too.
        modalities: modalities to use (default: all, at least 2).
        dropout: dropout on the raw features during training.
    """

    min_modalities = 2

    def __init__(
        self, trainable_features: bool = False, modalities: list[str] | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(trainable_features, modalities)
        check_probability(self, "dropout", dropout)
        self.dropout = nn.Dropout(dropout)

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.hidden = nn.ModuleDict({m: nn.Linear(dim, embedding_dim, bias=False) for m, dim in feature_dims.items()})
        self.gate = nn.Linear(sum(feature_dims.values()), len(feature_dims) * embedding_dim, bias=False)

    def reset_parameters(self) -> None:
        """Re-draw ``W_m`` and ``W_z`` (PyTorch's ``nn.Linear`` initialisation, as at build)."""
        for linear in [*self.hidden.values(), self.gate]:
            linear.reset_parameters()

    def gates(self) -> Tensor:
        """``z``: the ``[N, M, d]`` gates, summing to one over the modalities (in ``feature_dims`` order)."""
        return self._gates(self._inputs())

    def recplug_refine(self) -> dict[str, Tensor]:
        """The gated units' inputs ``{m: h_m = tanh(W_m x_m)}`` ``[N, d]``."""
        return self._hidden(self._inputs())

    def recplug_fuse(self) -> Tensor:
        inputs = self._inputs()  # one dropout mask, seen by the gates and the units alike
        hidden = torch.stack(list(self._hidden(inputs).values()), dim=1)
        return (self._gates(inputs) * hidden).sum(dim=1)

    def _inputs(self) -> dict[str, Tensor]:
        return {m: self.dropout(x) for m, x in self.features().items()}

    def _hidden(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: torch.tanh(self.hidden[m](x)) for m, x in inputs.items()}

    def _gates(self, inputs: dict[str, Tensor]) -> Tensor:
        logits = self.gate(torch.cat(list(inputs.values()), dim=1))
        return logits.view(logits.shape[0], len(inputs), -1).softmax(dim=1)
