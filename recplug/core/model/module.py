"""The LightningModule skeleton: it knows stages, never models.

forward = fuse modalities (``recplug_fuse``) -> encode views (``recplug_encode``) -> combine
(``recplug_combine``) -> dot-product scores. Training loss = BPR + every ``recplug_aux_loss`` term.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pluggy
import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_warn
import torch
from torch import Tensor, nn

from recplug.core.errors import (
    MAX_EMBEDDING_DIM, CardinalityError, ConfigError, InvalidArgument, PluginError, check_number, one_line,
)
from recplug.core.model.components import AuxLoss, Combiner, FusionModule, GraphEncoder, RecComponent
from recplug.core.model.hook_results import (
    bad_terms, check_combined, check_content, check_views, terms_are_well_formed,
)
from recplug.core.model.losses import bpr_loss
from recplug.core.model.sampled import (
    DrawnBatch, LazyAdam, Sampling, all_reduce_row_sparse, check_sampling, draw_neighbourhoods,
    exclude_row_sparse_from_ddp, leaves_ddp_nothing, sampled_forward,
)
from recplug.core.data.dataset import InteractionData
from recplug.core.data.registry import cache_root
from recplug.core.eval.evaluator import RankingEvaluation, rec_datamodule
from recplug.core.model.plugins import (
    RecplugPluginManager, active_plugin_modules, component_class, plugin_provenance,
)
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput
from recplug.core.ops.environment import env_flag
from recplug.core.ops.sampling import RowIndex
from recplug.hookspecs import cardinalities

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
DEFAULT_ENCODER = "IdEmbedding"
"""``model.encoders`` when none is configured: the plain id embedding (a built-in plugin, found by name)."""
DEFAULT_COMBINER = "SumCombiner"
"""``model.combiner`` when none is configured (a built-in plugin, found by name)."""


COMPONENT_SLOTS = (("model.encoders", GraphEncoder, True), ("model.fusion", FusionModule, False),
                   ("model.combiner", Combiner, False), ("model.aux_losses", AuxLoss, True))
"""RecModule's component arguments: config key, base class, and whether it takes a list."""


def check_component_types(*values: Any) -> None:
    """Refuse, naming the key, a component argument (in :data:`COMPONENT_SLOTS` order) that is not an instance of
    its base class (``fusion="ConcatFusion"`` from Python would be dropped) and one instance given twice."""
    seen: dict[int, str] = {}
    for (key, base, many), value in zip(COMPONENT_SLOTS, values):
        if value is None:
            continue
        if many and not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {base.__name__} instances, got {type(value).__name__} "
                              f"{one_line(repr(value), 80)}")
        for index, component in enumerate(value if many else [value]):
            where = f"{key}[{index}]" if many else key
            if not isinstance(component, base):
                raise ConfigError(f"{where} must be a {base.__name__} instance, got {type(component).__name__} "
                                  f"{one_line(repr(component), 80)}")
            if id(component) in seen:
                raise ConfigError(f"{where} is the same {type(component).__name__} instance as {seen[id(component)]}; "
                                  "give each its own")
            seen[id(component)] = where


class RecModule(pl.LightningModule):
    """Plugin-driven recommender skeleton (BPR on dot-product scores, plus plugin losses).

    Args:
        num_users: number of users (linked from ``data.num_users``).
        num_items: number of items (linked from ``data.num_items``).
        feature_dims: ``{modality: width}`` of the item features (linked from ``data.feature_dims``).
        embedding_dim: width ``d`` of the user/item ID embeddings (the "ego" layer every encoder receives).
        encoders: graph encoders; each contributes one named view (``model.encoders``).
        fusion: the modality fusion, or ``None`` for models that ignore item content (``model.fusion``).
        combiner: how views become final embeddings (``model.combiner``; default: sum of views).
        aux_losses: auxiliary losses, each returning named terms (``model.aux_losses``).
        bpr_weight: weight of the skeleton's BPR term; 0 switches it off for models whose aux losses are the
            whole objective (UltraGCN's ``UltraGCNLoss``).
        lr: learning rate of the default Adam optimiser.
        weight_decay: weight decay of the default optimiser.
        optimizer: optimiser factory (``lambda params: Optimizer``), overriding ``lr``/``weight_decay``.
        evaluation: the full-ranking metrics, cut-offs and search of validation and test (``--eval.*`` on the
            CLI); default exact search, ``ks=[10, 20]``, every metric.
        sampling: train on sampled neighbourhoods of each batch (``{fanouts: [10, 10]}``, with :class:`LazyAdam`;
            see :mod:`recplug.core.model.sampled`); ``None``: exact full-graph training. Evaluation is full-graph.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        feature_dims: dict[str, int] | None = None,
        embedding_dim: int = 64,
        encoders: list[GraphEncoder] | None = None,
        fusion: FusionModule | None = None,
        combiner: Combiner | None = None,
        aux_losses: list[AuxLoss] | None = None,
        bpr_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerFactory | None = None,
        evaluation: RankingEvaluation | None = None,
        sampling: Sampling | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["encoders", "fusion", "combiner", "aux_losses", "optimizer", "evaluation", "sampling"]
        )
        check_number("model", "num_users", num_users, 1, integer=True)
        check_number("model", "num_items", num_items, 1, integer=True)
        self.num_users, self.num_items = num_users, num_items
        self.feature_dims = dict(feature_dims or {})
        check_number("model", "embedding_dim", embedding_dim, 1, MAX_EMBEDDING_DIM, integer=True)
        check_component_types(encoders, fusion, combiner, aux_losses)
        check_number("model", "bpr_weight", bpr_weight, 0)
        check_number("model", "lr", lr, 0, low_open=True)
        check_number("model", "weight_decay", weight_decay, 0)
        self.embedding_dim = embedding_dim
        if bpr_weight == 0 and not aux_losses:
            raise ConfigError("model.bpr_weight is 0 and model.aux_losses is empty: there is nothing to train")
        self.bpr_weight = bpr_weight
        self.lr, self.weight_decay, self.optimizer_factory = lr, weight_decay, optimizer
        self.evaluation = evaluation if evaluation is not None else RankingEvaluation()
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        if encoders is None:
            encoders = [component_class(GraphEncoder, DEFAULT_ENCODER, "model.encoders")()]
        self.encoders = nn.ModuleList(encoders)
        self.fusion = fusion
        if combiner is None:
            combiner = component_class(Combiner, DEFAULT_COMBINER, "model.combiner")()
        self.combiner = combiner
        self.aux_losses = nn.ModuleList(aux_losses or [])
        self._draw_id_tables()
        self._hook_owners: dict[str, list[str]] = {}  # owners()
        self._wire_plugins()
        self.view_names = self.declared_views()
        self.check_requirements()
        self.sampling = check_sampling(self, sampling)
        with self.naming_component_keys():
            self.pm.hook.recplug_build(
                num_users=num_users, num_items=num_items, feature_dims=self.feature_dims, embedding_dim=embedding_dim
            )
        self._embedding_cache: tuple[Tensor, Tensor] | None = None
        self.ddp_anchor: nn.Parameter | None = None  # sampled DDP of ID tables only (setup)
        self._cold_scored: bool | None = None  # scores_cold_items of the data's cold items, decided by prepare
        # sampled mode's scratch global -> local row maps, one per table, reused step after step (not state)
        self.sampled_row_indexes: dict[str, RowIndex] = {} if self.sampling is None else {
            "users": RowIndex(num_users), "items": RowIndex(num_items), "content": RowIndex(num_items)
        }
        self.run_provenance: dict[str, Any] = {"plugins": plugin_provenance()}

    # ------------------------------------------------------------------ wiring
    def _wire_plugins(self) -> None:
        """``self.pm``: a plugin manager with the loaded plugin modules and this model's components registered,
        every ``recplug_*`` method a known hook, and each hook's number of providers as its spec allows."""
        self.pm = RecplugPluginManager()
        for name, module in active_plugin_modules():
            self.pm.register(module, name=f"plugin:{name}")
        for key, component in self.components().items():
            try:
                self.pm.register(component, name=key)
            except pluggy.PluginValidationError as exc:  # a plugin class skipped at load, chosen by name anyway
                raise PluginError(f"{key} ({type(component).__name__}): {one_line(exc)}") from None
        self.pm.check_pending()  # a recplug_* name that is no hook (a typo) would silently never run
        self.check_cardinality()

    def reset_parameters(self) -> None:
        """Re-draw every learned weight as at construction: the ID tables and each component's own."""
        self._draw_id_tables()
        for component in self.components().values():
            component.reset_parameters()

    def _draw_id_tables(self) -> None:
        """Xavier-uniform ID tables (LightGCN's and MMRec's initialisation)."""
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def components(self) -> dict[str, RecComponent]:
        """Config key -> component, for every configured component (the names used on the plugin manager)."""
        found: dict[str, RecComponent] = {}
        for i, encoder in enumerate(self.encoders):
            found[f"model.encoders[{i}]"] = encoder
        if self.fusion is not None:
            found["model.fusion"] = self.fusion
        found["model.combiner"] = self.combiner
        for i, loss in enumerate(self.aux_losses):
            found[f"model.aux_losses[{i}]"] = loss
        return found

    @contextmanager
    def naming_component_keys(self) -> Iterator[None]:
        """Re-raise a component's :class:`InvalidArgument` (which names only its class) with the component's
        config key, e.g. ``model.encoders[1].init_args.k``."""
        try:
            yield
        except InvalidArgument as exc:
            key = next((k for k, c in self.components().items() if c is exc.owner), None)
            if key is None:
                raise
            raise exc.at(key) from exc

    def _describe(self, key: str) -> str:
        plugin = self.pm.get_plugin(key)
        return f"{key} ({type(plugin).__name__})" if key.startswith("model.") else key

    def check_cardinality(self) -> None:
        """Enforce the cardinality declared beside each hook spec (:func:`recplug.hookspecs.cardinalities`),
        naming every provider and the config key to change."""
        for hook, rule in cardinalities().items():
            providers = self.pm.providers(hook)
            if rule.admits(len(providers)):
                continue
            found = f"{len(providers)}: {', '.join(self._describe(p) for p in providers)}" if providers else "none"
            if len(providers) < rule.low and rule.missing:
                raise CardinalityError(rule.missing)
            modules = [p.removeprefix("plugin:") for p in providers if p.startswith("plugin:")]
            if len(providers) < rule.low:
                fix = f"set {rule.key}"
            elif modules:  # a module-level hook runs for every model: no config can leave it out
                fix = (f"plugin {', '.join(modules)} implements it at module level, for every model: uninstall it or "
                       "load only the others (RECPLUG_LOAD_PLUGINS=name,...)")
            else:
                fix = f"keep one and set it as {rule.key}" if rule.high == 1 else f"keep {rule.high}, set as {rule.key}"
            noun = "provider" if rule.high == 1 else "providers"
            raise CardinalityError(f"hook {hook} needs {rule} {noun}, found {found}; {fix}")

    def declared_views(self) -> list[str]:
        """The sorted names of the views the encoders produce (each declares its ``view_name``), unique."""
        owners: dict[str, str] = {}
        for key in self.pm.providers("recplug_encode"):
            name = getattr(self.pm.get_plugin(key), "view_name", None)
            if not isinstance(name, str):
                raise PluginError(
                    f"{self._describe(key)} implements recplug_encode but declares no view_name: subclass GraphEncoder"
                )
            if name in owners:
                where = f"{key}.init_args.name" if key.startswith("model.") else key
                raise ConfigError(
                    f"{where}: two encoders produce a view named {name!r} ({owners[name]} too); "
                    "give each a distinct init_args.name"
                )
            owners[name] = key
        return sorted(owners)

    def check_requirements(self) -> None:
        """Run each ``recplug_check`` once, so what a component requires of the others (a view, item content)
        fails now, named by the component's config key, not at the first training step."""
        arguments = {"views": self.view_names, "has_content": bool(self.pm.providers("recplug_fuse")),
                     "refines": bool(self.pm.providers("recplug_refine"))}
        for impl in self.pm.hook.recplug_check.get_hookimpls():
            try:
                impl.function(**{name: arguments[name] for name in impl.argnames})
            except InvalidArgument as exc:
                if exc.owner is not impl.plugin:
                    raise
                raise exc.at(impl.plugin_name) from exc
            except ConfigError as exc:
                raise ConfigError(f"{impl.plugin_name}: {exc}") from exc

    # ------------------------------------------------------------------ data
    def prepare(self, data: InteractionData, cache_dir: Path | None = None) -> None:
        """Give plugins the data (graphs, features). Lightning calls this from ``setup``; call it yourself
        after ``load_from_checkpoint`` outside a Trainer."""
        if (data.num_users, data.num_items) != (self.num_users, self.num_items):
            raise ConfigError(
                f"data has {data.num_users} users and {data.num_items} items, the model was built for "
                f"{self.num_users} and {self.num_items}"
            )
        cache = cache_root(cache_dir)  # data.cache_dir, $RECPLUG_CACHE or ~/.cache/recplug
        device = self.user_embedding.weight.device
        with self.naming_component_keys():
            self.pm.hook.recplug_setup(data=data, cache_dir=cache)
        self.to(device)  # buffers plugins built from (CPU) data follow the module
        self._embedding_cache = None
        # outside Lightning's inference mode (setup), where autograd works
        self._cold_scored = None if data.cold_items is None else self.scores_cold_items(data.cold_items)
        if self._cold_scored is False:
            rank_zero_warn(
                f"the model gives the {data.cold_items.numel()} cold items only their own ID embeddings (no item "
                "content or item-item graph reaches them), so it cannot score them: the cold and coldonly metric "
                "groups (val_cold/*, test_coldonly/*, ...) are NaN, not applicable"
            )

    def setup(self, stage: str) -> None:
        datamodule = rec_datamodule(self._trainer, "RecModule")
        self.prepare(datamodule.data, datamodule.cache_dir)
        if stage == "fit" and self.fusion is not None and not self.content_reaches_the_loss(datamodule.data):
            rank_zero_warn(
                "model.fusion: its fused content reaches no score and no loss term (no view, combiner or aux loss "
                "reads it; e.g. ItemItemGraph with source 'id'), so it is computed every step for nothing: drop "
                "model.fusion, or give it a reader (ItemItemGraph source 'content', ContentView, ContentBPRLoss)"
            )
        if self.sampling is not None:  # before the strategy wraps the module in DDP
            exclude_row_sparse_from_ddp(self)
            if self.ddp_anchor is None and isinstance(self.trainer.strategy, DDPStrategy) and leaves_ddp_nothing(self):
                # DDP refuses a module it would reduce nothing of: a zero it reduces (never trained, never saved)
                self.ddp_anchor = nn.Parameter(torch.zeros((), device=self.device))
        ahead = self.sampling is not None and self.sampling.draws_ahead(self.trainer.strategy.root_device)
        datamodule.draw = self.draw_batch if ahead else None

    # ------------------------------------------------------------------ forward
    def forward(self, targets: BPRBatch | None = None) -> ModelOutput:
        """One full pass through the stages; returns every intermediate (see :class:`ModelOutput`).

        ``targets``: the training step's triples, handed to the encoders (``recplug_encode``), ``None`` outside
        training."""
        content = self.pm.hook.recplug_fuse()  # None when no fusion is configured
        check_content(content, self.owners("recplug_fuse"), self.num_items)
        ego_users, ego_items = self.user_embedding.weight, self.item_embedding.weight
        output = ModelOutput(ego_users=ego_users, ego_items=ego_items, content=content)
        refined = self.pm.hook.recplug_refine if self.pm.providers("recplug_refine") else None  # called on demand
        views: list[GraphView] = self.pm.hook.recplug_encode(
            ego_users=ego_users, ego_items=ego_items, content=content, refined=refined, targets=targets
        )
        check_views(views, self.owners("recplug_encode")[::-1], self.num_users, self.num_items)  # pluggy: LIFO
        output.views = {view.name: view for view in views}
        if sorted(output.views) != self.view_names:  # a plugin bug: the names were checked when it was built
            raise PluginError(
                f"the encoders returned views {sorted(view.name for view in views)} but declare {self.view_names}: "
                "each recplug_encode must return the view named by its encoder's view_name"
            )
        ordered = [output.views[name] for name in sorted(output.views)]
        output.users, output.items = check_combined(
            self.pm.hook.recplug_combine(views=ordered), self.owners("recplug_combine"), self.num_users, self.num_items
        )
        return output

    def owners(self, hook: str) -> list[str]:
        """The providers of ``hook`` as errors name them: config key and class, or ``plugin:<name>`` (found once:
        the plugins are registered when the model is built)."""
        if hook not in self._hook_owners:
            self._hook_owners[hook] = [self._describe(name) for name in self.pm.providers(hook)]
        return self._hook_owners[hook]

    @torch.no_grad()
    def cached_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final ``(users, items)`` in eval mode, computed once until the next training step."""
        if self._embedding_cache is None:
            was_training = self.training
            self.eval()
            out = self()
            self.train(was_training)
            self._embedding_cache = (out.users.detach(), out.items.detach())
        return self._embedding_cache

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        # Every source of randomness in an epoch (dropout, edge pruning, ...) is derived from (run seed, epoch),
        # so a run resumed from an epoch-end checkpoint replays exactly what an uninterrupted run would.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1000003 + self.current_epoch
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.pm.hook.recplug_resample(epoch=self.current_epoch, generator=generator)

    def draw_batch(self, batch: tuple[Tensor, Tensor, Tensor], generator: torch.Generator) -> DrawnBatch:
        """Sampled mode: a training batch's neighbourhoods, drawn while the previous batch trains."""
        return draw_neighbourhoods(self, BPRBatch(*batch), generator)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        self._embedding_cache = None
        if self.sampling is not None:  # the step's distinct nodes only; triples re-indexed to them
            # the batch's draw, made one batch ahead (RecDataModule.draw), or now for a loader without one
            drawn = batch[3].result() if len(batch) == 4 else draw_neighbourhoods(self, BPRBatch(*batch))
            triples, output = sampled_forward(self, drawn)
        else:
            triples = BPRBatch(*batch)
            output = self(triples)
        terms = self.loss_terms(triples, output)
        loss = self.total_loss(terms)
        if self.ddp_anchor is not None:  # a gradient for DDP to reduce (zero)
            loss = loss + 0.0 * self.ddp_anchor
        if not bool(torch.isfinite(loss)):  # one host sync per step; stops the run before NaN reaches the weights
            raise self._diverged(batch_idx, *self._non_finite_term(terms, triples, output))
        batch_size = len(triples)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size, on_step=False, on_epoch=True)
        self.log("train/loss", loss, batch_size=batch_size, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def loss_terms(self, triples: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        """The weighted terms of a training step's loss: BPR (with ``bpr_weight`` > 0) and every aux loss's."""
        terms: dict[str, Tensor] = {}
        if self.bpr_weight > 0:
            items = output.items
            terms["bpr"] = self.bpr_weight * bpr_loss(
                output.users[triples.users], items[triples.pos_items], items[triples.neg_items]
            )
        results = self.pm.hook.recplug_aux_loss(batch=triples, output=output)
        if not terms_are_well_formed(results, len(self.pm.hook.recplug_aux_loss.get_hookimpls())):
            raise self._bad_aux_loss(triples, output)
        for extra in results:
            for name, value in extra.items():
                if name in terms:
                    raise ConfigError(f"two aux losses return a term named {name!r}; rename one")
                terms[name] = value
        return terms

    @staticmethod
    def total_loss(terms: dict[str, Tensor]) -> Tensor:
        """The training loss: the sum of the weighted terms of :meth:`loss_terms`."""
        return torch.stack(list(terms.values())).sum()

    def content_reaches_the_loss(self, data: InteractionData) -> bool:
        """Does the fused content reach the training loss? Decided by autograd on one training forward over the
        first training pairs (the random state restored afterwards): a fusion that no view, combiner or aux loss
        reads (an ``ItemItemGraph`` propagating ID embeddings, ``source: id``) is computed every step for nothing.
        ``True`` when it cannot be told (content without a gradient path, e.g. frozen features and no weights)."""
        users, items = data.split("train")
        count = min(256, users.numel())
        device = self.user_embedding.weight.device
        triples = BPRBatch(users[:count].to(device), items[:count].to(device), items[:count].roll(1).to(device))
        was_training = self.training
        self.train()
        try:
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
                    torch.enable_grad():
                output = self(triples)
                if output.content is None or not output.content.requires_grad:
                    return True
                loss = self.total_loss(self.loss_terms(triples, output))
                (grad,) = torch.autograd.grad(loss, output.content, allow_unused=True)
        finally:
            self.train(was_training)
            self._embedding_cache = None
        return grad is not None

    def on_after_backward(self) -> None:
        if self.sampling is not None:
            all_reduce_row_sparse(self)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Stop on a learning rate a scheduler made negative or non-finite (StepLR with ``gamma: -5`` trained with
        -0.05 without a word; 0, as a cosine schedule ends, is allowed)."""
        for optimizer in self.trainer.optimizers if self._trainer is not None else []:
            for group in optimizer.param_groups:
                lr = group.get("lr")
                if isinstance(lr, (int, float)) and not (math.isfinite(lr) and lr >= 0):
                    raise ConfigError(
                        f"the learning rate is {lr:g} at epoch {self.current_epoch}, batch {batch_idx}; it must be a "
                        "finite number >= 0: check the optimiser's lr and the lr_scheduler section (e.g. its gamma)"
                    )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop on weights the optimiser step made non-finite (the loss of this step was still finite).

        A parameter's float32 sum is finite iff its values are (short of a total beyond ~1e38, itself a divergence):
        one reduction per parameter and one host sync; measured on CPU for Gowalla-sized MF tables (4.5 M floats),
        3 ms per step against 34 ms for ``isfinite(p).all()``. A table with a row-sparse gradient (sampled mode) is
        checked on the rows the step updated only, so the check does not grow with the catalogue."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not named:
            return
        updated = [p.index_select(0, p.grad._indices()[0]) if p.grad is not None and p.grad.is_sparse else p
                   for _, p in named]
        finite = torch.isfinite(torch.stack([p.sum(dtype=torch.float32) for p in updated]))
        if not bool(finite.all()):
            name = named[int((~finite).nonzero()[0])][0]
            raise self._diverged(batch_idx, f"parameter {name} is not finite after the optimiser step")

    def _non_finite_term(self, terms: dict[str, Tensor], batch: BPRBatch, output: ModelOutput) -> tuple[str, str]:
        """``(what is not finite, the weight that scales it)`` for the first non-finite loss term."""
        name = next((n for n, value in terms.items() if not bool(torch.isfinite(value))), None)
        if name is None:
            return f"train/loss is {float(self.total_loss(terms).detach())} (its finite terms overflow)", ""
        if name == "bpr":
            return f"train/bpr is {float(terms[name].detach())}", "model.bpr_weight"
        owner = self._aux_loss_returning(name, batch, output) or "its aux loss"
        weight = f"{owner}.init_args.weight" if owner.startswith("model.") else f"the weight of {owner}"
        return f"train/{name} is {float(terms[name].detach())}", weight

    def _bad_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> PluginError:
        """The error naming the aux-loss provider whose result is not a dict of named scalar tensors: each is asked
        alone, which only a broken plugin pays for."""
        arguments = {"batch": batch, "output": output}
        for impl in self.pm.hook.recplug_aux_loss.get_hookimpls():
            terms = impl.function(**{a: arguments[a] for a in impl.argnames})
            if not terms_are_well_formed([terms] if terms is not None else [], 1):
                return bad_terms(self._describe(impl.plugin_name), terms)
        raise AssertionError("every recplug_aux_loss result is well formed when asked alone")

    def _aux_loss_returning(self, term: str, batch: BPRBatch, output: ModelOutput) -> str | None:
        """Name (config key) of the aux-loss provider whose terms include ``term``: each is asked alone, which only
        a diverged run pays for."""
        arguments = {"batch": batch, "output": output}
        with torch.no_grad():
            for impl in self.pm.hook.recplug_aux_loss.get_hookimpls():
                if term in impl.function(**{a: arguments[a] for a in impl.argnames}):
                    return impl.plugin_name
        return None

    def _diverged(self, batch_idx: int, problem: str, weight: str = "") -> ConfigError:
        """The one-line error that stops a diverged run: the step, what is not finite and the likely knobs."""
        lr = f"model.lr ({self.lr:g})" if self.optimizer_factory is None else "model.optimizer's learning rate"
        return ConfigError(
            f"training diverged at epoch {self.current_epoch}, batch {batch_idx} (step {self.global_step}): "
            f"{problem}; lower {lr}{' or ' + weight if weight else ''}"
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad and p is not self.ddp_anchor]
        if self.optimizer_factory is not None:
            return self.optimizer_factory(params)
        optimizer = LazyAdam if self.sampling is not None else torch.optim.Adam  # sampled: row-sparse gradients
        return optimizer(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what produced the weights: recplug and plugin versions (and, from the CLI, config and data
        hashes and the seed; see :func:`recplug.core.model.provenance.provenance`)."""
        from recplug import __version__

        checkpoint["recplug"] = {"recplug": __version__, **self.run_provenance}
        checkpoint["state_dict"].pop("ddp_anchor", None)  # DDP's, not the model's: loads in one process too

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse weights of another dataset or bundle in one line, and warn when the checkpoint records other
        data than this run's (``RECPLUG_STRICT_CHECKPOINTS=1`` refuses it). Relative checkpoint folders become
        absolute before the callbacks load (:func:`~recplug.core.model.checkpoint.absolute_checkpoint_paths`)."""
        from recplug.core.model.checkpoint import CheckpointError, absolute_checkpoint_paths, check_state_matches

        absolute_checkpoint_paths(checkpoint)

        source = str(self.trainer.ckpt_path) if self._trainer is not None else "checkpoint"
        if self.ddp_anchor is not None:  # resumed under DDP: the anchor is not saved
            checkpoint["state_dict"].setdefault("ddp_anchor", torch.zeros_like(self.ddp_anchor))
        check_state_matches(source, checkpoint, self.state_dict())
        recorded = (checkpoint.get("recplug") or {}).get("data_sha256")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data = getattr(datamodule, "data", None)
        current = data.content_hash() if recorded and data is not None else recorded
        if current != recorded:
            message = (
                f"{source}: trained on other data ({checkpoint['recplug'].get('data')!r}, sha256 "
                f"{recorded[:12]}) than this run's ({data.name!r}, sha256 {current[:12]})"
            )
            if env_flag("RECPLUG_STRICT_CHECKPOINTS"):
                raise CheckpointError(message + "; refused under RECPLUG_STRICT_CHECKPOINTS=1")
            rank_zero_warn(message + "; set RECPLUG_STRICT_CHECKPOINTS=1 to refuse such checkpoints")

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = None, hparams_file: str | Path | None = None,
        strict: bool | None = None, weights_only: bool | None = None, **kwargs: Any,
    ) -> RecModule:
        """Lightning's ``load_from_checkpoint``, opened weights-only through :mod:`recplug.core.model.checkpoint`
        (a URL is downloaded to a temporary file; ``weights_only=False`` is refused). Pass the components
        (``encoders=[...]``, ``fusion=...``) as keyword arguments: checkpoints keep their weights, not their classes."""
        from recplug.core.model.checkpoint import local_checkpoint, open_checkpoint, refuse_unsafe_loading

        refuse_unsafe_loading(weights_only)
        path = local_checkpoint(checkpoint_path)
        open_checkpoint(path)  # one-line errors before Lightning's loader (weights-only below) reads it again
        return super().load_from_checkpoint(
            path, map_location=map_location, hparams_file=hparams_file, strict=strict, weights_only=True, **kwargs
        )

    # ------------------------------------------------------------------ evaluation
    def on_fit_start(self) -> None:
        """Refuse evaluation cut-offs beyond the catalogue, and in sampled mode an optimiser that cannot take
        row-sparse gradients, before the first training step."""
        self.evaluation.check_cutoffs(self.num_items)
        if self.sampling is not None and self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                if not isinstance(optimizer, LazyAdam):
                    raise ConfigError(
                        f"model.sampling trains with row-sparse gradients, which {type(optimizer).__name__} cannot "
                        "take: drop the optimizer section (LazyAdam then uses model.lr and model.weight_decay) or "
                        "name recplug.core.model.sampled.LazyAdam in it"
                    )

    def scores_cold_items(self, items: Tensor) -> bool:
        """Do the final embeddings of ``items`` (held out of training) depend on something the model learned
        beyond their own ID embeddings: the fused item content (VBPR's content view, CRANE-RCA's semantic view), or
        warm items' or users' ID embeddings (FREEDOM's and CRANE's item-item graph over content)?

        Decided by autograd on one forward in eval mode: the gradient of a random projection of the items' final
        embeddings with respect to the fused content and the ID tables, the rows of the cold items excluded. An
        ID-only model (MF, LightGCN, NGCF, UltraGCN) gives a cold item its own ID embedding, which BPR trains only
        as a sampled negative (pushed away from users, never towards one), so its ranking is not a learned one."""
        was_training = self.training
        self.eval()
        try:
            with torch.enable_grad():
                output = self()
                probe = output.items[items.to(output.items.device)]
                if not probe.requires_grad:
                    return False
                inputs = [t for t in (output.content, output.ego_users, output.ego_items)
                          if t is not None and t.requires_grad]
                weights = torch.randn(probe.shape, generator=torch.Generator().manual_seed(0)).to(probe)
                grads = torch.autograd.grad((probe * weights).sum(), inputs, allow_unused=True)
        finally:
            self.train(was_training)
        for tensor, grad in zip(inputs, grads):
            if grad is None:
                continue
            if tensor is output.ego_items:
                grad = grad.index_fill(0, items.to(grad.device), 0.0)  # the cold items' own (untrained) IDs
            if bool((grad != 0).any()):
                return True
        return False

    def _start_evaluation(self, stage: str) -> None:
        """Search and metrics reset for a ``val`` or ``test`` epoch, on the embeddings propagated once for it."""
        datamodule = rec_datamodule(self._trainer, "RecModule's evaluation")
        split = datamodule.validation_split if stage == "val" else "test"
        loader = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        users, items = self.cached_embeddings()
        self.evaluation.start(datamodule, split, users, items, loader, cold_scored=self._cold_scored is not False)

    def _log_evaluation(self, stage: str) -> None:
        for name, value in self.evaluation.compute().items():  # summed over every process: the same on each
            group, _, metric = name.rpartition("/")  # "cold/recall@20" is logged as test_cold/recall@20
            # sync_dist averages identical values (a no-op) and spares Lightning's DDP warning
            self.log(f"{stage}_{group}/{metric}" if group else f"{stage}/{name}", value, on_step=False,
                     on_epoch=True, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        """Rank a batch of user ids against every item (seen items masked) and add it to the metrics."""
        self.evaluation.update(batch)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/<metric>@<k>``."""
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        """See :meth:`validation_step`."""
        self.evaluation.update(batch)

    def on_test_epoch_end(self) -> None:
        """Log ``test/<metric>@<k>``."""
        self._log_evaluation("test")

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        """Nothing to return: the ``TopKWriter`` callback (``--topk.*`` in ``recplug predict``) searches each
        batch's top-K on the cached embeddings and writes it, so no ``[B, N]`` score matrix is kept."""
