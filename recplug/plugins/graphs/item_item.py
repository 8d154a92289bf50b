"""The item-item semantic graph (frozen kNN, optionally mixed with a learned one) and users' profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from recplug.core.model.components import GraphEncoder
from recplug.core.data.dataset import InteractionData
from recplug.core.errors import ConfigError, InvalidArgument, check_layers, check_number
from recplug.core.ops.knn import cached_knn_coo, knn_coo
from recplug.core.ops.sparse import SparseOperator, check_backend, row_normalized
from recplug.core.model.types import GraphView


class ItemItemGraph(GraphEncoder):
    """Items propagated over a kNN semantic graph ``h = S^L x``; users as the mean of their items' ``h``.

    * Frozen graph (FREEDOM, Zhou & Shen, MM 2023): per modality, the top-``k`` cosine neighbours on the raw
      features, each row weighted ``1/k``; ``S = Σ_m w_m S_m``. Built in chunks (never ``N x N``), cached
      under ``cache_dir/knn/<sha256 of features, k, weights>.pt``, rebuilt or reloaded at every setup (so a
      resumed run never propagates without it).
    * Learned graph (LATTICE, Zhang et al., MM 2021): with ``learned_weight = w > 0``,
      ``S = (1-w) S_frozen + w S_learned``, where ``S_learned`` is the kNN graph of the detached fused content,
      recomputed at the first forward of every training epoch (LATTICE's ``λ = 1 - w``, 0.9 in the paper).
    * Node features: the fused content (``source: content``, CRANE arXiv 2601.11151 §3.4) or the item ID
      embeddings (``source: id``, FREEDOM).
    * Users: with ``user_profiles``, ``p_u = (1/|N_u|) Σ_{i ∈ N_u} h_i`` over training items (CRANE §3.5, as
      LGMRec's user modality features); otherwise zeros, so the view only adds to items.

    Args:
        name: view name (default ``"semantic"``).
        k: neighbours per item and modality.
        weights: ``{modality: w_m}`` (default: uniform over the data's modalities).
        source: ``"content"`` or ``"id"``.
        num_layers: propagation hops ``L`` over ``S``.
        user_profiles: give users the mean of their training items' ``h`` (else zeros).
        learned_weight: share ``w`` of the learned graph (0: frozen graph only).
        backend: sparse backend, ``"torch"`` or ``"torch_sparse"``.
    """

    def __init__(
        self,
        name: str = "semantic",
        k: int = 10,
        weights: dict[str, float] | None = None,
        source: Literal["content", "id"] = "content",
        num_layers: int = 1,
        user_profiles: bool = True,
        learned_weight: float = 0.0,
        backend: str = "torch",
    ) -> None:
        super().__init__(name)
        check_number(self, "k", k, 1)
        check_layers(self, "num_layers", num_layers)
        if source not in ("content", "id"):
            raise ConfigError(f"ItemItemGraph: source must be 'content' or 'id', got {source!r}")
        check_number(self, "learned_weight", learned_weight, 0, 1)
        if weights is not None and not weights:
            raise InvalidArgument(self, "weights", weights, "a {modality: weight} mapping with at least one entry")
        for modality, weight in (weights or {}).items():
            check_number(self, f"weights.{modality}", weight, 0)
        self.k, self.source, self.num_layers = k, source, num_layers
        self.weights = dict(weights) if weights is not None else None
        self.user_profiles, self.learned_weight = user_profiles, learned_weight
        self.backend = check_backend(backend)
        self.num_users = self.num_items = 0
        self.frozen: SparseOperator | None = None
        self.mixed: SparseOperator | None = None  # (1-w) S_frozen + w S_learned, one operator
        self.profiles: SparseOperator | None = None
        self._learned_stale = True

    def recplug_build(self, num_users: int, num_items: int, feature_dims: dict[str, int]) -> None:
        self.num_users, self.num_items = num_users, num_items
        if self.weights is None:
            if not feature_dims:
                raise ConfigError("ItemItemGraph needs item modality features, but the data has none")
            self.weights = {m: 1.0 / len(feature_dims) for m in sorted(feature_dims)}
        unknown = sorted(set(self.weights) - set(feature_dims))
        if unknown:
            rule = f"keyed by the data's modalities {sorted(feature_dims)} (it lacks {unknown})"
            raise InvalidArgument(self, "weights", self.weights, rule)

    def recplug_check(self, has_content: bool) -> None:
        if (self.source == "content" or self.learned_weight > 0) and not has_content:
            raise ConfigError(
                "ItemItemGraph with source 'content' or a learned graph needs item content: set model.fusion"
            )

    def recplug_setup(self, data: InteractionData, cache_dir: Path) -> None:
        assert self.weights is not None
        check_number(self, "k", self.k, 1, data.num_items, bounds="the number of items")
        rows, cols, values = cached_knn_coo(data.features, self.k, self.weights, cache_dir)
        frozen_share = 1.0 - self.learned_weight
        self.frozen = SparseOperator.from_coo(
            rows, cols, values * frozen_share, (self.num_items, self.num_items), backend=self.backend
        )
        if self.learned_weight > 0:  # kept to be summed with each epoch's learned graph into one operator
            self.register_buffer("frozen_rows", rows, persistent=False)
            self.register_buffer("frozen_cols", cols, persistent=False)
            self.register_buffer("frozen_values", values * frozen_share, persistent=False)
        if self.user_profiles:
            users, items = data.split("train")
            self.profiles = row_normalized(users, items, self.num_users, self.num_items, self.backend)
        self.mixed, self._learned_stale = None, True

    def recplug_resample(self) -> None:
        self._learned_stale = True

    def _refresh_learned(self, content: Tensor) -> None:
        """LATTICE's learned graph (kNN of the detached fused content, once per training epoch), summed with the
        frozen one into a single operator, so each hop is one sparse product."""
        rows, cols, values = knn_coo({"content": content.detach()}, self.k, {"content": self.learned_weight})
        self.mixed = SparseOperator.from_coo(
            torch.cat([self.frozen_rows, rows.to(self.frozen_rows.device)]),
            torch.cat([self.frozen_cols, cols.to(self.frozen_cols.device)]),
            torch.cat([self.frozen_values, values.to(self.frozen_values)]),
            (self.num_items, self.num_items), backend=self.backend,
        )
        self._learned_stale = False

    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None) -> GraphView:
        if self.frozen is None:
            raise RuntimeError("ItemItemGraph: no kNN graph yet; recplug_setup (RecModule.prepare) must run first")
        if self.learned_weight > 0 and (self.mixed is None or (self._learned_stale and self.training)):
            self._refresh_learned(content)
        graph = self.mixed if self.learned_weight > 0 else self.frozen
        items = content if self.source == "content" else ego_items
        for _ in range(self.num_layers):
            items = graph(items)
        if self.profiles is not None:
            users = self.profiles(items)
        else:  # a stride-0 view: no [M, d] allocation per forward
            users = items.new_zeros(1, items.shape[1]).expand(self.num_users, -1)
        return GraphView(self.view_name, users, items)
