"""BPR of one view's users against the fused item content (FREEDOM's modality losses, Zhou & Shen, MM 2023)."""

from __future__ import annotations

from torch import Tensor

from recplug.core.model.components import AuxLoss
from recplug.core.model.losses import bpr_loss
from recplug.core.errors import ConfigError, check_name
from recplug.core.model.types import BPRBatch, ModelOutput


class ContentBPRLoss(AuxLoss):
    """``λ · mean softplus(u·f_j - u·f_i)``: BPR with the users of ``view`` and the fused content ``f``.

    FREEDOM adds ``λ (L_BPR(u, f^v) + L_BPR(u, f^t))`` on the projected image and text features so the
    projections are trained; here one term on the fused content (``model.fusion``). Logged as ``<name>``.

    Args:
        view: the view whose users score the content (e.g. ``"behavior"``).
        weight: ``λ``.
        name: the logged term's name.
    """

    def __init__(self, view: str = "behavior", weight: float = 1e-4, name: str = "content_bpr") -> None:
        super().__init__(weight)
        check_name(self, "name", name)
        self.view, self.name = view, name

    def recplug_check(self, views: list[str], has_content: bool) -> None:
        if not has_content:
            raise ConfigError("ContentBPRLoss needs item content: set model.fusion")
        self.require_view("view", views)

    def sampling_refusal(self) -> None:
        return None  # reads the batch's rows only

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        users = output.views[self.view].users[batch.users]
        content = output.content
        return {self.name: self.weight * bpr_loss(users, content[batch.pos_items], content[batch.neg_items])}
