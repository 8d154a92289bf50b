"""NGCF's user-item graph convolution (Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplug.core.errors import check_probability
from recplug.core.ops.sampling import SampledGraph
from recplug.plugins.graphs.user_item import UserItemGraph


class NGCFGraph(UserItemGraph):
    """NGCF: ``E⁽ˡ⁺¹⁾ = LeakyReLU((Â + I) E⁽ˡ⁾ W₁ + (Â E⁽ˡ⁾ ⊙ E⁽ˡ⁾) W₂)``, message dropout, each layer
    L2-normalised, output ``[E⁽⁰⁾ ‖ ... ‖ E⁽ᴸ⁾]`` (width ``d (L+1)``), as in the paper's Eq. 7-9 and GRecX.

    Args:
        name: view name (default ``"behavior"``).
        num_layers: propagation layers ``L``.
        message_dropout: dropout on each layer's messages during training (the paper's 0.1).
        edge_drop: FREEDOM-style degree-sensitive edge pruning ratio (0: none; NGCF's node dropout differs).
        backend: sparse backend, ``"torch"`` or ``"torch_sparse"``.
    """

    def __init__(
        self, name: str = "behavior", num_layers: int = 3, message_dropout: float = 0.1, edge_drop: float = 0.0,
        backend: str = "torch",
    ) -> None:
        super().__init__(name, num_layers, edge_drop, backend)
        check_probability(self, "message_dropout", message_dropout)
        self.message_dropout = message_dropout
        self.dropout = nn.Dropout(message_dropout)

    def recplug_build(self, num_users: int, num_items: int, embedding_dim: int) -> None:
        super().recplug_build(num_users, num_items)
        self.sum_weights = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(self.num_layers))
        self.product_weights = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(self.num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in [*self.sum_weights, *self.product_weights]:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _layer(self, index: int, neighbours: Tensor, layer: Tensor) -> Tensor:
        """Layer ``index + 1`` (Eq. 7-8) from ``Â E⁽ˡ⁾`` and ``E⁽ˡ⁾``, before its L2 normalisation."""
        w_sum, w_product = self.sum_weights[index], self.product_weights[index]
        layer = F.leaky_relu(w_sum(neighbours + layer) + w_product(neighbours * layer), negative_slope=0.2)
        return self.dropout(layer)

    def propagate(self, ego_users: Tensor, ego_items: Tensor) -> tuple[Tensor, Tensor]:
        adjacency = self.graph()
        layer = torch.cat([ego_users, ego_items])
        outputs = [layer]
        for index in range(self.num_layers):
            layer = self._layer(index, adjacency(layer), layer)
            outputs.append(F.normalize(layer, dim=1))
        joined = torch.cat(outputs, dim=1)
        return joined[: self.num_users], joined[self.num_users :]

    def propagate_sampled(self, sampled: SampledGraph, inputs: Tensor) -> Tensor:
        layer, outputs = inputs, [inputs[: sampled.num_seeds]]
        for index, operator in enumerate(sampled.layers):
            layer = layer[: operator.shape[1]]
            layer = self._layer(index, operator.to(layer.device)(layer), layer[: operator.shape[0]])
            outputs.append(F.normalize(layer[: sampled.num_seeds], dim=1))
        return torch.cat(outputs, dim=1)
