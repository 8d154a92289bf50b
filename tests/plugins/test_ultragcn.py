"""UltraGCN (Mao et al., CIKM 2021): degree factors, item-item neighbours, the loss against the official code's
formulas (xue-pai/UltraGCN, main.py) on hand-sized cases, and ranking on a planted dataset with items that have
no training interactions (the bundle ranked worse than random on real data because of them)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from recplug.core.data.dataset import InteractionData
from recplug.core.data.datamodule import RecDataModule
from recplug.core.errors import ConfigError
from recplug.core.eval.evaluator import evaluate
from recplug.core.model.module import RecModule
from recplug.core.data.formats.mmrec import write_mmrec
from recplug.core.model.types import BPRBatch, ModelOutput
from recplug.plugins.embedding import IdEmbedding
from recplug.plugins.losses.ultragcn import UltraGCNLoss, constraint_factors, item_item_neighbors


def toy_data() -> InteractionData:
    """6 users, 9 items; item 8 has no training interaction."""
    users = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5])
    items = torch.tensor([0, 1, 2, 1, 2, 0, 3, 4, 5, 6, 2, 3, 7])
    return InteractionData("toy", 6, 9, {"train": (users, items)})


def leaf_output(num_users: int = 6, num_items: int = 9, d: int = 4) -> ModelOutput:
    """ID tables and distinct final embeddings, all leaves, so gradients show which ones a term reaches."""
    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, requires_grad=True)

    out = ModelOutput(ego_users=leaf(num_users, d), ego_items=leaf(num_items, d), content=None)
    out.users, out.items = leaf(num_users, d), leaf(num_items, d)
    return out


def built_loss(data: InteractionData, **kwargs: object) -> UltraGCNLoss:
    loss = UltraGCNLoss(**kwargs)
    loss.recplug_build(num_items=data.num_items)
    loss.recplug_setup(data=data)
    return loss


# ---------------------------------------------------------------- factors and neighbours
def test_constraint_factors_match_eq_10_and_give_untrained_items_full_weight():
    data = toy_data()
    beta_u, beta_i = constraint_factors(*data.split("train"), 6, 9)
    deg_u, deg_i = torch.tensor([3, 2, 4, 1, 2, 1.0]), torch.tensor([2, 2, 3, 2, 1, 1, 1, 1, 0.0])
    for u in range(6):
        for i in range(9):  # item 8 included: Eq. 10 at d_i = 0, the official code's 1 / sqrt(0 + 1)
            expected = (1 / deg_u[u]) * ((deg_u[u] + 1) / (deg_i[i] + 1)).sqrt()
            torch.testing.assert_close(beta_u[u] * beta_i[i], expected)
    assert beta_i[8] == 1


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_item_neighbours_match_eq_14_by_brute_force(chunk_size):
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


# ---------------------------------------------------------------- the loss
def test_loss_equals_the_official_formula_computed_by_hand():
    """``cal_loss_L`` with ``get_omegas``' weights, ``cal_loss_I`` and ``norm_loss`` of the official main.py,
    with the degree factors written out from the dense training matrix (not read from the loss's buffers). Item 8
    has no training interaction: as a negative it weighs ``w3 + w4 sqrt(d_u + 1) / d_u``, like any unseen item."""
    data = toy_data()
    loss = built_loss(data, num_negatives=20, negative_weight=3.0, w1=0.1, w2=1.0, w3=0.2, w4=0.5,
                      item_weight=0.01, num_neighbors=2, norm_weight=0.001, name="ugcn")
    out = leaf_output()
    batch = BPRBatch(torch.tensor([0, 2, 4]), torch.tensor([1, 5, 3]), torch.tensor([7, 8, 0]))
    torch.manual_seed(7)
    terms = loss.recplug_aux_loss(batch=batch, output=out)
    assert set(terms) == {"ugcn", "ugcn_item", "ugcn_norm"}
    torch.manual_seed(7)
    drawn = torch.randint(9, (3, 20))  # the loss's draw, replayed
    assert (drawn == 8).any()

    train = torch.zeros(6, 9, dtype=torch.float64)
    train[data.split("train")] = 1
    d_u, d_i = train.sum(1), train.sum(0)

    def beta(u: int, i: int) -> float:
        return float((d_u[u] + 1).sqrt() / d_u[u] / (d_i[i] + 1).sqrt())

    expected = torch.zeros(())
    for row, (u, i) in enumerate(zip(batch.users.tolist(), batch.pos_items.tolist())):
        e_u = out.users[u]
        expected = expected - (0.1 + 1.0 * beta(u, i)) * F.logsigmoid(e_u @ out.items[i])
        neg = [-(0.2 + 0.5 * beta(u, j)) * F.logsigmoid(-(e_u @ out.items[j])) for j in drawn[row].tolist()]
        expected = expected + 3.0 * torch.stack(neg).mean()
    torch.testing.assert_close(terms["ugcn"], expected)
    item_term = -sum(float(w) * F.logsigmoid(out.users[u] @ out.items[j])
                     for u, i in zip(batch.users.tolist(), batch.pos_items.tolist())
                     for j, w in zip(loss.neighbours[i].tolist(), loss.omega[i]))
    torch.testing.assert_close(terms["ugcn_item"], 0.01 * item_term)
    torch.testing.assert_close(terms["ugcn_norm"], 0.001 * (out.ego_users.norm() ** 2 + out.ego_items.norm() ** 2) / 2)
    sum(terms.values()).backward()
    assert out.users.grad[batch.users].abs().sum() > 0 and out.users.grad[1].abs().sum() == 0
    assert out.items.grad[8].abs().sum() > 0  # the untrained item is pushed down as a negative
    assert out.items.grad[loss.neighbours[batch.pos_items].flatten()].abs().sum() > 0
    assert out.ego_items.grad.abs().sum() > 0


def test_loss_refuses_bad_arguments_and_use_before_setup():
    with pytest.raises(ConfigError, match="num_negatives"):
        UltraGCNLoss(num_negatives=0)
    with pytest.raises(ConfigError, match="num_neighbors"):
        UltraGCNLoss(num_neighbors=0)
    batch = BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([7, 8]))
    with pytest.raises(RuntimeError, match="recplug_setup"):
        UltraGCNLoss().recplug_aux_loss(batch=batch, output=leaf_output())
    assert repr(UltraGCNLoss(item_weight=0.0)) == (
        "UltraGCNLoss(num_negatives=300, negative_weight=300.0, w1=1e-06, w2=1.0, w3=1e-06, w4=1.0, "
        "item_weight=0.0, num_neighbors=10, norm_weight=0.0001, weight=1.0, name='ultragcn')")
    loss = built_loss(toy_data(), item_weight=0.0, norm_weight=0.0)
    assert not hasattr(loss, "neighbours")
    assert set(loss.recplug_aux_loss(batch=batch, output=leaf_output())) == {"ultragcn"}


# ---------------------------------------------------------------- ranking
def planted_data(num_clusters: int = 5, users_per_cluster: int = 40, items_per_cluster: int = 30,
                 untrained_items: int = 60, train_per_user: int = 10, test_per_user: int = 3) -> InteractionData:
    """Users and items in clusters; each user's training and test items come from its own cluster, so ranking
    the user's cluster first is perfect. The last ``untrained_items`` items occur only in validation, one user
    each (as 7% of TikTok's items do)."""
    generator = torch.Generator().manual_seed(0)
    num_users, num_trained = num_clusters * users_per_cluster, num_clusters * items_per_cluster
    split_users: dict[str, list[int]] = {"train": [], "test": [], "valid": list(range(untrained_items))}
    split_items: dict[str, list[int]] = {"train": [], "test": [],
                                         "valid": list(range(num_trained, num_trained + untrained_items))}
    for cluster in range(num_clusters):
        for offset in range(users_per_cluster):
            user = cluster * users_per_cluster + offset
            chosen = cluster * items_per_cluster + torch.randperm(items_per_cluster, generator=generator)
            for split, picked in (("train", chosen[:train_per_user]),
                                  ("test", chosen[train_per_user:train_per_user + test_per_user])):
                split_users[split] += [user] * len(picked)
                split_items[split] += picked.tolist()
    splits = {s: (torch.tensor(split_users[s]), torch.tensor(split_items[s])) for s in split_users}
    return InteractionData("planted", num_users, num_trained + untrained_items, splits)


def test_ranks_held_out_items_far_better_than_random_despite_untrained_items(tmp_path):
    """The bundle's wiring (IdEmbedding, model.bpr_weight 0, the BPR sampler's pairs) trained 20 epochs: recall
    near 1 (random and popularity: about 0.1). Before the fix, untrained items weighed 0 as negatives, kept
    their initial scores while every trained item was pushed below them, and filled every top-20 (recall 0).
    lr 0.05 shortens the plateau at popularity that UltraGCN's many weighted negatives cause at first."""
    data = planted_data()
    folder = write_mmrec(data, tmp_path / "planted")
    model = RecModule(data.num_users, data.num_items, embedding_dim=16, encoders=[IdEmbedding()], bpr_weight=0.0,
                      lr=0.05, aux_losses=[UltraGCNLoss(num_negatives=50, negative_weight=50.0, num_neighbors=5)])
    trainer = pl.Trainer(max_epochs=20, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, RecDataModule(str(folder), batch_size=256, cache_dir=str(tmp_path / "cache")))
    users, items = model.cached_embeddings()
    metrics = evaluate(users, items, data.user_csr("test"), data.user_csr(("train", "valid")), ks=(20,),
                       metrics=("recall",))
    assert metrics["recall@20"] > 0.5
