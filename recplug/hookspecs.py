"""Every hook the recplug skeleton calls.

Plugins implement these as methods of a component (an ``nn.Module`` chosen in the YAML) or as module-level
functions of an entry-point plugin. Hooks are always called with keyword arguments, once per stage or step,
never per user or item. An implementation may accept a subset of the arguments (pluggy's rule), so specs can
gain arguments without breaking plugins. Any method whose name starts with ``recplug_`` is a hook
implementation; ``@hookimpl`` is only needed for options such as ``tryfirst`` or ``wrapper``.

Cardinality is stated for each hook and checked when the model is built: a violation raises
:class:`recplug.core.errors.CardinalityError` naming every provider and the config key to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from recplug.core.data.dataset import InteractionData
    from recplug.core.model.types import BPRBatch, GraphView, ModelOutput

PROJECT = "recplug"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marker for hook implementations: ``from recplug import hookimpl``."""


class RecplugSpecs:
    """Collection of all recplug hook specifications."""

    # ------------------------------------------------------------------ construction
    @hookspec
    def recplug_build(self, num_users: int, num_items: int, feature_dims: dict[str, int], embedding_dim: int) -> None:
        """Create the parameters whose shapes depend on the data.

        **Called:** once, in ``RecModule.__init__``, after the components are registered, so the module's
        ``state_dict`` is complete before a checkpoint is loaded.

        **Cardinality:** zero or more (every component that needs data-dependent shapes).

        Args:
            num_users: number of users ``M``.
            num_items: number of items ``N``.
            feature_dims: ``{modality: d_m}`` of the item features, e.g. ``{"image": 4096, "text": 384}``.
            embedding_dim: ``d``, the width of the ID embeddings; fused content must have this width.

        Example::

            def recplug_build(self, feature_dims, embedding_dim):
                self.proj = nn.ModuleDict({m: nn.Linear(dim, embedding_dim) for m, dim in feature_dims.items()})
        """

    @hookspec
    def recplug_setup(self, data: InteractionData, cache_dir: Path) -> None:
        """See the training data once, to build graphs and load features.

        **Called:** once per trainer stage (fit, validate, test, predict), in ``LightningModule.setup``, before
        any checkpoint is restored. Buffers built here should be non-persistent (rebuilt, not checkpointed).

        **Cardinality:** zero or more.

        Args:
            data: the dataset; ``data.split("train")`` gives ``(users, items)`` LongTensors ``[E]`` and
                ``data.features`` gives ``{modality: FloatTensor[N, d_m]}``. Only the training split may be
                used to build anything a model sees.
            cache_dir: a directory for expensive artefacts (e.g. kNN graphs) keyed by content hash.

        Example::

            def recplug_setup(self, data):
                users, items = data.split("train")
                self.adjacency = normalized_adjacency(users, items, data.num_users, data.num_items)
        """

    @hookspec
    def recplug_resample(self, epoch: int, generator: torch.Generator) -> None:
        """Resample per-epoch structure, such as FREEDOM's degree-sensitive edge pruning.

        **Called:** at the start of every training epoch, before the first training step.

        **Cardinality:** zero or more.

        Args:
            epoch: the 0-based epoch about to start.
            generator: a CPU generator seeded from the run seed and the epoch (reproducible, resumable).

        Example::

            def recplug_resample(self, epoch, generator):
                self.train_adj = self.prune_edges(generator)
        """

    # ------------------------------------------------------------------ forward stages
    @hookspec(firstresult=True)
    def recplug_fuse(self) -> Tensor | None:
        """Fuse the item modality features into one content representation.

        **Called:** once per forward pass (every training step, once per evaluation), first of all stages.

        **Cardinality:** at most one (configured as ``model.fusion``). The fusion component owns the raw
        features (received in :meth:`recplug_setup`), frozen or trainable.

        Returns:
            ``FloatTensor[N, embedding_dim]``: fused content per item.

        Example::

            def recplug_fuse(self):
                return sum(self.proj[m](x) for m, x in self.features().items())
        """

    @hookspec
    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None) -> GraphView:
        """Encode one named view of users and items, e.g. a user-item or an item-item graph.

        **Called:** once per forward pass, after fusion.

        **Cardinality:** zero or more (``model.encoders``); at least one view must exist in total, and view
        names must be unique.

        Args:
            ego_users: ``[M, d]`` user ID embeddings.
            ego_items: ``[N, d]`` item ID embeddings.
            content: ``[N, d]`` fused item content, or ``None`` when no fusion is configured.

        Returns:
            a :class:`~recplug.core.model.types.GraphView` ``(name, users [M, d_v], items [N, d_v])``.

        Example::

            def recplug_encode(self, ego_users, ego_items):
                return GraphView("id", ego_users, ego_items)
        """

    @hookspec(firstresult=True)
    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        """Combine the encoders' views into the final user and item embeddings scored by dot product.

        **Called:** once per forward pass, after all encoders.

        **Cardinality:** exactly one (``model.combiner``; the default is ``SumCombiner``).

        Args:
            views: all views, sorted by name.

        Returns:
            ``(users [M, d_out], items [N, d_out])``.

        Example::

            def recplug_combine(self, views):
                return sum(v.users for v in views), sum(v.items for v in views)
        """

    # ------------------------------------------------------------------ losses
    @hookspec
    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        """Return auxiliary loss terms, already weighted, added to the BPR loss (``model.bpr_weight`` times;
        with ``bpr_weight: 0`` these terms are the whole objective, as for UltraGCN).

        **Called:** once per training step, after the BPR loss is computed.

        **Cardinality:** zero or more (``model.aux_losses``). Term names must be unique across plugins; each
        is logged as ``train/<name>``.

        Args:
            batch: the ``(users, pos_items, neg_items)`` triples of this step, ``LongTensor[B]`` each.
            output: the forward pass (ego embeddings, content, views by name, final embeddings).

        Returns:
            ``{term name: scalar Tensor}``.

        Example::

            def recplug_aux_loss(self, batch, output):
                u = output.users[batch.users]
                return {"l2": self.weight * u.pow(2).sum(1).mean()}
        """
