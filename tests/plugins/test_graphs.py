"""Graph encoders: LightGCN and FREEDOM pruning, the kNN item-item graph, user profiles, caching, resuming."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import recplug.core.ops.knn as knn_module
from recplug.core.data.datamodule import RecDataModule
from recplug.core.errors import ConfigError
from recplug.core.ops.knn import knn_coo, knn_indices
from recplug.core.model.module import RecModule
from recplug.core.model.types import BPRBatch
from recplug.core.data.formats.mmrec import write_mmrec
from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.rca import RCAFusion
from recplug.plugins.fusion.sum import SumFusion
from recplug.plugins.graphs.item_item import ItemItemGraph
from recplug.plugins.graphs.user_item import UserItemGraph, degree_sensitive_sample
from test_sparse import dense_adjacency

D = 8


def make(encoder, data, cache, fusion=None):
    model = RecModule(data.num_users, data.num_items, data.feature_dims, D, encoders=[encoder], fusion=fusion)
    model.prepare(data, cache)
    return model


# ---------------------------------------------------------------------------- user-item
def test_lightgcn_matches_dense_layer_mean(tiny_data, tmp_path):
    model = make(UserItemGraph(num_layers=3), tiny_data, tmp_path)
    out = model()
    view = out.views["behavior"]
    a = dense_adjacency(*tiny_data.split("train"), tiny_data.num_users, tiny_data.num_items)
    e = torch.cat([out.ego_users, out.ego_items])
    layers = [e]
    for _ in range(3):
        layers.append(a @ layers[-1])
    mean = torch.stack(layers).mean(0)
    torch.testing.assert_close(view.users, mean[: tiny_data.num_users])
    torch.testing.assert_close(view.items, mean[tiny_data.num_users :])
    assert view.users.shape == (tiny_data.num_users, D) and view.items.shape == (tiny_data.num_items, D)


def test_lightgcn_gradient_reaches_ego_embeddings(tiny_data, tmp_path):
    model = make(UserItemGraph(num_layers=2), tiny_data, tmp_path)
    out = model()
    (out.users.sum() + out.items.pow(2).sum()).backward()
    assert model.user_embedding.weight.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_edge_pruning_keeps_share_renormalises_and_uses_full_graph_in_eval(tiny_data, tmp_path):
    encoder = UserItemGraph(num_layers=1, edge_drop=0.8)
    make(encoder, tiny_data, tmp_path)
    total = encoder.edge_users.numel()
    encoder.recplug_resample(generator=torch.Generator().manual_seed(1))
    pruned = encoder.pruned
    assert pruned.nnz == 2 * int(0.2 * total)
    dense = pruned.to_dense()
    kept = dense[: tiny_data.num_users, tiny_data.num_users :] > 0
    expected = dense_adjacency(*kept.nonzero().T, tiny_data.num_users, tiny_data.num_items)
    torch.testing.assert_close(dense, expected)
    encoder.train()
    assert encoder.graph() is pruned
    encoder.eval()
    assert encoder.graph() is encoder.adjacency


def test_edge_pruning_is_reproducible_per_generator(tiny_data, tmp_path):
    encoder = UserItemGraph(edge_drop=0.5)
    make(encoder, tiny_data, tmp_path)
    graphs = []
    for seed in (3, 3, 4):
        encoder.recplug_resample(generator=torch.Generator().manual_seed(seed))
        graphs.append(encoder.pruned.to_dense())
    torch.testing.assert_close(graphs[0], graphs[1])
    assert not torch.equal(graphs[0], graphs[2])


def test_degree_sensitive_sample_prefers_low_degree_edges():
    # user 0 has 50 items (each also liked by users 1..), user 1 has one item of its own
    users = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(1, dtype=torch.long)])
    items = torch.cat([torch.arange(50), torch.tensor([50])])
    hits = torch.zeros(51)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        hits[degree_sensitive_sample(users, items, 10, generator)] += 1
    assert hits[50] / 300 > 3 * hits[:50].mean() / 300  # w ∝ 1/sqrt(d_u d_i): 1 vs 1/sqrt(50)
    assert len(set(degree_sensitive_sample(users, items, 51, generator).tolist())) == 51  # no replacement


def test_user_item_graph_needs_setup_and_checks_args():
    with pytest.raises(RuntimeError, match="recplug_setup"):
        UserItemGraph().graph()
    with pytest.raises(ConfigError, match="edge_drop"):
        UserItemGraph(edge_drop=1.0)


def test_user_item_repr_lists_args():
    assert repr(UserItemGraph(num_layers=2, edge_drop=0.8)) == (
        "UserItemGraph(name='behavior', num_layers=2, edge_drop=0.8, backend='torch')"
    )


# ---------------------------------------------------------------------------- kNN
def test_chunked_knn_equals_brute_force():
    features = torch.randn(300, 16)
    unit = F.normalize(features, dim=1)
    expected = (unit @ unit.T).topk(5, dim=1).indices
    got = knn_indices(features, 5, chunk_bytes=4 * 300 * 7)  # 7 rows per chunk
    assert torch.equal(got.sort(1).values, expected.sort(1).values)


def test_knn_graph_rows_are_weighted_means(tiny_data):
    rows, cols, values = knn_coo(tiny_data.features, 4, {"image": 0.25, "text": 0.75})
    dense = torch.zeros(tiny_data.num_items, tiny_data.num_items).index_put_((rows, cols), values, accumulate=True)
    torch.testing.assert_close(dense.sum(1), torch.ones(tiny_data.num_items))
    assert (dense.diagonal() > 0).all()  # an item is its own nearest neighbour, as in FREEDOM


def test_knn_rejects_bad_k():
    with pytest.raises(ConfigError, match="k=0"):
        knn_indices(torch.randn(5, 2), 0)


# ---------------------------------------------------------------------------- item-item
def test_item_item_propagates_content_and_builds_user_profiles(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=5, weights={"image": 0.5, "text": 0.5})
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    out = model()
    s = encoder.frozen.to_dense()
    h = s @ out.content
    view = out.views["semantic"]
    torch.testing.assert_close(view.items, h)
    users, items = tiny_data.split("train")
    u = 3
    torch.testing.assert_close(view.users[u], h[items[users == u].unique()].mean(0))
    view.users.sum().backward()
    assert model.fusion.proj["image"].weight.grad.abs().sum() > 0


def test_item_item_without_profiles_gives_zero_users_and_id_source(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=3, source="id", user_profiles=False, num_layers=2)
    model = make(encoder, tiny_data, tmp_path)
    out = model()
    s = encoder.frozen.to_dense()
    torch.testing.assert_close(out.views["semantic"].items, s @ (s @ out.ego_items))
    assert not out.views["semantic"].users.any()


def test_item_item_default_weights_and_errors(tiny_data, tmp_path):
    encoder = ItemItemGraph()
    encoder.recplug_build(num_users=2, num_items=2, feature_dims={"image": 3, "text": 4})
    assert encoder.weights == {"image": 0.5, "text": 0.5}
    with pytest.raises(ConfigError, match="lacks"):
        ItemItemGraph(weights={"audio": 1.0}).recplug_build(num_users=2, num_items=2, feature_dims={"image": 3})
    with pytest.raises(ConfigError, match="set model.fusion"):
        make(ItemItemGraph(k=3), tiny_data, tmp_path)()


def test_learned_graph_mixes_and_refreshes_once_per_epoch(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=4, learned_weight=0.1, source="id", user_profiles=False)
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    model.train()
    out = model()
    mixed = encoder.mixed
    dense = mixed.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(tiny_data.num_items))
    torch.testing.assert_close(out.views["semantic"].items, dense @ out.ego_items)
    learned = dense - encoder.frozen.to_dense()  # w S_learned: k neighbours of the content, w/k each
    assert ((learned > 0).sum(1) <= 4).all() and torch.allclose(learned.sum(1), torch.full((tiny_data.num_items,), 0.1))
    model()
    assert encoder.mixed is mixed  # same epoch: not recomputed
    encoder.recplug_resample(epoch=1)
    model()
    assert encoder.mixed is not mixed


def knn_dense(features: dict[str, torch.Tensor], k: int, weights: dict[str, float], n: int) -> torch.Tensor:
    rows, cols, values = knn_coo(features, k, weights)
    return torch.zeros(n, n).index_put_((rows, cols), values, accumulate=True)


def test_graph_rebuilt_from_the_refined_features_alone(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=4, weights={"image": 0.3, "text": 0.7}, learned_weight=1.0, learned_from="refined")
    model = make(encoder, tiny_data, tmp_path, fusion=RCAFusion())
    assert encoder.frozen is None  # w = 1: no raw-feature graph is built
    model.train()
    out = model()
    with torch.no_grad():
        refined = model.fusion.recplug_refine()
    expected = knn_dense(refined, 4, {"image": 0.3, "text": 0.7}, tiny_data.num_items)
    torch.testing.assert_close(encoder.mixed.to_dense(), expected)
    torch.testing.assert_close(out.views["semantic"].items, expected @ out.content)
    raw = knn_dense(tiny_data.features, 4, {"image": 0.3, "text": 0.7}, tiny_data.num_items)
    assert not torch.equal(expected, raw)


def test_graph_rebuilt_from_the_fused_content_every_n_epochs(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=3, source="id", learned_weight=1.0, rebuild_every=3, user_profiles=False)
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    model.train()
    model()
    first = encoder.learned_cols.clone()
    torch.testing.assert_close(encoder.mixed.to_dense(), knn_dense({"f": model().content}, 3, {"f": 1.0}, 150))
    with torch.no_grad():  # the content moves: a rebuild would find other neighbours
        for linear in model.fusion.proj.values():
            linear.weight.copy_(torch.randn_like(linear.weight))
    for epoch in (1, 2):
        encoder.recplug_resample(epoch=epoch)
        model()
        assert torch.equal(encoder.learned_cols, first), f"epoch {epoch}: not a rebuild epoch"
    encoder.recplug_resample(epoch=3)
    model.eval()
    model()
    assert torch.equal(encoder.learned_cols, first), "rebuilt at the first training forward, not in evaluation"
    model.train()
    out = model()
    assert not torch.equal(encoder.learned_cols, first)
    torch.testing.assert_close(encoder.mixed.to_dense(), knn_dense({"f": out.content}, 3, {"f": 1.0}, 150))


def test_source_both_and_profile_options(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=5, source="both", profile_from="input", profile_norm="symmetric")
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    out = model()
    x = out.content + out.ego_items
    torch.testing.assert_close(out.views["semantic"].items, encoder.frozen.to_dense() @ x)
    users, items = tiny_data.split("train")
    r = torch.zeros(tiny_data.num_users, tiny_data.num_items).index_put_((users, items), torch.tensor(1.0))
    norm = r / (r.sum(1, keepdim=True).clamp(min=1) * r.sum(0, keepdim=True).clamp(min=1)).sqrt()
    torch.testing.assert_close(out.views["semantic"].users, norm @ x)  # MGCN's R_norm on the unpropagated x


@pytest.mark.parametrize("norm", ["mean", "symmetric"])
def test_a_step_leaves_its_positives_out_of_their_users_profiles(norm, tiny_data, tmp_path):
    """FISM's exclusion: a training step's profile of u is over N_u minus the step's positives of u (with |N_u|
    reduced to match); evaluation (no targets) and profile_leave_out=False keep the whole profile."""
    encoder = ItemItemGraph(k=5, profile_norm=norm)
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    users, items = tiny_data.split("train")
    r = torch.zeros(tiny_data.num_users, tiny_data.num_items).index_put_((users, items), torch.tensor(1.0))
    picked = torch.tensor([0, 1, 2, 5, 5, 9])  # a repeated pair counts once
    batch = BPRBatch(users[picked], items[picked], torch.zeros(len(picked), dtype=torch.long))
    out = model(batch)
    h = out.views["semantic"].items
    kept = r.clone()
    kept[batch.users, batch.pos_items] = 0
    degree = kept.sum(1, keepdim=True).clamp(min=1)
    a = kept / degree if norm == "mean" else kept / (degree * r.sum(0, keepdim=True).clamp(min=1)).sqrt()
    torch.testing.assert_close(out.views["semantic"].users, a @ h)
    assert not torch.allclose(model().views["semantic"].users, a @ h)  # no targets: the whole profile
    encoder.profile_leave_out = False
    torch.testing.assert_close(model(batch).views["semantic"].users, model().views["semantic"].users)


def test_a_user_whose_every_item_is_a_positive_of_the_step_has_an_empty_profile(tiny_data, tmp_path):
    encoder = ItemItemGraph(k=5)
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion())
    users, items = tiny_data.split("train")
    mine = items[users == 3].unique()
    batch = BPRBatch(torch.full_like(mine, 3), mine, torch.zeros_like(mine))
    profiles = model(batch).views["semantic"].users
    assert not profiles[3].any() and profiles[4].any()


def test_the_rebuilt_graph_is_restored_from_the_state_dict(tiny_data, tmp_path):
    def build():
        encoder = ItemItemGraph(k=3, learned_weight=0.5, learned_from="refined", rebuild_every=5)
        return make(encoder, tiny_data, tmp_path, fusion=SumFusion())

    trained = build()
    trained.train()
    trained()
    with torch.no_grad():
        for linear in trained.fusion.proj.values():
            linear.weight.mul_(-1.0).add_(torch.randn_like(linear.weight))
    state = trained.state_dict()
    assert "encoders.0.learned_cols" in state
    restored = build()
    restored.load_state_dict(state)
    restored.prepare(tiny_data, tmp_path)
    restored.eval(), trained.eval()
    torch.testing.assert_close(restored().items, trained().items)  # the graph training used, not one rebuilt now
    old = build()  # a checkpoint from before the graph was saved loads and rebuilds it
    old.load_state_dict({k: v for k, v in state.items() if k != "encoders.0.learned_cols"})
    old.eval()
    old()
    assert (old.encoders[0].learned_cols >= 0).all()


def test_resumed_between_rebuilds_replays_the_uninterrupted_run(tiny_data, tmp_path):
    folder = write_mmrec(tiny_data, tmp_path / "data")

    def build():
        pl.seed_everything(3)
        encoders = [UserItemGraph(num_layers=1),
                    ItemItemGraph(k=3, learned_weight=0.5, learned_from="refined", rebuild_every=2)]
        return RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, D, encoders=encoders,
                         fusion=RCAFusion(num_recursions=1), lr=0.05)

    def trainer(epochs):
        return pl.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)

    def data():
        return RecDataModule(str(folder), batch_size=256, cache_dir=str(tmp_path / "cache"))

    straight = build()
    trainer(2).fit(straight, data())
    first = build()
    fit = trainer(1)
    fit.fit(first, data())
    fit.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = build()
    trainer(2).fit(resumed, data(), ckpt_path=tmp_path / "epoch1.ckpt")  # epoch 1 is no rebuild epoch
    torch.testing.assert_close(resumed.encoders[1].learned_cols, straight.encoders[1].learned_cols, rtol=0, atol=0)
    straight.eval(), resumed.eval()
    torch.testing.assert_close(resumed().items, straight().items)


def test_rebuilt_graph_configuration_errors(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"^model.encoders\[0\]: ItemItemGraph with learned_from 'refined' needs a "
                       r"fusion that gives per-modality refined features"):
        make(ItemItemGraph(k=3, learned_weight=1.0, learned_from="refined"), tiny_data, tmp_path, fusion=ConcatFusion())
    with pytest.raises(ConfigError, match=r"^ItemItemGraph: rebuild_every must be >= 1, got 0"):
        ItemItemGraph(learned_weight=0.1, rebuild_every=0)
    with pytest.raises(ConfigError, match=r"ItemItemGraph: learned_from must be 'fused' or 'refined', got 'raw'"):
        ItemItemGraph(learned_from="raw")
    with pytest.raises(ConfigError, match=r"ItemItemGraph: source must be 'content' or 'id' or 'both', got 'ids'"):
        ItemItemGraph(source="ids")
    encoder = ItemItemGraph(k=3, learned_weight=1.0, learned_from="refined", weights={"image": 0.5, "text": 0.5})
    model = make(encoder, tiny_data, tmp_path, fusion=SumFusion(modalities=["text"]))
    with pytest.raises(ConfigError, match=r"weights name modalities \['image'\] the fusion does not refine"):
        model()


def test_knn_graph_is_cached_by_content_hash(tiny_data, tmp_path, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return knn_coo(*args, **kwargs)

    monkeypatch.setattr(knn_module, "knn_coo", counting)
    first = ItemItemGraph(k=3, source="id")
    make(first, tiny_data, tmp_path)
    second = ItemItemGraph(k=3, source="id")
    make(second, tiny_data, tmp_path)
    assert len(calls) == 1 and len(list((tmp_path / "knn").glob("*.pt"))) == 1
    torch.testing.assert_close(first.frozen.to_dense(), second.frozen.to_dense())
    make(ItemItemGraph(k=4, source="id"), tiny_data, tmp_path)
    assert len(calls) == 2


def test_item_item_repr_lists_args():
    assert repr(ItemItemGraph(k=3, weights={"text": 1.0})) == (
        "ItemItemGraph(name='semantic', k=3, weights={'text': 1.0}, source='content', num_layers=1, "
        "user_profiles=True, profile_from='propagated', profile_norm='mean', profile_leave_out=True, "
        "learned_weight=0.0, "
        "learned_from='fused', rebuild_every=1, backend='torch')"
    )


# ---------------------------------------------------------------------------- resuming
def test_resume_rebuilds_graphs_and_reproduces_outputs(tiny_data, tmp_path):
    folder = write_mmrec(tiny_data, tmp_path / "data")

    def build():
        encoders = [UserItemGraph(num_layers=2, edge_drop=0.5), ItemItemGraph(k=3, weights={"image": 0.3, "text": 0.7})]
        return RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, D, encoders=encoders,
                         fusion=SumFusion())

    def trainer(epochs):
        return pl.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)

    data = RecDataModule(str(folder), batch_size=256, cache_dir=str(tmp_path / "cache"))
    first = build()
    fit = trainer(1)
    fit.fit(first, data)
    fit.save_checkpoint(tmp_path / "last.ckpt")
    resumed = build()
    assert resumed.encoders[1].frozen is None
    trainer(1).fit(resumed, RecDataModule(str(folder), batch_size=256, cache_dir=str(tmp_path / "cache")),
                   ckpt_path=tmp_path / "last.ckpt")
    assert resumed.encoders[1].frozen is not None and resumed.encoders[0].adjacency is not None
    first.eval(), resumed.eval()
    a, b = first(), resumed()
    torch.testing.assert_close(a.users, b.users)
    torch.testing.assert_close(a.items, b.items)
