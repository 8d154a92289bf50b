"""Aux losses: InfoNCE between views, L2 regularisation, content BPR — values, names, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recplug.core.errors import ConfigError
from recplug.core.types import BPRBatch, GraphView, ModelOutput
from recplug.plugins.losses.content_bpr import ContentBPRLoss
from recplug.plugins.losses.infonce import InfoNCELoss, info_nce
from recplug.plugins.losses.l2 import L2Regularization


def output(num_users: int = 6, num_items: int = 9, d: int = 4) -> ModelOutput:
    def leaf(*shape):
        return torch.randn(*shape, requires_grad=True)

    out = ModelOutput(ego_users=leaf(num_users, d), ego_items=leaf(num_items, d), content=leaf(num_items, d))
    out.views = {name: GraphView(name, leaf(num_users, d), leaf(num_items, d)) for name in ("behavior", "semantic")}
    out.users, out.items = leaf(num_users, d), leaf(num_items, d)
    return out


BATCH = BPRBatch(torch.tensor([0, 1, 1, 4]), torch.tensor([2, 3, 3, 5]), torch.tensor([7, 8, 0, 1]))


def manual_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    total = 0.0
    for k in range(a.shape[0]):
        sims = torch.stack([F.cosine_similarity(a[k], b[j], dim=0) for j in range(b.shape[0])]) / tau
        total = total - (sims[k] - torch.logsumexp(sims, 0))
    return total / a.shape[0]


def test_info_nce_matches_its_formula():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(info_nce(a, b, 0.3), manual_info_nce(a, b, 0.3))


def test_infonce_loss_terms_are_named_weighted_and_deduplicated():
    out = output()
    loss = InfoNCELoss("behavior", "semantic", temperature=0.5, weight=0.1, name="cl")
    terms = loss.recplug_aux_loss(batch=BATCH, output=out)
    assert set(terms) == {"cl_users", "cl_items"}
    users, items = torch.tensor([0, 1, 4]), torch.tensor([2, 3, 5])
    a, b = out.views["behavior"], out.views["semantic"]
    torch.testing.assert_close(terms["cl_users"], 0.1 * manual_info_nce(a.users[users], b.users[users], 0.5))
    torch.testing.assert_close(terms["cl_items"], 0.1 * manual_info_nce(a.items[items], b.items[items], 0.5))
    sum(terms.values()).backward()
    assert a.users.grad[users].abs().sum() > 0 and b.items.grad[items].abs().sum() > 0
    assert a.users.grad[2].abs().sum() == 0  # not in the batch


def test_infonce_can_skip_users_or_items():
    out = output()
    assert set(InfoNCELoss(users=False).recplug_aux_loss(batch=BATCH, output=out)) == {"infonce_items"}
    assert set(InfoNCELoss(items=False).recplug_aux_loss(batch=BATCH, output=out)) == {"infonce_users"}


def test_infonce_names_the_missing_view_and_the_existing_ones():
    with pytest.raises(ConfigError, match=r"\['content'\].*\['behavior', 'semantic'\]"):
        InfoNCELoss("behavior", "content").recplug_aux_loss(batch=BATCH, output=output())
    with pytest.raises(ConfigError, match="temperature"):
        InfoNCELoss(temperature=0.0)


def test_infonce_is_log_batch_for_identical_collapsed_views():
    out = output()
    constant = torch.ones(9, 4)
    out.views["semantic"] = GraphView("semantic", torch.ones(6, 4), constant)
    out.views["behavior"] = GraphView("behavior", torch.ones(6, 4), constant)
    terms = InfoNCELoss(weight=1.0).recplug_aux_loss(batch=BATCH, output=out)
    torch.testing.assert_close(terms["infonce_items"], torch.tensor(math.log(3)))


@pytest.mark.parametrize("embeddings", ["ego", "final"])
def test_l2_regularization_matches_lightgcn(embeddings):
    out = output()
    users, items = (out.ego_users, out.ego_items) if embeddings == "ego" else (out.users, out.items)
    terms = L2Regularization(weight=1e-2, embeddings=embeddings).recplug_aux_loss(batch=BATCH, output=out)
    expected = (users[BATCH.users].norm() ** 2 + items[BATCH.pos_items].norm() ** 2
                + items[BATCH.neg_items].norm() ** 2) / 2 / 4 * 1e-2
    torch.testing.assert_close(terms["l2"], expected)
    terms["l2"].backward()
    assert users.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="ego"):
        L2Regularization(embeddings="views")


def test_content_bpr_scores_view_users_against_content():
    out = output()
    terms = ContentBPRLoss(view="behavior", weight=0.5).recplug_aux_loss(batch=BATCH, output=out)
    u = out.views["behavior"].users[BATCH.users]
    diff = (u * out.content[BATCH.pos_items]).sum(1) - (u * out.content[BATCH.neg_items]).sum(1)
    torch.testing.assert_close(terms["content_bpr"], 0.5 * -F.logsigmoid(diff).mean())
    terms["content_bpr"].backward()
    assert out.content.grad.abs().sum() > 0
    out.content = None
    with pytest.raises(ConfigError, match="model.fusion"):
        ContentBPRLoss().recplug_aux_loss(batch=BATCH, output=out)


def test_loss_reprs():
    assert repr(InfoNCELoss()) == (
        "InfoNCELoss(view_a='behavior', view_b='semantic', temperature=0.2, weight=0.01, users=True, items=True, "
        "name='infonce')"
    )
    assert repr(L2Regularization()) == "L2Regularization(weight=0.0001, embeddings='ego', name='l2')"
    assert repr(ContentBPRLoss()) == "ContentBPRLoss(view='behavior', weight=0.0001, name='content_bpr')"


# ---------------------------------------------------------------- UltraGCN
def ultragcn_data():
    from recplug.core.dataset import InteractionData

    users = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5])
    items = torch.tensor([0, 1, 2, 1, 2, 0, 3, 4, 5, 6, 2, 3, 7])
    return InteractionData("toy", 6, 9, {"train": (users, items)})


def test_ultragcn_constraint_factors_match_eq_10():
    from recplug.plugins.losses.ultragcn import constraint_factors

    data = ultragcn_data()
    beta_u, beta_i = constraint_factors(*data.split("train"), 6, 9)
    deg_u, deg_i = torch.tensor([3, 2, 4, 1, 2, 1.0]), torch.tensor([2, 2, 3, 2, 1, 1, 1, 1, 0.0])
    for u, i in [(0, 1), (2, 5), (3, 6)]:
        expected = (1 / deg_u[u]) * ((deg_u[u] + 1) / (deg_i[i] + 1)).sqrt()
        torch.testing.assert_close(beta_u[u] * beta_i[i], expected)
    assert beta_i[8] == 0  # no training interactions


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_ultragcn_item_neighbours_match_eq_14_by_brute_force(chunk_size):
    from recplug.plugins.losses.ultragcn import item_item_neighbors

    generator = torch.Generator().manual_seed(0)
    keys = torch.unique(torch.randint(0, 30 * 12, (120,), generator=generator))
    users, items = keys // 12, keys % 12
    neighbours, omega = item_item_neighbors(users, items, 30, 12, k=3, chunk_size=chunk_size)
    dense = torch.zeros(30, 12, dtype=torch.float64)
    dense[users, items] = 1
    cooccurrence = dense.T @ dense
    g = cooccurrence.sum(1)
    for i in range(12):
        expected = torch.tensor([0.0 if j == i or g[j] == 0 else
                                 float(cooccurrence[i, j] / (g[i] - cooccurrence[i, i]) * (g[i] / g[j]).sqrt())
                                 for j in range(12)])
        top = expected.topk(3)
        torch.testing.assert_close(omega[i], top.values.float())
        torch.testing.assert_close(expected[neighbours[i]].float(), top.values.float())  # ties may reorder indices


def test_ultragcn_loss_matches_its_equations_and_reaches_every_embedding():
    from recplug.plugins.losses.ultragcn import UltraGCNLoss

    data = ultragcn_data()
    loss = UltraGCNLoss(num_negatives=5, negative_weight=3.0, w1=0.1, w2=1.0, w3=0.2, w4=0.5, item_weight=0.01,
                        num_neighbors=2, norm_weight=0.001, name="ugcn")
    loss.recplug_build(num_items=9)
    loss.recplug_setup(data=data)
    out = output()
    batch = BPRBatch(torch.tensor([0, 2, 4]), torch.tensor([1, 5, 3]), torch.tensor([7, 8, 0]))
    torch.manual_seed(7)
    terms = loss.recplug_aux_loss(batch=batch, output=out)
    assert set(terms) == {"ugcn", "ugcn_item", "ugcn_norm"}

    torch.manual_seed(7)
    negatives = torch.randint(9, (3, 5))
    expected = 0.0
    for row, (u, i) in enumerate(zip(batch.users.tolist(), batch.pos_items.tolist())):
        e_u = out.users[u]
        beta = lambda j: loss.beta_users[u] * loss.beta_items[j]  # noqa: E731
        expected = expected - (0.1 + beta(i)) * F.logsigmoid(e_u @ out.items[i])
        neg = torch.stack([-(0.2 + 0.5 * beta(j)) * F.logsigmoid(-(e_u @ out.items[j])) for j in negatives[row]])
        expected = expected + 3.0 * neg.mean()
    torch.testing.assert_close(terms["ugcn"], expected)
    item_term = -sum(float(w) * F.logsigmoid(out.users[u] @ out.items[j])
                     for u, i in zip(batch.users.tolist(), batch.pos_items.tolist())
                     for j, w in zip(loss.neighbours[i].tolist(), loss.omega[i]))
    torch.testing.assert_close(terms["ugcn_item"], 0.01 * item_term)
    torch.testing.assert_close(terms["ugcn_norm"], 0.001 * (out.ego_users.norm() ** 2 + out.ego_items.norm() ** 2) / 2)
    sum(terms.values()).backward()
    assert out.users.grad[batch.users].abs().sum() > 0 and out.users.grad[1].abs().sum() == 0
    assert out.items.grad[loss.neighbours[batch.pos_items].flatten()].abs().sum() > 0
    assert out.ego_items.grad.abs().sum() > 0


def test_ultragcn_loss_refuses_bad_arguments_and_use_before_setup():
    from recplug.plugins.losses.ultragcn import UltraGCNLoss

    with pytest.raises(ConfigError, match="num_negatives"):
        UltraGCNLoss(num_negatives=0)
    with pytest.raises(ConfigError, match="num_neighbors"):
        UltraGCNLoss(num_neighbors=0)
    with pytest.raises(RuntimeError, match="recplug_setup"):
        UltraGCNLoss().recplug_aux_loss(batch=BATCH, output=output())
    assert repr(UltraGCNLoss(item_weight=0.0)) == (
        "UltraGCNLoss(num_negatives=300, negative_weight=300.0, w1=1e-06, w2=1.0, w3=1e-06, w4=1.0, "
        "item_weight=0.0, num_neighbors=10, norm_weight=0.0001, weight=1.0, name='ultragcn')")
    loss = UltraGCNLoss(item_weight=0.0, norm_weight=0.0)
    loss.recplug_build(num_items=9)
    loss.recplug_setup(data=ultragcn_data())
    assert not hasattr(loss, "neighbours")
    assert set(loss.recplug_aux_loss(batch=BATCH, output=output())) == {"ultragcn"}
