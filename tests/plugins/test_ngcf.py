"""NGCF encoder: the paper's layer against a dense computation, width, gradients, repr."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recplug.core.model.module import RecModule
from recplug.plugins.graphs.ngcf import NGCFGraph
from test_sparse import dense_adjacency


def test_ngcf_layers_match_dense_and_concatenate(tiny_data, tmp_path):
    encoder = NGCFGraph(num_layers=2, message_dropout=0.0)
    model = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, 8, encoders=[encoder])
    model.prepare(tiny_data, tmp_path)
    out = model()
    a = dense_adjacency(*tiny_data.split("train"), tiny_data.num_users, tiny_data.num_items)
    layer = torch.cat([out.ego_users, out.ego_items])
    layers = [layer]
    for w1, w2 in zip(encoder.sum_weights, encoder.product_weights):
        side = a @ layer
        layer = F.leaky_relu(w1(side + layer) + w2(side * layer), 0.2)
        layers.append(F.normalize(layer, dim=1))
    joined = torch.cat(layers, 1)
    assert out.users.shape == (tiny_data.num_users, 24)
    torch.testing.assert_close(out.items, joined[tiny_data.num_users :])
    out.users.sum().backward()
    assert encoder.sum_weights[0].weight.grad.abs().sum() > 0 and model.item_embedding.weight.grad.abs().sum() > 0


def test_ngcf_repr():
    assert repr(NGCFGraph()).startswith(
        "NGCFGraph(\n  name='behavior', num_layers=3, message_dropout=0.1, edge_drop=0.0, backend='torch'"
    )
