"""Behaviour-vs-semantic contrastive loss between two named views (CRANE arXiv 2601.11151, §3.8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recplug.core.model.components import AuxLoss
from recplug.core.errors import InvalidArgument, check_flag, check_name, check_number
from recplug.core.model.types import BPRBatch, ModelOutput


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """``-(1/B) Σ_k log softmax_k'(ā_k · b̄_k' / τ)[k]``: row ``k`` of ``a`` against all rows of ``b``."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


class InfoNCELoss(AuxLoss):
    """InfoNCE between two views of the same users and items, with in-batch negatives.

    MGCN (Yu et al., MM 2023) and CRANE contrast the behavioural (user-item graph) and semantic (item-item
    graph) views of a node: ``L = InfoNCE(a_u, b_u; B_u) + InfoNCE(a_i, b_i; B_i)``, where ``B_u`` are the
    batch's distinct users and ``B_i`` its distinct positive items (de-duplicated, unlike MGCN, so a node is
    never its own negative).

    Args:
        view_a: name of the first view (e.g. ``"behavior"``).
        view_b: name of the second view (e.g. ``"semantic"``).
        temperature: ``τ``.
        weight: ``λ_cl``, multiplies each term.
        users: contrast the users.
        items: contrast the items.
        name: prefix of the logged terms ``<name>_users`` and ``<name>_items``.
    """

    def __init__(
        self,
        view_a: str = "behavior",
        view_b: str = "semantic",
        temperature: float = 0.2,
        weight: float = 0.01,
        users: bool = True,
        items: bool = True,
        name: str = "infonce",
    ) -> None:
        super().__init__(weight)
        check_number(self, "temperature", temperature, 0, low_open=True)
        check_flag(self, "users", users)
        check_flag(self, "items", items)
        if not (users or items):
            raise InvalidArgument(self, "users", users, "true when items is false (else the loss has no term)")
        check_name(self, "name", name)
        self.view_a, self.view_b, self.temperature = view_a, view_b, temperature
        self.users, self.items, self.name = users, items, name

    def recplug_check(self, views: list[str]) -> None:
        self.require_view("view_a", views)
        self.require_view("view_b", views)

    def sampling_refusal(self) -> None:
        return None  # reads the batch's rows only

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        a, b = output.views[self.view_a], output.views[self.view_b]
        terms = {}
        if self.users:
            ids = torch.unique(batch.users)
            terms[f"{self.name}_users"] = self.weight * info_nce(a.users[ids], b.users[ids], self.temperature)
        if self.items:
            ids = torch.unique(batch.pos_items)
            terms[f"{self.name}_items"] = self.weight * info_nce(a.items[ids], b.items[ids], self.temperature)
        return terms
