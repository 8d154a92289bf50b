"""Low-rank Multimodal Fusion (Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, "Efficient Low-rank Multimodal
Fusion with Modality-Specific Factors", ACL 2018).

Tensor fusion takes the outer product ``Z = ⊗_m [x_m ; 1]`` of the modality vectors, each extended by a 1 so that
``Z`` keeps every unimodal and cross-modal interaction term, and maps it linearly, ``h = W · Z``, with a weight tensor
of ``d · Π_m (d_m + 1)`` entries. LMF constrains ``W`` to rank ``r``, ``W = Σ_{i=1..r} ⊗_m w_m^(i)``, so ``Z`` is never
formed::

    h = Σ_{i=1..r} Π_m W_m^(i) [x_m ; 1]          (Π: elementwise over the modalities)

with modality-specific factors ``W_m^(i)`` of shape ``d × (d_m + 1)``: ``O(r d Σ_m d_m)`` work per item instead of
``O(d Π_m d_m)``, each item on its own (nothing is ``[N, N]``).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from recplug import FusionModule, check_count, check_probability


class LMFFusion(FusionModule):
    """Low-rank Multimodal Fusion of any number ``M >= 2`` of item modalities.

    The factors of modality ``m`` are one ``[r, d_m + 1, d]`` tensor (its last input row multiplies the appended 1),
    drawn with ``xavier_normal_`` as in the authors' released code. That code also weights the ``r`` terms and adds
    a bias; neither is added here: a term's weight can be absorbed into any one of its factors, and a constant is
    itself a rank-1 term (every factor zero but its last row), so both stay within the paper's ``h`` above.

    Args:
        rank: ``r``, the number of rank-1 terms.
        trainable_features: train the raw feature tables too.
        modalities: modalities to use (default: all, at least 2).
        dropout: dropout on the raw features during training.
    """

    min_modalities = 2

    def __init__(
        self, rank: int = 4, trainable_features: bool = False, modalities: list[str] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(trainable_features, modalities)
        check_count(self, "rank", rank)
        check_probability(self, "dropout", dropout)
        self.rank = rank
        self.dropout = nn.Dropout(dropout)

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(self.rank, dim + 1, embedding_dim)) for m, dim in feature_dims.items()}
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every factor ``W_m^(i)`` (``xavier_normal_`` on each ``[r, d_m + 1, d]`` tensor)."""
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)

    def factor_outputs(self) -> dict[str, Tensor]:
        """``{m: [N, r, d]}``: ``W_m^(i) [x_m ; 1]`` for every item and rank-1 term ``i``."""
        outputs = {}
        for m, x in self.features().items():
            factor = self.factors[m]  # [r, d_m + 1, d] -> [d_m + 1, r * d]: one matmul for all r terms
            flat = factor.transpose(0, 1).reshape(factor.shape[1], -1)
            outputs[m] = torch.addmm(flat[-1], self.dropout(x), flat[:-1]).view(x.shape[0], self.rank, -1)
        return outputs

    def recplug_refine(self) -> dict[str, Tensor]:
        """The modality-specific factors' outputs ``{m: [W_m^(1)[x_m;1] ‖ … ‖ W_m^(r)[x_m;1]]}`` ``[N, r·d]``: what
        the fusion multiplies across modalities, per rank-1 term."""
        return {m: out.flatten(1) for m, out in self.factor_outputs().items()}

    def recplug_fuse(self) -> Tensor:
        return functools.reduce(torch.mul, self.factor_outputs().values()).sum(dim=1)
