"""Aux losses: InfoNCE between views, L2 regularisation, content BPR — values, names, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recplug.core.errors import ConfigError
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput
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
    with pytest.raises(ConfigError, match=r"view_b must be .* one of \['behavior', 'semantic'\], got 'content'"):
        InfoNCELoss("behavior", "content").recplug_check(views=["behavior", "semantic"])
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
    with pytest.raises(ConfigError, match="model.fusion"):
        ContentBPRLoss().recplug_check(views=["behavior"], has_content=False)
    with pytest.raises(ConfigError, match=r"view must be .* one of \['id'\], got 'behavior'"):
        ContentBPRLoss().recplug_check(views=["id"], has_content=True)


def test_loss_reprs():
    assert repr(InfoNCELoss()) == (
        "InfoNCELoss(view_a='behavior', view_b='semantic', temperature=0.2, weight=0.01, users=True, items=True, "
        "name='infonce')"
    )
    assert repr(L2Regularization()) == "L2Regularization(weight=0.0001, embeddings='ego', name='l2')"
    assert repr(ContentBPRLoss()) == "ContentBPRLoss(view='behavior', weight=0.0001, name='content_bpr')"
