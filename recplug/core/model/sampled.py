"""Sampled training (``model.sampling``): each step propagates only the sampled neighbourhood of its nodes.

Full-graph training propagates every node at every step, so an epoch costs ``E / B`` whole-graph propagations
and grows with the square of the data. In sampled mode a step computes the final embeddings of its distinct
users and items only, each encoder over the ``L``-hop neighbourhood of those nodes sampled with the fan-outs
(GraphSAGE-style neighbour sampling with the full graph's weights rescaled, :mod:`recplug.core.ops.sampling`),
and the ID tables and trainable features are gathered once per step with row-sparse gradients, updated by
:class:`LazyAdam`, so a step's cost does not grow with the catalogue. Evaluation is unchanged: one full-graph
forward per evaluation (``RecModule.cached_embeddings``).

In sampled mode the step's batch and :class:`ModelOutput` are *local*: ``output.users`` are the rows of the
batch's distinct users (sorted by id), ``output.items`` those of its distinct items, and the batch's ids index
them, so the BPR term and the aux losses run unchanged. A component that needs more than the batch's rows
(a loss over the whole catalogue, a graph rebuilt from every item) says so in ``sampling_refusal`` and the
model refuses ``model.sampling`` when it is built.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

from recplug.core.errors import ConfigError, InvalidArgument, check_number
from recplug.core.model.components import FusionModule
from recplug.core.model.hook_results import check_combined, check_views
from recplug.core.ops.sampling import RowIndex, check_budget, check_engine, check_fanouts, gather_rows
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput, NodePlan, SampledBatch

if TYPE_CHECKING:
    from recplug.core.model.module import RecModule

FORWARD_HOOKS = ("recplug_fuse", "recplug_encode", "recplug_combine", "recplug_aux_loss")


@dataclass
class Sampling:
    """``model.sampling``: train on sampled neighbourhoods (``None``, the default: exact full-graph training).

    Args:
        fanouts: neighbours kept per node at each hop, outwards from the batch's nodes (``-1``: all of them); an
            encoder with ``L`` hops uses the first ``L`` (``UserItemGraph``: ``num_layers``; ``ItemItemGraph``:
            ``num_layers`` item-item hops, then the users' profile hop).
        engine: the neighbour sampler: ``"torch"`` (vectorised, with replacement;
            :class:`~recplug.core.ops.sampling.TorchNeighbourSample`) or ``"pyg"`` (PyG's ``NeighborSampler``,
            without replacement; needs pyg-lib).
        budget: new nodes kept per hop, at most in expectation, by Poisson sampling with Horvitz-Thompson
            weights (:func:`~recplug.core.ops.sampling.thin_new_nodes`): a step then reads at most about
            ``batch nodes + hops * budget`` rows however large the graph. ``None`` (default): every node the
            fan-outs reach. Engine ``"torch"`` only.
        draw_ahead: draw batch i+1's neighbourhoods in a background thread while batch i trains
            (:class:`~recplug.core.data.sampler.DrawnAhead`). ``None`` (default): only when training on an
            accelerator, whose steps leave the CPU idle; on CPU the thread competes with the step for the cores
            (``bench/draw_ahead.py``, 2 cores: 5% slower per step).
    """

    fanouts: list[int] = field(default_factory=lambda: [10, 10])
    engine: str = "torch"
    budget: int | None = None
    draw_ahead: bool | None = None

    def draws_ahead(self, device: torch.device) -> bool:
        """Whether training on ``device`` draws one batch ahead (``draw_ahead``, or by default: off on CPU)."""
        return self.draw_ahead if self.draw_ahead is not None else device.type != "cpu"


def check_sampling(module: RecModule, sampling: Sampling | None) -> Sampling | None:
    """Refuse, in one line naming the key, fan-outs that are no list of positive ints (or -1), too few of them for
    an encoder's hops, and any component or plugin that has no sampled mode."""
    if sampling is None:
        return None
    if not isinstance(sampling, Sampling):
        raise ConfigError(f"model.sampling must be null or {{fanouts: [...]}}, got {sampling!r}")
    sampling.fanouts = check_fanouts(sampling.fanouts, "model.sampling.fanouts")
    check_engine(sampling.engine)
    check_budget(sampling.budget, sampling.engine)
    for key, component in module.components().items():
        refusal = component.sampling_refusal()
        if refusal is not None:
            raise ConfigError(
                f"model.sampling: {key} ({type(component).__name__}) has no sampled mode: {refusal}; "
                "train it on the full graph (model.sampling: null)"
            )
    keys = set(module.components())
    for hook in FORWARD_HOOKS:
        for provider in module.pm.providers(hook):
            if provider not in keys:
                raise ConfigError(f"model.sampling: plugin {provider} implements {hook}, which has no sampled mode")
    for i, encoder in enumerate(module.encoders):
        hops = encoder.sampled_hops
        if hops > len(sampling.fanouts):
            raise ConfigError(
                f"model.sampling.fanouts has {len(sampling.fanouts)} entries but model.encoders[{i}] "
                f"({type(encoder).__name__}) samples {hops} hops: give at least {hops}"
            )
    deepest = max(encoder.sampled_hops for encoder in module.encoders)
    if len(sampling.fanouts) > deepest:
        warnings.warn(f"model.sampling.fanouts has {len(sampling.fanouts)} entries but the deepest encoder samples "
                      f"{deepest} hop(s): the entries after the first {deepest} are not used", stacklevel=2)
    return sampling


class NodeTables:
    """The rows one sampled step reads, each table gathered once (one row-sparse gradient per table).

    Args:
        module: the model (its ID tables and fusion).
        batch: the step's nodes.
        plans: what each encoder's neighbourhood reads.
        indexes: the module's :class:`~recplug.core.ops.sampling.RowIndex` per table (``users``, ``items``,
            ``content``), reused across steps.
    """

    def __init__(
        self, module: RecModule, batch: SampledBatch, plans: list[NodePlan], indexes: dict[str, RowIndex]
    ) -> None:
        self.indexes = indexes
        self.user_ids = self._distinct("users", batch.users, (p.users for p in plans))
        self.item_ids = self._distinct("items", batch.items, (p.items for p in plans))
        self.user_rows = gather_rows(module.user_embedding.weight, self.user_ids.to(module.device))
        self.item_rows = gather_rows(module.item_embedding.weight, self.item_ids.to(module.device))
        self.content_ids: Tensor | None = None
        self.content_rows: Tensor | None = None
        if module.fusion is not None:
            self.content_ids = self._distinct("content", batch.items, (p.content for p in plans))
            with module.fusion.restricted_to(self.content_ids.to(module.device)):
                self.content_rows = module.fusion.recplug_fuse()
            if self.content_rows.shape[0] != self.content_ids.numel():
                raise ConfigError(
                    f"model.sampling: model.fusion ({type(module.fusion).__name__}) fused "
                    f"{self.content_rows.shape[0]} items for {self.content_ids.numel()} requested: a fusion reads "
                    "its features through self.features() to run in sampled mode"
                )

    def _distinct(self, table: str, first: Tensor, more: Iterable[Tensor | None]) -> Tensor:
        """The sorted distinct ids of ``first`` and every tensor of ``more``, indexed for :meth:`_lookup`."""
        return self.indexes[table].build(torch.cat([first, *(t.cpu() for t in more if t is not None)]))

    def _lookup(self, table: str, ids: Tensor, rows: Tensor) -> Tensor:
        return rows.index_select(0, self.indexes[table].local(ids.cpu()).to(rows.device))

    def users(self, ids: Tensor) -> Tensor:
        """ID embeddings of global user ``ids`` (each among the plans' users or the batch's)."""
        return self._lookup("users", ids, self.user_rows)

    def items(self, ids: Tensor) -> Tensor:
        """ID embeddings of global item ``ids``."""
        return self._lookup("items", ids, self.item_rows)

    def users_and_items(self, nodes: Tensor, num_users: int) -> Tensor:
        """ID embeddings of the user-item graph's nodes ``nodes`` (``v < num_users``: user ``v``, else item
        ``v - num_users``), in one gather from both tables."""
        nodes = nodes.cpu()
        is_user = nodes < num_users
        local = torch.empty_like(nodes)
        local[is_user] = self.indexes["users"].local(nodes[is_user])
        local[~is_user] = self.user_rows.shape[0] + self.indexes["items"].local(nodes[~is_user] - num_users)
        return torch.cat([self.user_rows, self.item_rows]).index_select(0, local.to(self.user_rows.device))

    def content(self, ids: Tensor) -> Tensor:
        """Fused content of global item ``ids`` (the fusion ran once, over every item the step reads)."""
        if self.content_ids is None or self.content_rows is None:
            raise RuntimeError("NodeTables.content: no fusion is configured")
        return self._lookup("content", ids, self.content_rows)


@dataclass
class DrawnBatch:
    """One sampled step's draw (:func:`draw_neighbourhoods`), made before the step runs.

    Attributes:
        local: the step's triples re-indexed to its distinct nodes (rows of ``nodes.users`` / ``nodes.items``).
        nodes: the step's distinct users and items.
        plans: each encoder's sampled neighbourhood, in ``module.encoders`` order.
    """

    local: BPRBatch
    nodes: SampledBatch
    plans: list[NodePlan]


def draw_neighbourhoods(module: RecModule, batch: BPRBatch, generator: torch.Generator | None = None) -> DrawnBatch:
    """Draw every encoder's neighbourhood of ``batch``'s distinct nodes from ``generator`` (``None``: torch's
    default). It reads the graphs and no trained weight, so :class:`~recplug.core.data.sampler.DrawnAhead` runs it
    for the next batch while this one trains."""
    assert module.sampling is not None
    users, user_index = torch.unique(batch.users, return_inverse=True)
    items, item_index = torch.unique(torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True)
    size = len(batch)
    local = BPRBatch(user_index, item_index[:size], item_index[size:])
    nodes = SampledBatch(users.cpu(), items.cpu(), tuple(module.sampling.fanouts), module.sampling.engine,
                         module.sampling.budget, positives=(local.users, local.pos_items), generator=generator)
    return DrawnBatch(local, nodes, [encoder.sample(nodes) for encoder in module.encoders])


def sampled_forward(module: RecModule, drawn: DrawnBatch) -> tuple[BPRBatch, ModelOutput]:
    """One sampled step's forward: the batch re-indexed to its distinct nodes and their :class:`ModelOutput`."""
    nodes, plans = drawn.nodes, drawn.plans
    tables = NodeTables(module, nodes, plans, module.sampled_row_indexes)
    content = tables.content(nodes.items) if tables.content_ids is not None else None
    output = ModelOutput(ego_users=tables.users(nodes.users), ego_items=tables.items(nodes.items), content=content)
    views: list[GraphView] = [encoder.encode_sampled(plan, tables) for encoder, plan in zip(module.encoders, plans)]
    rows = nodes.users.numel(), nodes.items.numel()
    check_views(views, [f"model.encoders[{i}] ({type(e).__name__})" for i, e in enumerate(module.encoders)], *rows)
    output.views = {view.name: view for view in views}
    output.users, output.items = check_combined(
        module.pm.hook.recplug_combine(views=[output.views[n] for n in sorted(output.views)]),
        module.owners("recplug_combine"), *rows,
    )
    local = drawn.local
    return BPRBatch(*(t.to(module.device) for t in (local.users, local.pos_items, local.neg_items))), output


def row_sparse_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable tables a sampled step reads by rows, so their gradients are row-sparse: every
    ``nn.Embedding``'s weight (the ID tables, ``ContentView``'s preferences) and a fusion's trainable features."""
    found = {}
    for prefix, sub in module.named_modules():
        for name, parameter in sub.named_parameters(recurse=False):
            rows = isinstance(sub, nn.Embedding) or (isinstance(sub, FusionModule) and name.startswith("raw_"))
            if rows and parameter.requires_grad:
                found[f"{prefix}.{name}" if prefix else name] = parameter
    return found


def exclude_row_sparse_from_ddp(module: nn.Module) -> None:
    """Keep the row-sparse tables out of DDP's reducer, which buckets dense gradients only (sparse ones only for
    ``nn.Embedding(sparse=True)`` modules); :func:`all_reduce_row_sparse` reduces them instead."""
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(row_sparse_parameters(module)))


def leaves_ddp_nothing(module: nn.Module) -> bool:
    """Are all of ``module``'s trainable parameters row-sparse (MF, LightGCN)? DDP then refuses to wrap it, as it
    would reduce nothing (``RecModule`` adds a zero anchor parameter)."""
    sparse = {id(p) for p in row_sparse_parameters(module).values()}
    return not any(p.requires_grad and id(p) not in sparse for p in module.parameters())


def all_reduce_row_sparse(module: nn.Module) -> None:
    """Average the row-sparse gradients over the DDP processes (a sparse all-reduce: gloo supports it, NCCL does
    not), as DDP averages the dense ones; a process whose step read no row of a table sends an empty gradient."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for parameter in row_sparse_parameters(module).values():
        grad = parameter.grad
        if grad is None:
            empty = torch.zeros(1, 0, dtype=torch.long, device=parameter.device)
            grad = torch.sparse_coo_tensor(empty, parameter.new_zeros((0, *parameter.shape[1:])), parameter.shape)
        dist.all_reduce(grad)
        parameter.grad = grad / world


class LazyAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba, ICLR 2015) whose row-sparse gradients update only their rows ("lazy" Adam).

    A dense gradient gets Adam's update. A row-sparse one (:func:`recplug.core.ops.sampling.gather_rows`) updates
    the moments and weights of its rows only, with the parameter's step count for the bias correction, as
    ``torch.optim.SparseAdam`` and TensorFlow Addons' ``LazyAdam``; rows a step did not read keep their
    moments. ``SparseAdam`` refuses dense gradients (and measured on this 2-core machine, under load, it took
    1.5 s per step for 300k touched rows of a 600k x 64 table against 1.25 s here). ``weight_decay`` is L2
    added to the gradient of the touched rows, as Adam's. The update itself is PyTorch's fused Adam kernel
    (``torch.optim.adam.adam(fused=True)``) on the gathered rows: one pass instead of seven element-wise ones.

    Args:
        params: the parameters.
        lr: learning rate.
        betas: Adam's ``(β1, β2)``.
        eps: Adam's ``ε``.
        weight_decay: L2 coefficient.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self._check_settings({"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, "")
        if isinstance(params, Tensor):
            raise InvalidArgument(self, "params", "a tensor", "an iterable of parameters, or of parameter groups")
        params = list(params)
        if not params:
            raise InvalidArgument(self, "params", params, "a non-empty list of parameters, or of parameter groups")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._scratch_buffers: dict[tuple[torch.dtype, torch.device], Tensor] = {}  # scratch, never state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, the group's own ``lr``, ``betas``, ``eps`` and ``weight_decay`` checked
        as the defaults are (a group's ``lr: -1`` trained until the first step)."""
        if isinstance(param_group, dict):
            own = {key: param_group[key] for key in ("lr", "betas", "eps", "weight_decay") if key in param_group}
            self._check_settings(own, f"param_groups[{len(self.param_groups)}].")
        super().add_param_group(param_group)

    def _check_settings(self, settings: dict[str, Any], prefix: str) -> None:
        """Refuse a negative ``lr``, ``eps`` or ``weight_decay``, and ``betas`` other than two numbers in
        ``[0, 1)``; ``prefix`` names a parameter group's own settings."""
        for key in ("lr", "eps", "weight_decay"):
            if key in settings:
                check_number(self, f"{prefix}{key}", settings[key], 0)
        if "betas" in settings:
            betas = settings["betas"]
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise InvalidArgument(self, f"{prefix}betas", betas, "two numbers (beta1, beta2)")
            for beta in betas:
                check_number(self, f"{prefix}betas", beta, 0, 1, high_open=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)  # as fused Adam's
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                elif state["step"].device != p.device:  # loaded for a param on an accelerator: torch keeps it on CPU
                    state["step"] = state["step"].to(p.device, torch.float32)
                rows = None
                if p.grad.is_sparse:
                    rows, weight, grad, exp_avg, exp_avg_sq = self._gather_rows(p, state)
                else:
                    weight, grad, exp_avg, exp_avg_sq = p, p.grad, state["exp_avg"], state["exp_avg_sq"]
                # one fused kernel for the moments, the bias corrections and the update (it counts the step)
                adam([weight], [grad], [exp_avg], [exp_avg_sq], [], [state["step"]], fused=True, amsgrad=False,
                     beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                     maximize=False)
                if rows is not None:
                    state["exp_avg"].index_copy_(0, rows, exp_avg)
                    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                    p.index_copy_(0, rows, weight)
        return loss

    def _gather_rows(self, p: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The rows of ``p``'s row-sparse gradient, with their weights and moments read once into scratch tensors
        (written back by rows after the update: ``index_add_`` is single-threaded on CPU, ``index_copy_`` is not).
        Returns ``(rows, weight, grad, exp_avg, exp_avg_sq)``."""
        grad = p.grad
        rows = grad._indices()[0]
        if not grad.is_coalesced() and not bool((rows[1:] > rows[:-1]).all()):  # sorted distinct: as is
            grad = grad.coalesce()
            rows = grad.indices()[0]
        exp_avg, exp_avg_sq, weight = self._scratch(p, rows.numel())
        torch.index_select(p, 0, rows, out=weight)
        torch.index_select(state["exp_avg"], 0, rows, out=exp_avg)
        torch.index_select(state["exp_avg_sq"], 0, rows, out=exp_avg_sq)
        return rows, weight, grad._values(), exp_avg, exp_avg_sq

    def _scratch(self, like: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
        """Three ``[num_rows, ...]`` work tensors shaped as ``like``'s rows, from one buffer reused step after
        step (faster than fresh ~10 MB tensors each step in a CPU micro-bench: docs/scaling.md)."""
        shape = (num_rows, *like.shape[1:])
        size = math.prod(shape)
        key = (like.dtype, like.device)
        buffer = self._scratch_buffers.get(key)
        if buffer is None or buffer.numel() < 3 * size:
            buffer = self._scratch_buffers[key] = like.new_empty(3 * size + size // 2)  # headroom: row counts vary
        return buffer[:size].view(shape), buffer[size : 2 * size].view(shape), buffer[2 * size : 3 * size].view(shape)
