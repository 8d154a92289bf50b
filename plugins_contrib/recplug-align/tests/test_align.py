"""AlignUniformLoss: the two terms against their definitions, named views, and training through a model."""

from __future__ import annotations

import math

import pytest
import torch

from recplug import BPRBatch, ConfigError, GraphView, ModelOutput, RecModule
from recplug.datasets.synthetic import generate
from recplug.testing import check_component, hooks_implemented, make_tiny_data
from recplug_align import AlignUniformLoss, alignment, uniformity


def output_with(users: torch.Tensor, items: torch.Tensor) -> ModelOutput:
    view = GraphView("id", users, items)
    return ModelOutput(users, items, None, views={"id": view}, users=users, items=items)


def test_implements_the_aux_loss_hook() -> None:
    assert hooks_implemented(AlignUniformLoss) == ["recplug_aux_loss", "recplug_check"]


def test_terms_match_brute_force_definitions() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(7, 5), torch.randn(7, 5)
    xn, yn = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
    assert alignment(x, y).item() == pytest.approx(sum(((xn[k] - yn[k]) ** 2).sum().item() for k in range(7)) / 7)
    pairs = [math.exp(-2 * ((xn[k] - xn[m]) ** 2).sum().item()) for k in range(7) for m in range(k + 1, 7)]
    assert uniformity(x).item() == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-5)


def test_extremes() -> None:
    x = torch.randn(4, 3)
    assert alignment(x, 2 * x).item() == pytest.approx(0.0, abs=1e-6)  # same directions: perfectly aligned
    assert alignment(x, -x).item() == pytest.approx(4.0)
    assert uniformity(x.new_ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)  # all in one point: not uniform
    assert uniformity(x[:1]).item() == 0.0  # one row has no pair (was NaN, then "training diverged")


@pytest.mark.parametrize("gamma", [-1.0, float("nan"), float("inf")])
def test_a_bad_gamma_names_its_argument(gamma: float) -> None:
    with pytest.raises(ConfigError, match=r"^AlignUniformLoss: gamma must be >= 0, got "):
        AlignUniformLoss(gamma=gamma)


def test_weights_names_and_duplicate_rows() -> None:
    users, items = torch.randn(6, 4), torch.randn(5, 4)
    batch = BPRBatch(torch.tensor([0, 0, 3]), torch.tensor([1, 1, 2]), torch.tensor([4, 4, 0]))
    loss = AlignUniformLoss(weight=0.5, gamma=2.0, name="du")
    terms = loss.recplug_aux_loss(batch=batch, output=output_with(users, items))
    assert set(terms) == {"du_align", "du_uniform"}
    assert terms["du_align"].item() == pytest.approx(0.5 * alignment(users[batch.users], items[batch.pos_items]).item())
    expected = (uniformity(users[[0, 3]]) + uniformity(items[[1, 2]])) / 2  # distinct rows only
    assert terms["du_uniform"].item() == pytest.approx(0.5 * 2.0 * expected.item())


def test_unknown_view_fails_when_the_model_is_built_naming_the_available_ones() -> None:
    data = make_tiny_data()
    expected = r"^model.aux_losses\[0\].init_args.view must be .* one of \['id'\], got 'semantic'"
    with pytest.raises(ConfigError, match=expected):
        RecModule(data.num_users, data.num_items, aux_losses=[AlignUniformLoss(view="semantic")])


def test_trains_through_a_model() -> None:
    data = generate(num_users=200, num_items=150, num_topics=6, image_dim=12, text_dim=8, seed=7)
    model = RecModule(data.num_users, data.num_items, data.feature_dims, embedding_dim=8,
                      aux_losses=[AlignUniformLoss(weight=1.0)])
    model.prepare(data)
    batch = BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    (terms,) = model.pm.hook.recplug_aux_loss(batch=batch, output=model())
    assert set(terms) == {"au_align", "au_uniform"}
    sum(terms.values()).backward()
    assert model.user_embedding.weight.grad[:3].abs().sum() > 0


def test_conforms_to_recplug() -> None:
    """recplug's own conformance check: repr, finite loss, a restored copy reproduces the trained model."""
    check_component(AlignUniformLoss(), make_tiny_data())
    check_component(AlignUniformLoss(view="id", weight=0.5), make_tiny_data(), bpr_weight=0.0)  # DirectAU proper
