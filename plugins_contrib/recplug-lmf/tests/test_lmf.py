"""GMUFusion: shapes, gates, the bimodal special case, gradients, and wiring into a recplug model."""

from __future__ import annotations

import pytest
import torch

from recplug import InteractionData, RecModule
from recplug.testing import check_component, hooks_implemented, make_tiny_data
from recplug.plugins import ConcatCombiner, ContentView, IdEmbedding
from recplug_gmu import GMUFusion


@pytest.fixture(scope="module")
def tiny_data() -> InteractionData:
    return make_tiny_data()


def built(data: InteractionData, **kwargs: object) -> GMUFusion:
    fusion = GMUFusion(**kwargs)
    fusion.recplug_build(num_items=data.num_items, feature_dims=data.feature_dims, embedding_dim=16)
    fusion.recplug_setup(data=data)
    return fusion


def test_implements_the_fusion_hooks() -> None:
    assert {"recplug_build", "recplug_fuse", "recplug_setup"} <= set(hooks_implemented(GMUFusion))


@pytest.mark.parametrize("modalities", [None, ["image"], ["text", "image"]])
def test_output_shape_and_gates_sum_to_one(tiny_data: InteractionData, modalities: list[str] | None) -> None:
    fusion = built(tiny_data, modalities=modalities)
    assert fusion.recplug_fuse().shape == (tiny_data.num_items, 16)
    gates = fusion.gates()
    assert gates.shape == (tiny_data.num_items, len(modalities or tiny_data.features), 16)
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(tiny_data.num_items, 16))


def test_two_modalities_is_the_papers_sigmoid_gate(tiny_data: InteractionData) -> None:
    fusion = built(tiny_data)
    x_i, x_t = fusion.features()["image"], fusion.features()["text"]
    logits = fusion.gate(torch.cat([x_i, x_t], 1)).view(-1, 2, 16)
    z = torch.sigmoid(logits[:, 0] - logits[:, 1])
    expected = z * torch.tanh(fusion.hidden["image"](x_i)) + (1 - z) * torch.tanh(fusion.hidden["text"](x_t))
    torch.testing.assert_close(fusion.recplug_fuse(), expected)


def test_gradients_reach_every_weight(tiny_data: InteractionData) -> None:
    fusion = built(tiny_data, trainable_features=True)
    fusion.recplug_fuse().square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())


def test_in_a_model_through_the_plugin_manager(tiny_data: InteractionData) -> None:
    model = RecModule(
        tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, embedding_dim=16,
        encoders=[IdEmbedding(), ContentView()], fusion=GMUFusion(dropout=0.1), combiner=ConcatCombiner(),
    )
    model.prepare(tiny_data)
    assert model.pm.providers("recplug_fuse") == ["model.fusion"]
    out = model()
    assert out.content.shape == (tiny_data.num_items, 16) and out.items.shape == (tiny_data.num_items, 32)
    assert model.fusion.extra_repr() == "trainable_features=False, modalities=None, dropout=0.1"


def test_conforms_to_recplug(tiny_data: InteractionData) -> None:
    """recplug's own conformance check: repr, shapes, a gradient to every weight, a restored copy that
    reproduces the trained model."""
    check_component(GMUFusion(dropout=0.1), tiny_data)
    check_component(GMUFusion(trainable_features=True), tiny_data)
