"""Small typed records passed between the skeleton and its plugins."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
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

    In a sampled training step (``model.sampling``) every tensor holds the rows of the step's distinct users and
    items only (sorted by id), and the step's :class:`BPRBatch` indexes those rows.

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


@dataclass(frozen=True)
class SampledBatch:
    """The nodes of one training step in sampled mode (``model.sampling``): its distinct users and items.

    Attributes:
        users: sorted distinct global user ids ``LongTensor[U]`` of the step's triples.
        items: sorted distinct global item ids ``LongTensor[I]`` (positives and negatives).
        fanouts: neighbours kept per node at each hop (``-1``: every neighbour).
        engine: the neighbour sampler, ``"torch"`` or ``"pyg"``
            (:class:`~recplug.core.ops.sampling.NeighbourSampler`).
        budget: new nodes kept per hop, at most in expectation (``None``: every node the fan-outs reach;
            :func:`~recplug.core.ops.sampling.thin_new_nodes`).
        positives: the step's positive pairs ``(user rows, item rows)`` as indices into ``users`` and ``items``.
        generator: what the neighbours are drawn from (``None``: torch's default generator).
    """

    users: Tensor
    items: Tensor
    fanouts: tuple[int, ...]
    engine: str = "torch"
    budget: int | None = None
    positives: tuple[Tensor, Tensor] | None = None
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class NodePlan:
    """What an encoder's sampled neighbourhood reads (``GraphEncoder.sample``), before any row is gathered.

    Attributes:
        users: global user ids whose ID embeddings it reads, or ``None``.
        items: global item ids whose ID embeddings it reads, or ``None``.
        content: global item ids whose fused content it reads, or ``None``.
        graph: the encoder's own sampled structure, handed back to ``encode_sampled``.
    """

    users: Tensor | None = None
    items: Tensor | None = None
    content: Tensor | None = None
    graph: object = None
