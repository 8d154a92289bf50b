"""Every hook the recplug skeleton calls.

Plugins implement these as methods of a component (an ``nn.Module`` chosen in the YAML) or as module-level
functions of an entry-point plugin. Hooks are always called with keyword arguments, once per stage or step,
never per user or item. An implementation may accept a subset of the arguments (pluggy's rule), so specs can
gain arguments without breaking plugins. Any method whose name starts with ``recplug_`` is a hook
implementation; ``@hookimpl`` is only needed for options such as ``tryfirst`` or ``wrapper``.

Each spec declares its cardinality beside it (``@cardinality(low, high, key)``: how many plugins may implement
it, and the config key that selects them). ``RecModule`` checks every declaration when the model is built: a
violation raises :class:`recplug.core.errors.CardinalityError` naming every provider and the config key to change.
``docs/hooks.md`` is rendered from these specs and declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

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

Spec = TypeVar("Spec", bound=Callable[..., object])


@dataclass(frozen=True)
class Cardinality:
    """How many plugins may implement a hook: ``low`` to ``high`` (``None``: no limit), chosen at config ``key``;
    ``missing`` is the error when fewer are configured (default: the generic one, naming ``key``)."""

    low: int = 0
    high: int | None = None
    key: str | None = None
    missing: str = ""

    def admits(self, count: int) -> bool:
        return self.low <= count and (self.high is None or count <= self.high)

    def __str__(self) -> str:
        """``exactly one``, ``at most one``, ``zero or more``, ... (how docs and errors say it)."""
        words = {0: "zero", 1: "one"}
        low, high = words.get(self.low, str(self.low)), words.get(self.high, str(self.high))
        if self.high is None:
            return f"{low} or more"
        if self.low == self.high:
            return f"exactly {low}"
        return f"at most {high}" if self.low == 0 else f"{low} to {high}"


def cardinality(
    low: int = 0, high: int | None = None, key: str | None = None, missing: str = ""
) -> Callable[[Spec], Spec]:
    """Declare a spec's :class:`Cardinality` beside it; ``RecModule`` enforces it and docs/hooks.md shows it."""

    def declare(spec: Spec) -> Spec:
        spec.recplug_cardinality = Cardinality(low, high, key, missing)  # type: ignore[attr-defined]
        return spec

    return declare


def cardinalities() -> dict[str, Cardinality]:
    """``{hook name: its declared cardinality}`` for every spec, in declaration order."""
    return {
        name: spec.recplug_cardinality for name, spec in vars(RecplugSpecs).items() if name.startswith("recplug_")
    }


class RecplugSpecs:
    """Collection of all recplug hook specifications."""

    # ------------------------------------------------------------------ construction
    @hookspec
    @cardinality(0)
    def recplug_check(self, views: list[str], has_content: bool, refines: bool) -> None:
        """Check what this component requires of the others (a view to read, item content), so a configuration
        that cannot work fails when the model is built, not at the first training step.

        **Called:** once, in ``RecModule.__init__``, after the cardinality checks and before :meth:`recplug_build`.
        Raise :class:`~recplug.core.errors.InvalidArgument` (``owner=self``) for an argument at fault, which the
        module reports at its config key (``model.aux_losses[0].init_args.view_b must be ...``), or
        :class:`~recplug.core.errors.ConfigError` for the component as a whole, prefixed with its key.

        Args:
            views: the names of the views the encoders produce, sorted.
            has_content: whether a fusion is configured, i.e. encoders and losses receive item content.
            refines: whether the fusion also gives its per-modality refined features (:meth:`recplug_refine`).

        Example::

            def recplug_check(self, views, has_content):
                if not has_content:
                    raise ConfigError("ContentBPRLoss needs item content: set model.fusion")
                self.require_view("view", views)
        """

    @hookspec
    @cardinality(0)
    def recplug_build(self, num_users: int, num_items: int, feature_dims: dict[str, int], embedding_dim: int) -> None:
        """Create the parameters whose shapes depend on the data.

        **Called:** once, in ``RecModule.__init__``, after the components are registered and checked
        (:meth:`recplug_check`), so the module's ``state_dict`` is complete before a checkpoint is loaded. Every
        component that needs data-dependent shapes implements it.

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
    @cardinality(0)
    def recplug_setup(self, data: InteractionData, cache_dir: Path) -> None:
        """See the training data once, to build graphs and load features.

        **Called:** once per trainer stage (fit, validate, test, predict), in ``LightningModule.setup``, before
        any checkpoint is restored. Buffers built here should be non-persistent (rebuilt, not checkpointed).

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
    @cardinality(0)
    def recplug_resample(self, epoch: int, generator: torch.Generator) -> None:
        """Resample per-epoch structure, such as FREEDOM's degree-sensitive edge pruning.

        **Called:** at the start of every training epoch, before the first training step.

        Args:
            epoch: the 0-based epoch about to start.
            generator: a CPU generator seeded from the run seed and the epoch (reproducible, resumable).

        Example::

            def recplug_resample(self, epoch, generator):
                self.train_adj = self.prune_edges(generator)
        """

    # ------------------------------------------------------------------ forward stages
    @hookspec(firstresult=True)
    @cardinality(0, 1, key="model.fusion")
    def recplug_fuse(self) -> Tensor | None:
        """Fuse the item modality features into one content representation. The fusion component owns the raw
        features (received in :meth:`recplug_setup`), frozen or trainable.

        **Called:** once per forward pass (every training step, once per evaluation), first of all stages.

        Returns:
            ``FloatTensor[N, embedding_dim]``: fused content per item.

        Example::

            def recplug_fuse(self):
                return sum(self.proj[m](x) for m, x in self.features().items())
        """

    @hookspec(firstresult=True)
    @cardinality(0, 1, key="model.fusion")
    def recplug_refine(self) -> dict[str, Tensor]:
        """Return the per-modality item representations the fusion combines into its content (RCA's refined
        ``X_m⁽ᴿ⁾``, a sum fusion's projections, a GMU's ``tanh(W_m x_m)``), for a component that builds something
        from them, such as an item-item graph rebuilt from the refined features (CRANE, arXiv 2601.11151: "builds
        a semantic item graph from the refined representation").

        **Called:** not on every forward: only when an encoder calls the ``refined`` argument of
        :meth:`recplug_encode` (``ItemItemGraph`` with ``learned_from: refined``, once per graph rebuild).

        Returns:
            ``{modality: FloatTensor[N, d_m]}``, one entry per modality the fusion uses.

        Example::

            def recplug_refine(self):
                return {m: self.proj[m](x) for m, x in self.features().items()}
        """

    @hookspec
    @cardinality(
        1, key="model.encoders", missing="no graph encoder is configured: set model.encoders (e.g. [IdEmbedding])"
    )
    def recplug_encode(
        self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None,
        refined: Callable[[], dict[str, Tensor]] | None, targets: BPRBatch | None,
    ) -> GraphView:
        """Encode one named view of users and items, e.g. a user-item or an item-item graph.

        The view's name is declared before any forward pass, as the encoder's ``view_name`` (``GraphEncoder``'s
        ``name`` argument), and must be unique: other components check the names they refer to when the model
        is built (:meth:`recplug_check`), and the view returned must carry that name.

        **Called:** once per forward pass, after fusion.

        Args:
            ego_users: ``[M, d]`` user ID embeddings.
            ego_items: ``[N, d]`` item ID embeddings.
            content: ``[N, d]`` fused item content, or ``None`` when no fusion is configured.
            refined: a function returning the fusion's per-modality refined features (:meth:`recplug_refine`),
                computed only when called (an encoder rebuilding a graph from them calls it once per rebuild), or
                ``None`` when the fusion gives none.
            targets: the training step's triples (``None`` outside training), for an encoder that must leave each
                positive out of what it aggregates for its user (``ItemItemGraph``'s profiles).

        Returns:
            a :class:`~recplug.core.model.types.GraphView` ``(name, users [M, d_v], items [N, d_v])``.

        Example::

            def recplug_encode(self, ego_users, ego_items):
                return GraphView("id", ego_users, ego_items)
        """

    @hookspec(firstresult=True)
    @cardinality(1, 1, key="model.combiner")
    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        """Combine the encoders' views into the final user and item embeddings scored by dot product
        (``model.combiner`` defaults to ``SumCombiner``).

        **Called:** once per forward pass, after all encoders.

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
    @cardinality(0, key="model.aux_losses")
    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        """Return auxiliary loss terms, already weighted, added to the BPR loss (``model.bpr_weight`` times;
        with ``bpr_weight: 0`` these terms are the whole objective, as for UltraGCN). Term names must be unique
        across plugins; each is logged as ``train/<name>``.

        **Called:** once per training step, after the BPR loss is computed.

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
