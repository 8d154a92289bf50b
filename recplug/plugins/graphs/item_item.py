"""The item-item semantic graph (frozen kNN on the raw features, rebuilt from the model's content, or both mixed)
and users' multimodal profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from recplug.core.model.components import GraphEncoder
from recplug.core.data.dataset import InteractionData
from recplug.core.errors import (
    ConfigError, InvalidArgument, check_count, check_flag, check_layers, check_number, check_weights,
)
from recplug.core.ops.knn import cached_knn_coo, knn_coo, knn_rows_and_values
from recplug.core.ops.sampling import SamplerCache
from recplug.core.ops.sparse import SparseOperator, check_backend, distinct_pairs, row_normalized
from recplug.core.model.sampled import NodeTables
from recplug.core.model.types import BPRBatch, GraphView, NodePlan, SampledBatch

CHOICES = {
    "source": ("content", "id", "both"),
    "learned_from": ("fused", "refined"),
    "profile_from": ("propagated", "input"),
    "profile_norm": ("mean", "symmetric"),
}


class ItemItemGraph(GraphEncoder):
    """Items propagated over a kNN semantic graph ``h = S^L x``; users as an aggregate of their items.

    Two choices are named apart: the features the *graph* is built on (``learned_weight``, ``learned_from``) and
    the node features the view *propagates* over it (``source``).

    * Frozen graph (FREEDOM, Zhou & Shen, MM 2023): per modality, the top-``k`` cosine neighbours on the raw
      features, each row weighted ``1/k``; ``S = Σ_m w_m S_m``. Built in chunks (never ``N x N``), cached
      under ``cache_dir/knn/<sha256 of features, k, weights>.pt``, rebuilt or reloaded at every setup (so a
      resumed run never propagates without it).
    * Rebuilt graph (LATTICE, Zhang et al., MM 2021): with ``learned_weight = w > 0``,
      ``S = (1-w) S_frozen + w S_learned``, where ``S_learned`` is the kNN graph (same chunked top-``k``) of the
      model's current, detached item content, rebuilt at the first training forward of every
      ``rebuild_every``-th epoch. ``learned_from: fused``: of the fused content (LATTICE's graph; its
      ``λ = 1 - w``, 0.9 in the paper). ``learned_from: refined``: one graph per modality on the fusion's
      refined modality features (hook ``recplug_refine``, e.g. RCA's ``X_m⁽ᴿ⁾``), mixed by ``weights`` as the
      frozen one: CRANE's pipeline "builds a semantic item graph from the refined representation" (arXiv
      2601.11151; reconstructed, research notes §3.4). ``w = 1``: the rebuilt graph alone (no raw-feature graph
      is built). Its neighbour lists are a buffer of the checkpoint, so a restored model uses the graph training
      last used.
    * Node features (``source``): the fused content ``f`` (``content``, CRANE §3.4; ``configs/crane_rca.yaml``),
      the item ID embeddings (``id``, FREEDOM; ``configs/crane.yaml``, chosen on validation on real sets), or
      their sum ``f + e_i`` (``both``: the CRANE figure's Item′ entering the item graph).
    * Users: with ``user_profiles``, ``p_u = Σ_{i ∈ N_u} a_ui y_i`` over training items (CRANE §3.5), where
      ``y = h`` (``profile_from: propagated``, as MGCN) or the node features ``x`` before propagation
      (``input``), and ``a_ui = 1/|N_u|`` (``profile_norm: mean``, LGMRec's user modality features) or
      ``1/sqrt(|N_u| |N_i|)`` (``symmetric``, MGCN's ``R_norm``); otherwise zeros, so the view only adds to items.
      With ``profile_leave_out`` (the default), a training step scores each positive ``(u, i)`` with the profile
      of ``N_u`` *without* ``i`` (the step's positives of ``u`` left out, ``|N_u|`` reduced to match), as FISM
      (Kabbur et al., KDD 2013) excludes the item being estimated: otherwise ``p_u`` contains ``y_i`` itself, the
      model learns that an item scores high when it is in the profile, and at test time, where no candidate is,
      it ranks worse as the training loss falls (measured on TikTok: validation Recall@20 0.043 at epoch 1,
      0.029 at epoch 7). Evaluation uses the whole profile.

    Args:
        name: view name (default ``"semantic"``).
        k: neighbours per item and modality.
        weights: ``{modality: w_m}`` (default: uniform over the data's modalities).
        source: node features propagated, ``"content"``, ``"id"`` or ``"both"``.
        num_layers: propagation hops ``L`` over ``S``.
        user_profiles: give users an aggregate of their training items (else zeros).
        profile_from: what users aggregate, ``"propagated"`` (``h``) or ``"input"`` (``x``).
        profile_norm: ``"mean"`` or ``"symmetric"``.
        profile_leave_out: leave each training step's positives out of their users' profiles (FISM).
        learned_weight: share ``w`` of the rebuilt graph (0: frozen graph only).
        learned_from: what the rebuilt graph is built on, ``"fused"`` or ``"refined"``.
        rebuild_every: epochs between two rebuilds of the learned graph.
        backend: sparse backend, ``"torch"`` or ``"torch_sparse"``.
    """

    def __init__(
        self,
        name: str = "semantic",
        k: int = 10,
        weights: dict[str, float] | None = None,
        source: Literal["content", "id", "both"] = "content",
        num_layers: int = 1,
        user_profiles: bool = True,
        profile_from: Literal["propagated", "input"] = "propagated",
        profile_norm: Literal["mean", "symmetric"] = "mean",
        profile_leave_out: bool = True,
        learned_weight: float = 0.0,
        learned_from: Literal["fused", "refined"] = "fused",
        rebuild_every: int = 1,
        backend: str = "torch",
    ) -> None:
        super().__init__(name)
        check_count(self, "k", k)
        check_layers(self, "num_layers", num_layers)
        chosen = {"source": source, "learned_from": learned_from, "profile_from": profile_from,
                  "profile_norm": profile_norm}
        for argument, value in chosen.items():
            if value not in CHOICES[argument]:
                raise InvalidArgument(self, argument, value, " or ".join(map(repr, CHOICES[argument])))
        check_number(self, "learned_weight", learned_weight, 0, 1)
        check_number(self, "rebuild_every", rebuild_every, 1, integer=True)
        if weights is not None:
            check_weights(self, "weights", weights)
        for argument, flag in (("user_profiles", user_profiles), ("profile_leave_out", profile_leave_out)):
            check_flag(self, argument, flag)
        self.k, self.source, self.num_layers = k, source, num_layers
        self.weights = dict(weights) if weights is not None else None
        self.user_profiles, self.profile_from, self.profile_norm = user_profiles, profile_from, profile_norm
        self.profile_leave_out = profile_leave_out
        self.learned_weight, self.learned_from, self.rebuild_every = learned_weight, learned_from, rebuild_every
        self.backend = check_backend(backend)
        self.num_users = self.num_items = 0
        self.frozen: SparseOperator | None = None  # (1-w) S_frozen; None when w = 1
        self.mixed: SparseOperator | None = None  # (1-w) S_frozen + w S_learned, one operator
        self.profiles: SparseOperator | None = None
        self._ready = False  # recplug_setup ran
        self._learned_built = False  # learned_cols holds a graph (built here or restored from a checkpoint)
        self._learned_stale = False  # set at each rebuild epoch (recplug_resample)
        self._samplers = SamplerCache()

    def recplug_build(self, num_users: int, num_items: int, feature_dims: dict[str, int]) -> None:
        self.num_users, self.num_items = num_users, num_items
        if self.weights is None:
            if not feature_dims:
                raise ConfigError(
                    "ItemItemGraph needs item modality features, but the data has none; remove it from "
                    "model.encoders or use data with item features"
                )
            self.weights = {m: 1.0 / len(feature_dims) for m in sorted(feature_dims)}
        unknown = sorted(set(self.weights) - set(feature_dims))
        if unknown:
            rule = f"keyed by the data's modalities {sorted(feature_dims)} (it lacks {unknown})"
            raise InvalidArgument(self, "weights", self.weights, rule)
        if self.learned_weight > 0:  # the rebuilt graph's neighbour lists, checkpointed (-1: none yet)
            self.register_buffer("learned_cols", torch.full((len(self._learned_weights()) * num_items * self.k,), -1))
            self._learned_built = False

    def recplug_check(self, has_content: bool, refines: bool) -> None:
        learned = self.learned_weight > 0
        if (self.source != "id" or (learned and self.learned_from == "fused")) and not has_content:
            raise ConfigError(
                "ItemItemGraph with source 'content' or 'both', or a learned graph from the fused content, needs "
                "item content: set model.fusion"
            )
        if learned and self.learned_from == "refined" and not refines:
            raise ConfigError(
                "ItemItemGraph with learned_from 'refined' needs a fusion that gives per-modality refined features "
                "(hook recplug_refine: RCAFusion, SumFusion, GatedFusion or TokenAttentionFusion; ConcatFusion "
                "has none)"
            )

    def recplug_setup(self, data: InteractionData, cache_dir: Path) -> None:
        assert self.weights is not None
        check_number(self, "k", self.k, 1, data.num_items, bounds="the number of items")
        self.frozen = None
        if self.learned_weight < 1:
            rows, cols, values = cached_knn_coo(data.features, self.k, self.weights, cache_dir)
            values = values * (1.0 - self.learned_weight)
            self.frozen = SparseOperator.from_coo(rows, cols, values, (self.num_items,) * 2, backend=self.backend)
            if self.learned_weight > 0:  # kept to be summed with each rebuilt graph into one operator
                self.register_buffer("frozen_rows", rows, persistent=False)
                self.register_buffer("frozen_cols", cols, persistent=False)
                self.register_buffer("frozen_values", values, persistent=False)
        self.profiles = None
        if self.user_profiles:
            users, items = distinct_pairs(*data.split("train"), self.num_items)
            self.register_buffer("user_degree", torch.bincount(users, minlength=self.num_users).float(), False)
            self.register_buffer("item_degree", torch.bincount(items, minlength=self.num_items).float(), False)
            self.profiles = self._profiles(users, items)
        self.mixed, self._ready = None, True  # a restored graph stays until the next rebuild epoch

    def _pair_weights(self, user_degree: Tensor, item_degree: Tensor) -> Tensor:
        """``a_ui`` of pairs whose user and item have these degrees: ``1/|N_u|`` (mean) or ``1/sqrt(|N_u| |N_i|)``."""
        if self.profile_norm == "mean":
            return user_degree.reciprocal()
        return (user_degree * item_degree).rsqrt()

    def _profiles(self, users: Tensor, items: Tensor) -> SparseOperator:
        """The ``[M, N]`` operator ``a_ui`` of the users' profiles over the distinct training pairs."""
        if self.profile_norm == "mean":
            return row_normalized(users, items, self.num_users, self.num_items, self.backend)
        values = self._pair_weights(self.user_degree[users], self.item_degree[items])
        return SparseOperator.from_coo(users, items, values, (self.num_users, self.num_items), backend=self.backend)

    def _leave_out(
        self, profiles: Tensor, pair_users: Tensor, pair_items: Tensor, item_rows: Tensor, user_degree: Tensor,
        item_degree: Tensor,
    ) -> Tensor:
        """The profiles with each user's step positives left out: ``p_u`` over ``N_u`` minus those items, with
        ``|N_u|`` reduced by their count (zeros for a user all of whose items are positives of the step).

        ``pair_users``/``pair_items`` index ``profiles`` and ``item_rows`` (the aggregated ``y`` of the step's
        items); ``user_degree``/``item_degree`` are their training degrees. Linear in ``profiles``, so it is also
        the unbiased leave-out estimate from a sampled profile."""
        keys = torch.unique(pair_users * item_rows.shape[0] + pair_items)  # each positive pair once
        users, items = keys // item_rows.shape[0], keys % item_rows.shape[0]
        left = user_degree - torch.bincount(users, minlength=profiles.shape[0]).to(user_degree)
        weight = self._pair_weights(user_degree[users], item_degree[items])
        removed = torch.zeros_like(profiles).index_add_(0, users, item_rows[items] * weight.unsqueeze(1).to(item_rows))
        rescale = user_degree / left.clamp(min=1)  # undo 1/|N_u|, redo it without the left-out items
        rescale = rescale if self.profile_norm == "mean" else rescale.sqrt()
        rescale = torch.where(left > 0, rescale, torch.zeros_like(rescale))
        return (profiles - removed) * rescale.unsqueeze(1).to(profiles)

    def recplug_resample(self, epoch: int) -> None:
        if epoch % self.rebuild_every == 0:
            self._learned_stale = True

    def _learned_weights(self) -> dict[str, float]:
        """``{features: share}`` of the rebuilt graph's parts (one for the fused content, one per modality)."""
        if self.learned_from == "fused":
            return {"fused": self.learned_weight}
        assert self.weights is not None
        return {m: self.learned_weight * w for m, w in self.weights.items()}

    def _refresh_learned(self, content: Tensor | None, refined: Callable[[], dict[str, Tensor]] | None) -> None:
        """Rebuild the learned graph: kNN of the detached fused content or refined modality features."""
        with torch.no_grad():
            if self.learned_from == "fused":
                assert content is not None
                features = {"fused": content.detach()}
            else:
                assert refined is not None
                features = refined()
                missing = sorted(set(self._learned_weights()) - set(features))
                if missing:
                    raise ConfigError(
                        f"ItemItemGraph: weights name modalities {missing} the fusion does not refine (it gives "
                        f"{sorted(features)}); set weights to the fusion's modalities"
                    )
            _, cols, _ = knn_coo({m: x.detach() for m, x in features.items()}, self.k, self._learned_weights())
            self.learned_cols.copy_(cols)
        self._learned_built, self._learned_stale, self.mixed = True, False, None

    def _mixed(self) -> SparseOperator:
        """``(1-w) S_frozen + w S_learned`` as one operator, so each hop is one sparse product."""
        if self.mixed is None:
            cols = self.learned_cols
            rows, values = knn_rows_and_values(self.num_items, self.k, self._learned_weights(), cols.device)
            if self.frozen is not None:
                rows = torch.cat([self.frozen_rows, rows])
                cols = torch.cat([self.frozen_cols, cols])
                values = torch.cat([self.frozen_values, values.to(self.frozen_values)])
            self.mixed = SparseOperator.from_coo(rows, cols, values, (self.num_items,) * 2, backend=self.backend)
        return self.mixed

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, *args: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args)
        key = f"{prefix}learned_cols"
        if self.learned_weight > 0:
            if key in missing_keys:  # a checkpoint from before the graph was saved: rebuild it at the next forward
                missing_keys.remove(key)
            self._learned_built = key in state_dict and bool(state_dict[key].min() >= 0)
            self.mixed = None

    def recplug_encode(
        self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None,
        refined: Callable[[], dict[str, Tensor]] | None = None, targets: BPRBatch | None = None,
    ) -> GraphView:
        if not self._ready:
            raise RuntimeError("ItemItemGraph: no kNN graph yet; recplug_setup (RecModule.prepare) must run first")
        if self.learned_weight > 0:
            if not self._learned_built or (self._learned_stale and self.training):
                self._refresh_learned(content, refined)
            graph = self._mixed()
        else:
            assert self.frozen is not None
            graph = self.frozen
        if self.source == "id":
            inputs = ego_items
        else:
            assert content is not None
            inputs = content if self.source == "content" else content + ego_items
        items = inputs
        for _ in range(self.num_layers):
            items = graph(items)
        if self.profiles is not None:
            aggregated = items if self.profile_from == "propagated" else inputs
            users = self.profiles(aggregated)
            if self.profile_leave_out and targets is not None:
                users = self._leave_out(users, targets.users, targets.pos_items, aggregated, self.user_degree,
                                        self.item_degree)
        else:  # a stride-0 view: no [M, d] allocation per forward
            users = items.new_zeros(1, items.shape[1]).expand(self.num_users, -1)
        return GraphView(self.view_name, users, items)

    # ------------------------------------------------------------------ sampled mode
    def sampling_refusal(self) -> str | None:
        if self.learned_weight > 0:
            return "the learned graph (learned_weight > 0, LATTICE's) is a kNN over every item's current content"
        return None

    @property
    def sampled_hops(self) -> int:
        """``num_layers`` item-item hops (``fanouts[:L]``), then the users' profile hop (``fanouts[L]``)."""
        return self.num_layers + int(self.user_profiles)

    def sample(self, batch: SampledBatch) -> NodePlan:
        """The users' sampled profile items, then the ``L``-hop kNN neighbourhood of those and the batch's items."""
        if self.frozen is None:
            raise RuntimeError("ItemItemGraph: no kNN graph yet; recplug_setup (RecModule.prepare) must run first")
        seeds, profile = batch.items, None
        if self.profiles is not None:
            sampler = self._samplers.sampler("profiles", self.profiles, [batch.fanouts[self.num_layers]], batch.engine)
            profile = sampler.sample(batch.users, batch.generator, batch.budget).sources()
            seeds = torch.unique(torch.cat([batch.items, profile[0]]))
        knn = self._samplers.sampler("knn", self.frozen, list(batch.fanouts[: self.num_layers]), batch.engine)
        sampled = knn.sample(seeds, batch.generator, batch.budget)
        nodes = sampled.nodes
        return NodePlan(
            items=nodes if self.source != "content" else None, content=nodes if self.source != "id" else None,
            graph=(sampled, seeds, batch, profile),
        )

    def encode_sampled(self, plan: NodePlan, tables: NodeTables) -> GraphView:
        sampled, seeds, batch, profile = plan.graph  # type: ignore[misc]
        nodes = sampled.nodes
        if self.source == "id":
            inputs = tables.items(nodes)
        else:
            inputs = tables.content(nodes) if self.source == "content" else tables.content(nodes) + tables.items(nodes)
        items = inputs
        for operator in sampled.layers:
            items = operator.to(items.device)(items[: operator.shape[1]])
        seeds = seeds.to(items.device)
        batch_items = items.index_select(0, torch.searchsorted(seeds, batch.items.to(items.device)))
        if profile is None:
            users = items.new_zeros(1, items.shape[1]).expand(batch.users.numel(), -1)
        else:
            profile_items, operator = profile
            source = items if self.profile_from == "propagated" else inputs[: seeds.numel()]
            rows = source.index_select(0, torch.searchsorted(seeds, profile_items.to(items.device)))
            users = operator.to(rows.device)(rows)
            if self.profile_leave_out and batch.positives is not None:
                batch_rows = source.index_select(0, torch.searchsorted(seeds, batch.items.to(items.device)))
                pair_users, pair_items = (t.to(items.device) for t in batch.positives)
                user_degree = self.user_degree.index_select(0, batch.users.to(self.user_degree.device))
                item_degree = self.item_degree.index_select(0, batch.items.to(self.item_degree.device))
                users = self._leave_out(users, pair_users, pair_items, batch_rows, user_degree.to(items.device),
                                        item_degree.to(items.device))
        return GraphView(self.view_name, users, batch_items)
