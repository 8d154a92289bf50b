"""Small typed records passed between the skeleton and its plugins."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class GraphView:
    """One named (users, items) embedding view produced by a graph encoder.

    Attributes:
        name: unique view name, e.g. ``"behavior"`` or ``"semantic"``; aux losses refer to views by it.
        users: ``[num_users, d]`` user embeddings of this view.
        items: ``[num_items, d]`` item embeddings of this view.
    """

    name: str
    users: Tensor
    items: Tensor


@dataclass(frozen=True)
class BPRBatch:
    """A training batch of (user, positive item, negative item) triples, each ``LongTensor[B]``."""

    users: Tensor
    pos_items: Tensor
    neg_items: Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class ModelOutput:
    """Everything one forward pass of the skeleton computed, stage by stage.

    Attributes:
        ego_users: ``[num_users, embedding_dim]`` ID embeddings before any propagation.
        ego_items: ``[num_items, embedding_dim]`` ID embeddings before any propagation.
        content: ``[num_items, embedding_dim]`` fused item content, or ``None`` when no fusion plugin is configured.
        views: encoder outputs by view name.
        users: ``[num_users, d_out]`` final user embeddings (after the combine stage).
        items: ``[num_items, d_out]`` final item embeddings.
    """

    ego_users: Tensor
    ego_items: Tensor
    content: Tensor | None
    views: dict[str, GraphView] = field(default_factory=dict)
    users: Tensor | None = None
    items: Tensor | None = None
