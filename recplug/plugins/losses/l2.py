"""L2 regularisation of the batch's embeddings (LightGCN, He et al., SIGIR 2020, Eq. 15)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from recplug.core.model.components import AuxLoss
from recplug.core.errors import InvalidArgument, check_name
from recplug.core.model.types import BPRBatch, ModelOutput


class L2Regularization(AuxLoss):
    """``λ (‖e_u‖² + ‖e_i⁺‖² + ‖e_j⁻‖²) / (2B)`` summed over the batch's ``B`` triples.

    On the ego (ID) embeddings, as LightGCN regularises ``E⁽⁰⁾``, or on the final embeddings (CRANE's
    ``λ_reg``, arXiv 2601.11151 §3.9). Logged as ``<name>``.

    Args:
        weight: ``λ``.
        embeddings: ``"ego"`` or ``"final"`` (not named ``on``: YAML reads a bare ``on`` key as ``true``).
        name: the logged term's name.
    """

    def __init__(
        self, weight: float = 1e-4, embeddings: Literal["ego", "final"] = "ego", name: str = "l2"
    ) -> None:
        super().__init__(weight)
        if embeddings not in ("ego", "final"):
            raise InvalidArgument(self, "embeddings", embeddings, "'ego' or 'final'")
        check_name(self, "name", name)
        self.embeddings, self.name = embeddings, name

    def sampling_refusal(self) -> None:
        return None  # reads the batch's rows only

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        users, items = (output.ego_users, output.ego_items) if self.embeddings == "ego" else (output.users, output.items)
        total = (
            users[batch.users].pow(2).sum() + items[batch.pos_items].pow(2).sum() + items[batch.neg_items].pow(2).sum()
        )
        return {self.name: self.weight * total / (2 * len(batch))}
