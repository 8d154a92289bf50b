"""LMFFusion: the low-rank form against the full tensor fusion it factorises, items kept apart, the refined
features, errors, reset and repr, and wiring into a recplug model."""

from __future__ import annotations

import types

import pytest
import torch

from recplug import ConfigError, InteractionData, RecModule
from recplug.plugins import ConcatCombiner, ContentView, IdEmbedding, SumCombiner
from recplug.plugins.graphs import ItemItemGraph
from recplug.testing import check_component, hooks_implemented, make_tiny_data
from recplug_lmf import LMFFusion

D = 6


@pytest.fixture(scope="module")
def tiny_data() -> InteractionData:
    return make_tiny_data()


def features(num_items: int = 20, dims: tuple[int, ...] = (4, 3, 5), seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"m{k}": torch.randn(num_items, dim, generator=generator) for k, dim in enumerate(dims)}


def built(feats: dict[str, torch.Tensor], embedding_dim: int = D, **kwargs: object) -> LMFFusion:
    fusion = LMFFusion(**kwargs)
    num_items = len(next(iter(feats.values())))
    fusion.recplug_build(num_items=num_items, feature_dims={m: x.shape[1] for m, x in feats.items()},
                         embedding_dim=embedding_dim)
    fusion.recplug_setup(data=types.SimpleNamespace(features=feats))
    return fusion


def tensor_fusion(fusion: LMFFusion) -> torch.Tensor:
    """The paper's ``h = W · Z`` with ``Z = ⊗_m [x_m ; 1]`` and the full weight tensor
    ``W = Σ_i ⊗_m w_m^(i)`` assembled from the factors: ``[N, d]``, by brute force."""
    feats = fusion.features()
    letters = "abcdefgh"[: len(feats)]
    extended = [torch.cat([x, x.new_ones(len(x), 1)], 1) for x in feats.values()]
    z = torch.einsum(",".join(f"n{c}" for c in letters) + "->n" + letters, *extended)  # [N, d_1+1, ..., d_M+1]
    factors = list(fusion.factors.values())  # each [r, d_m + 1, d]
    w = torch.einsum(",".join(f"r{c}o" for c in letters) + f"->o{letters}", *factors)  # [d, d_1+1, ..., d_M+1]
    return torch.einsum(f"n{letters},o{letters}->no", z, w)


def test_implements_the_fusion_hooks() -> None:
    assert {"recplug_build", "recplug_fuse", "recplug_refine", "recplug_setup"} <= set(hooks_implemented(LMFFusion))


@pytest.mark.parametrize("dims", [(4, 3), (4, 3, 5)], ids=["two_modalities", "three_modalities"])
@pytest.mark.parametrize("rank", [1, 3])
def test_is_the_tensor_fusion_with_the_low_rank_weight(dims: tuple[int, ...], rank: int) -> None:
    fusion = built(features(dims=dims), rank=rank).double()  # the brute force sums many products: in double
    torch.testing.assert_close(fusion.recplug_fuse(), tensor_fusion(fusion))


def test_rank_one_bimodal_is_a_product_of_two_affine_maps() -> None:
    feats = features(dims=(4, 3))
    fusion = built(feats, rank=1)
    (a, b), (x, y) = [f[0] for f in fusion.factors.values()], feats.values()  # a: [5, d], b: [4, d]
    torch.testing.assert_close(fusion.recplug_fuse(), (x @ a[:-1] + a[-1]) * (y @ b[:-1] + b[-1]))


def test_items_are_fused_apart_and_gradients_reach_every_factor() -> None:
    feats = features(num_items=30)
    fusion = built(feats, rank=2, trainable_features=True)
    before = fusion.recplug_fuse().detach()
    changed = {m: x.clone() for m, x in feats.items()}
    changed["m1"][1:] = torch.randn(29, 3)
    fused = built(changed, rank=2)
    fused.factors.load_state_dict(fusion.factors.state_dict())
    after = fused.recplug_fuse()
    torch.testing.assert_close(after[0], before[0])  # item 0 sees only its own features: no [N, N] anywhere
    assert not torch.allclose(after[1:], before[1:])
    fusion.recplug_fuse().square().sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_refined_features_are_the_factor_outputs_the_fusion_multiplies() -> None:
    feats = features()
    fusion = built(feats, rank=3)
    refined = fusion.recplug_refine()
    assert list(refined) == ["m0", "m1", "m2"] and all(r.shape == (20, 3 * D) for r in refined.values())
    product = refined["m0"] * refined["m1"] * refined["m2"]
    torch.testing.assert_close(fusion.recplug_fuse(), product.view(20, 3, D).sum(1))


def test_dropout_reset_parameters_errors_and_repr() -> None:
    fusion = built(features(), rank=2, dropout=0.5)
    fusion.eval()
    first = fusion.recplug_fuse()
    torch.testing.assert_close(fusion.recplug_fuse(), first)  # no dropout in evaluation mode
    fusion.train()
    assert not torch.allclose(fusion.recplug_fuse(), first)
    before = {n: p.detach().clone() for n, p in fusion.named_parameters()}
    fusion.reset_parameters()
    assert all(not torch.equal(before[n], p) for n, p in fusion.named_parameters())
    assert fusion.extra_repr() == "rank=2, trainable_features=False, modalities=None, dropout=0.5"
    assert repr(LMFFusion(modalities=["m1", "m0"])).startswith(
        "LMFFusion(\n  rank=4, trainable_features=False, modalities=['m1', 'm0'], dropout=0.0\n")
    for kwargs, message in [({"rank": 0}, r"rank must be in \[1, 100000\], got 0"),
                            ({"rank": 2.5}, r"rank must be an integer in \[1, 100000\], got 2.5"),
                            ({"rank": 10**9}, r"rank must be in \[1, 100000\], got 1000000000"),
                            ({"dropout": 1.0}, r"dropout must be in \[0, 1\)")]:
        with pytest.raises(ConfigError, match=message):
            LMFFusion(**kwargs)
    with pytest.raises(ConfigError, match="LMFFusion needs at least 2 item modalities"):
        built(features(dims=(4,)))
    with pytest.raises(ConfigError, match="LMFFusion needs at least 2 item modalities"):
        built(features(), modalities=["m2"])


def test_in_a_model_through_the_plugin_manager(tiny_data: InteractionData) -> None:
    model = RecModule(
        tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, embedding_dim=16,
        encoders=[IdEmbedding(), ContentView()], fusion=LMFFusion(rank=2, dropout=0.1), combiner=ConcatCombiner(),
    )
    model.prepare(tiny_data)
    assert model.pm.providers("recplug_fuse") == ["model.fusion"]
    out = model()
    assert out.content.shape == (tiny_data.num_items, 16) and out.items.shape == (tiny_data.num_items, 32)


def test_conforms_to_recplug(tiny_data: InteractionData) -> None:
    """recplug's own conformance check: repr, shapes, a gradient to every weight, a restored copy that
    reproduces the trained model; the last one with an item graph rebuilt from the refined features."""
    check_component(LMFFusion(dropout=0.1), tiny_data)
    check_component(LMFFusion(rank=1, trainable_features=True), tiny_data)
    refined_graph = ItemItemGraph(k=5, learned_weight=0.5, learned_from="refined")
    check_component(LMFFusion(rank=2), tiny_data, encoders=[IdEmbedding(), refined_graph], combiner=SumCombiner())
