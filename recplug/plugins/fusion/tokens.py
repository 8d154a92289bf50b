"""Multi-head attention over each item's modality tokens: the released CRANE code's attention as it was meant
(arXiv 2601.11151; reconstruction notes §3.3, Variant C)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recplug.core.model.components import FusionModule
from recplug.core.errors import MAX_EMBEDDING_DIM, InvalidArgument, check_number, check_probability


class TokenAttentionFusion(FusionModule):
    """Each item's modalities and their joint token attend to one another; the joint token's output is ``f``.

    The released CRANE code (MKC-Lab/CRANE ``src/models/crane.py``) stacks the projected modalities into
    ``[N, 2, d]`` and applies ``nn.MultiheadAttention`` without ``batch_first``, so each modality attends over all
    ``N`` items (``O(N²)``) and the modalities never meet. With the items as the batch, as a third-party patch
    (ayousefinejad/ObjectGraphRec) calls intended, the tokens of item ``i`` are
    ``Z_i = [x_i^1, ..., x_i^M, e_i]``, ``x_i^m = W_m v_i^m + b_m`` and the joint token
    ``e_i = [x_i^1 ‖ ... ‖ x_i^M] W_tr + b_tr`` (RCA's step (a)); ``O_i = MHA(Z_i, Z_i, Z_i)`` (the code's 4 heads),
    ``f_i = O_i[e]`` (queries from the joint token) and the refined modality features are ``O_i[m]``. Softmax
    attention among ``M + 1`` tokens per item instead of RCA's tanh cross-correlation over the catalogue:
    ``O(N (M+1)² d)`` time, linear memory, items independent of one another.

    Args:
        trainable_features: train the raw feature tables too (the CRANE code does).
        modalities: modalities to use (default: all, at least 2).
        num_heads: attention heads; must divide the embedding width ``d``.
        dropout: dropout on the attention weights during training.
    """

    min_modalities = 2

    def __init__(
        self, trainable_features: bool = False, modalities: list[str] | None = None, num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(trainable_features, modalities)
        check_number(self, "num_heads", num_heads, 1, MAX_EMBEDDING_DIM, integer=True)  # divides the width
        check_probability(self, "dropout", dropout)
        self.num_heads, self.dropout = num_heads, dropout

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        if embedding_dim % self.num_heads:
            rule = f"a divisor of model.embedding_dim ({embedding_dim})"
            raise InvalidArgument(self, "num_heads", self.num_heads, rule)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embedding_dim) for m, dim in feature_dims.items()})
        self.joint = nn.Linear(len(feature_dims) * embedding_dim, embedding_dim)
        self.attention = nn.MultiheadAttention(embedding_dim, self.num_heads, dropout=self.dropout, batch_first=True)

    def reset_parameters(self) -> None:
        """Re-draw the projections (``nn.Linear``'s initialisation) and the attention (``nn.MultiheadAttention``'s)."""
        for linear in [*self.proj.values(), self.joint, self.attention.out_proj]:
            linear.reset_parameters()
        self.attention._reset_parameters()  # in_proj; both biases zero, as at construction

    def _tokens(self) -> Tensor:
        """``Z``: ``[N, M + 1, d]``, the modality tokens then the joint token."""
        xs = [self.proj[m](x) for m, x in self.features().items()]
        return torch.stack([*xs, self.joint(torch.cat(xs, dim=1))], dim=1)

    def recplug_refine(self) -> dict[str, Tensor]:
        """The modality tokens after attention ``{m: O[:, m]}`` ``[N, d]``."""
        tokens = self._tokens()
        out = self.attention(tokens, tokens, tokens, need_weights=False)[0]
        return {m: out[:, j] for j, m in enumerate(self.feature_dims)}

    def recplug_fuse(self) -> Tensor:
        tokens = self._tokens()  # only the joint token's query: the row of O that f is, at a third of the memory
        return self.attention(tokens[:, -1:], tokens, tokens, need_weights=False)[0][:, 0]
