"""The user-item interaction graph: LightGCN propagation, optionally with FREEDOM's edge pruning."""

from __future__ import annotations

import torch
from torch import Tensor

from recplug.core.model.components import GraphEncoder
from recplug.core.data.dataset import InteractionData
from recplug.core.errors import check_layers, check_probability
from recplug.core.ops.sampling import SampledGraph, SamplerCache, propagate_mean
from recplug.core.ops.sparse import SparseOperator, check_backend, distinct_pairs, normalized_adjacency
from recplug.core.model.sampled import NodeTables
from recplug.core.model.types import GraphView, NodePlan, SampledBatch


def degree_sensitive_sample(users: Tensor, items: Tensor, keep: int, generator: torch.Generator) -> Tensor:
    """Indices of ``keep`` edges drawn without replacement with probability ``∝ 1/sqrt(d_u d_i)``.

    FREEDOM's degree-sensitive edge pruning (Zhou & Shen, MM 2023, §3.3). Gumbel top-k: the ``keep`` largest
    ``log w_e + G_e`` (``G_e`` standard Gumbel) are an exact weighted sample without replacement, vectorised.
    """
    deg_u = torch.bincount(users).float()
    deg_i = torch.bincount(items).float()
    log_w = -0.5 * (deg_u[users].log() + deg_i[items].log())
    uniform = torch.rand(users.shape, generator=generator).clamp_(min=1e-12).to(users.device)
    gumbel = -torch.log(-torch.log(uniform))
    return (log_w + gumbel).topk(keep, sorted=False).indices


class UserItemGraph(GraphEncoder):
    """LightGCN on the ID embeddings: ``E⁽ˡ⁺¹⁾ = Â E⁽ˡ⁾``, output the layer mean ``(1/(L+1)) Σ_l E⁽ˡ⁾``.

    LightGCN (He et al., SIGIR 2020) with ``Â = D^-1/2 A D^-1/2`` over the training interactions (no self-loops,
    no non-linearity). With ``edge_drop = ρ > 0``, each training epoch propagates over ``⌊(1-ρ)|E|⌋`` edges
    sampled ``∝ 1/sqrt(d_u d_i)`` and renormalised with their own degrees (FREEDOM, Zhou & Shen, MM 2023); the
    full graph is used in evaluation. CRANE's behavioural view (arXiv 2601.11151, §3.6). In sampled mode
    (``model.sampling``) the nodes ``h`` hops from the batch's keep ``fanouts[h]`` neighbours of this epoch's
    graph (:mod:`recplug.core.ops.sampling`).

    Args:
        name: view name (default ``"behavior"``).
        num_layers: propagation layers ``L``.
        edge_drop: FREEDOM's pruning ratio ``ρ`` in ``[0, 1)`` (0: no pruning).
        backend: sparse backend, ``"torch"`` or ``"torch_sparse"``.
    """

    def __init__(self, name: str = "behavior", num_layers: int = 3, edge_drop: float = 0.0, backend: str = "torch") -> None:
        super().__init__(name)
        check_layers(self, "num_layers", num_layers)
        check_probability(self, "edge_drop", edge_drop)
        self.num_layers, self.edge_drop, self.backend = num_layers, edge_drop, check_backend(backend)
        self.num_users = self.num_items = 0
        self.adjacency: SparseOperator | None = None
        self.pruned: SparseOperator | None = None
        self._samplers = SamplerCache()

    def recplug_build(self, num_users: int, num_items: int) -> None:
        self.num_users, self.num_items = num_users, num_items

    def recplug_setup(self, data: InteractionData) -> None:
        users, items = distinct_pairs(*data.split("train"), data.num_items)
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.adjacency = normalized_adjacency(self.edge_users, self.edge_items, self.num_users, self.num_items, self.backend)
        self.pruned = None

    def recplug_resample(self, generator: torch.Generator) -> None:
        if self.edge_drop == 0.0:
            return
        self._require_graph()
        keep = int((1.0 - self.edge_drop) * self.edge_users.numel())
        kept = degree_sensitive_sample(self.edge_users, self.edge_items, keep, generator)
        self.pruned = normalized_adjacency(
            self.edge_users[kept], self.edge_items[kept], self.num_users, self.num_items, self.backend
        )

    def _require_graph(self) -> SparseOperator:
        if self.adjacency is None:
            raise RuntimeError(f"{type(self).__name__}: no graph yet; recplug_setup (RecModule.prepare) must run first")
        return self.adjacency

    def graph(self) -> SparseOperator:
        """The adjacency this pass uses: this epoch's pruned graph in training, the full graph otherwise."""
        full = self._require_graph()
        if not self.training or self.edge_drop == 0.0:
            return full
        if self.pruned is None:  # training outside a trainer epoch (no resample yet): draw a reproducible one
            self.recplug_resample(torch.Generator().manual_seed(0))
        return self.pruned

    def propagate(self, ego_users: Tensor, ego_items: Tensor) -> tuple[Tensor, Tensor]:
        """The layer-mean ``(users [M, d], items [N, d])`` of LightGCN."""
        adjacency = self.graph()
        layer = torch.cat([ego_users, ego_items])
        total = layer
        for _ in range(self.num_layers):
            layer = adjacency(layer)
            total = total + layer
        mean = total / (self.num_layers + 1)
        return mean[: self.num_users], mean[self.num_users :]

    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor) -> GraphView:
        users, items = self.propagate(ego_users, ego_items)
        return GraphView(self.view_name, users, items)

    # ------------------------------------------------------------------ sampled mode
    def sampling_refusal(self) -> None:
        return None

    @property
    def sampled_hops(self) -> int:
        return self.num_layers

    def sample(self, batch: SampledBatch) -> NodePlan:
        """The ``num_layers``-hop neighbourhood of the batch's users and items on this epoch's graph."""
        graph, fanouts = self.graph(), list(batch.fanouts[: self.num_layers])
        seeds = torch.cat([batch.users, batch.items + self.num_users])
        sampled = self._samplers.sampler("graph", graph, fanouts, batch.engine).sample(seeds, batch.generator,
                                                                                     batch.budget)
        is_user = sampled.nodes < self.num_users
        users, items = sampled.nodes[is_user], sampled.nodes[~is_user] - self.num_users
        return NodePlan(users=users, items=items, graph=(sampled, batch.users.numel()))

    def encode_sampled(self, plan: NodePlan, tables: NodeTables) -> GraphView:
        sampled, num_users = plan.graph  # type: ignore[misc]
        seeds = self.propagate_sampled(sampled, tables.users_and_items(sampled.nodes, self.num_users))
        return GraphView(self.view_name, seeds[:num_users], seeds[num_users:])

    def propagate_sampled(self, sampled: SampledGraph, inputs: Tensor) -> Tensor:
        """:meth:`propagate` on the seeds of a sampled neighbourhood, from its nodes' inputs ``[n, d]``."""
        return propagate_mean(sampled, inputs)
