"""Sampled training (model.sampling): equal to full-graph training with fan-outs >= every degree, row-sparse
updates of the rows a step reads, LazyAdam = Adam, refusals in one line, reproducible epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from recplug.core.cli.main import main
from recplug.core.data.datamodule import RecDataModule
from recplug.core.data.formats.mmrec import write_mmrec
from recplug.core.errors import ConfigError
from recplug.core.model.module import RecModule
from recplug.core.model.sampled import LazyAdam, Sampling, draw_neighbourhoods, sampled_forward
from recplug.core.model.types import BPRBatch
from recplug.core.ops.sampling import RowIndex
from recplug.plugins.combine import ConcatCombiner
from recplug.plugins.embedding import ContentView, IdEmbedding
from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.sum import SumFusion
from recplug.plugins.graphs.item_item import ItemItemGraph
from recplug.plugins.graphs.ngcf import NGCFGraph
from recplug.plugins.graphs.user_item import UserItemGraph
from recplug.plugins.losses.content_bpr import ContentBPRLoss
from recplug.plugins.losses.infonce import InfoNCELoss
from recplug.plugins.losses.l2 import L2Regularization
from recplug.plugins.losses.ultragcn import UltraGCNLoss

ROOT = Path(__file__).resolve().parents[3]
WIRINGS = {
    "lightgcn": lambda: {"encoders": [UserItemGraph(num_layers=3)], "aux_losses": [L2Regularization()]},
    "ngcf": lambda: {"encoders": [NGCFGraph(num_layers=2, message_dropout=0.0)]},
    "crane_like": lambda: {
        "fusion": SumFusion(trainable_features=True),
        "encoders": [UserItemGraph(num_layers=2), ItemItemGraph(k=5, source="content", user_profiles=True)],
        "aux_losses": [InfoNCELoss(), L2Regularization(embeddings="final")],
    },
    "freedom_like": lambda: {
        "fusion": SumFusion(), "encoders": [UserItemGraph(num_layers=2), ItemItemGraph(k=5, source="id",
                                                                                    user_profiles=False)],
        "aux_losses": [ContentBPRLoss()],
    },
    "profiles_from_input": lambda: {
        "fusion": SumFusion(), "encoders": [ItemItemGraph(k=4, num_layers=2, source="both", profile_from="input",
                                                          profile_norm="symmetric")],
    },
    "vbpr": lambda: {"fusion": ConcatFusion(), "encoders": [IdEmbedding(), ContentView()],
                     "combiner": ConcatCombiner()},
}


def build(data, tmp_path, wiring, sampling):
    torch.manual_seed(0)
    model = RecModule(data.num_users, data.num_items, data.feature_dims, 8, sampling=sampling, **wiring)
    model.prepare(data, tmp_path)
    return model


def a_batch(data, size=40, seed=1):
    generator = torch.Generator().manual_seed(seed)
    users, items = data.split("train")
    picked = torch.randint(len(users), (size,), generator=generator)
    return BPRBatch(users[picked], items[picked], torch.randint(data.num_items, (size,), generator=generator))


def step_loss(model, batch, local, output):
    terms = [model.bpr_weight * torch.nn.functional.softplus(
        (output.users[local.users] * (output.items[local.neg_items] - output.items[local.pos_items])).sum(1)
    ).mean()]
    for extra in model.pm.hook.recplug_aux_loss(batch=local, output=output):
        terms.extend(extra.values())
    return torch.stack(terms).sum()


try:  # the torch engine needs no PyG; the pyg engine needs pyg-lib
    from torch_geometric.typing import WITH_PYG_LIB as PYG_LIB
except ImportError:
    PYG_LIB = False


@pytest.mark.parametrize(
    "engine", [pytest.param("pyg", marks=pytest.mark.skipif(not PYG_LIB, reason="pyg-lib has no wheel here")), "torch"]
)
@pytest.mark.parametrize("name", sorted(WIRINGS))
def test_sampled_step_equals_the_full_step_when_fanouts_cover_every_degree(name, engine, tiny_data, tmp_path):
    model = build(tiny_data, tmp_path, WIRINGS[name](), Sampling([-1, -1, -1], engine))
    batch = a_batch(tiny_data)
    full = model(batch)  # the step's positives left out of the profiles in both
    local, output = sampled_forward(model, draw_neighbourhoods(model, batch))
    users, items = torch.unique(batch.users), torch.unique(torch.cat([batch.pos_items, batch.neg_items]))
    torch.testing.assert_close(output.users, full.users[users], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(output.items, full.items[items], rtol=1e-4, atol=1e-6)
    for view in full.views:
        torch.testing.assert_close(output.views[view].users, full.views[view].users[users], rtol=1e-4, atol=1e-6)
    # the same loss, and the same gradient on every parameter (row-sparse ones densified)
    full_loss = step_loss(model, batch, batch, full)
    sampled_loss = step_loss(model, batch, local, output)
    torch.testing.assert_close(sampled_loss, full_loss, rtol=1e-4, atol=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    full_grads = torch.autograd.grad(full_loss, params, allow_unused=True)
    sampled_loss.backward()
    for p, g in zip(params, full_grads):
        got = p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad
        if g is None:
            assert got is None or not bool(got.any())
        else:
            torch.testing.assert_close(got, g, rtol=1e-3, atol=1e-6)


def test_a_step_reads_and_updates_only_its_sampled_neighbourhood(tiny_data, tmp_path):
    model = build(tiny_data, tmp_path, {"encoders": [UserItemGraph(num_layers=2)]}, Sampling([2, 2]))
    batch = a_batch(tiny_data, size=5)
    _, output = sampled_forward(model, draw_neighbourhoods(model, batch))
    (output.users.sum() + output.items.sum()).backward()
    grad = model.user_embedding.weight.grad
    assert grad.is_sparse
    touched = grad.coalesce().indices()[0]
    # within two hops of the batch's nodes, and at most 5 users + 10 items, x (1 + 2 + 4) nodes
    users, items = tiny_data.split("train")
    adjacency = torch.zeros(tiny_data.num_users + tiny_data.num_items, tiny_data.num_users + tiny_data.num_items)
    adjacency[users, items + tiny_data.num_users] = 1
    adjacency = ((adjacency + adjacency.T) > 0).float()
    reach = torch.zeros(adjacency.shape[0])
    reach[batch.users] = 1
    reach[torch.cat([batch.pos_items, batch.neg_items]) + tiny_data.num_users] = 1
    for _ in range(2):
        reach = ((reach + adjacency @ reach) > 0).float()
    assert bool(reach[touched].all())
    assert touched.numel() < tiny_data.num_users
    optimizer = LazyAdam(model.parameters(), lr=0.1)
    before = model.user_embedding.weight.detach().clone()
    optimizer.step()
    changed = (model.user_embedding.weight.detach() != before).any(1).nonzero().squeeze(1)
    assert set(changed.tolist()) <= set(touched.tolist())


def test_row_index_gives_sorted_distinct_ids_and_their_ranks_step_after_step():
    """The scratch map is never cleared: each build must still give exactly torch.unique and its ranks."""
    index, generator = RowIndex(50), torch.Generator().manual_seed(0)
    for size in (1, 30, 200, 7):
        ids = torch.randint(50, (size,), generator=generator)
        distinct = index.build(ids)
        assert torch.equal(distinct, torch.unique(ids))
        assert torch.equal(index.local(ids), torch.searchsorted(distinct, ids))


def test_the_divergence_guard_checks_the_rows_a_sampled_step_updated(tiny_data, tmp_path):
    model = build(tiny_data, tmp_path, {"encoders": [UserItemGraph(num_layers=2)]}, Sampling([2, 2]))
    _, output = sampled_forward(model, draw_neighbourhoods(model, a_batch(tiny_data, size=5)))
    (output.users.sum() + output.items.sum()).backward()
    model.on_train_batch_end(None, None, 0)  # finite
    touched = model.item_embedding.weight.grad.coalesce().indices()[0]
    with torch.no_grad():
        model.item_embedding.weight[touched[-1], 0] = float("nan")
    with pytest.raises(ConfigError, match="parameter item_embedding.weight is not finite after the optimiser step"):
        model.on_train_batch_end(None, None, 0)


def test_lazy_adam_is_adam_on_dense_gradients_and_on_the_touched_rows():
    torch.manual_seed(0)
    start = torch.randn(6, 3)
    dense, lazy = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    reference, ours = torch.optim.Adam([dense], lr=0.01, weight_decay=0.1), LazyAdam([lazy], lr=0.01, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(6, 3)
        dense.grad, lazy.grad = grad.clone(), grad.clone()
        reference.step()
        ours.step()
    torch.testing.assert_close(lazy, dense)
    sparse = torch.nn.Parameter(start.clone())
    rows_only = LazyAdam([sparse], lr=0.01)
    grad = torch.randn(2, 3)
    sparse.grad = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), grad, (6, 3))
    rows_only.step()
    one = torch.nn.Parameter(start[[1, 4]].clone())
    one.grad = grad.clone()
    torch.optim.Adam([one], lr=0.01).step()
    torch.testing.assert_close(sparse.detach()[[1, 4]], one.detach())
    torch.testing.assert_close(sparse.detach()[[0, 2, 3, 5]], start[[0, 2, 3, 5]])
    # an uncoalesced gradient (two gathers of the same table in a step) sums its duplicate rows
    twice = torch.nn.Parameter(start.clone())
    twice.grad = torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]), torch.stack([grad[1] / 2, grad[0], grad[1] / 2]),
                                         (6, 3))
    LazyAdam([twice], lr=0.01).step()
    torch.testing.assert_close(twice.detach(), sparse.detach())


@pytest.mark.parametrize(
    ("wiring", "message"),
    [
        ({"fusion": SumFusion(), "encoders": [ItemItemGraph(learned_weight=0.1, source="id")]},
         r"model\.encoders\[0\] \(ItemItemGraph\) has no sampled mode: the learned graph"),
        ({"encoders": [IdEmbedding()], "aux_losses": [UltraGCNLoss()], "bpr_weight": 0.0},
         r"model\.aux_losses\[0\] \(UltraGCNLoss\) has no sampled mode"),
        ({"encoders": [UserItemGraph(num_layers=3)]},
         r"model\.sampling\.fanouts has 2 entries but model\.encoders\[0\] \(UserItemGraph\) samples 3 hops"),
    ],
)
def test_what_cannot_be_sampled_is_refused_when_built(wiring, message, tiny_data):
    with pytest.raises(ConfigError, match=message):
        RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, 8, sampling=Sampling([5, 5]),
                  **wiring)


@pytest.mark.parametrize(("sampling", "message"), [
    ('{"fanouts": [10, 0, 10, 10]}', "model.sampling.fanouts[1] must be an integer >= 1 or -1"),
    ('{"fanouts": [5, 5, 5, 5], "draw_ahead": "maybe"}',
     "model.sampling.init_args.draw_ahead: expected bool or null"),
    ('{"fanouts": [5, 5, 5, 5], "budget": 0}', "model.sampling.budget must be null or an integer >= 1"),
    ('{"fanouts": [5, 5, 5, 5], "budget": 64, "engine": "pyg"}', "model.sampling.budget needs engine 'torch'"),
])
def test_bad_sampling_exits_2_with_the_key(sampling, message, tmp_path, capsys):
    code = main(["fit", "--config", str(ROOT / "configs" / "lightgcn.yaml"), "--model.sampling", sampling,
                 "--trainer.fast_dev_run=true", "--trainer.logger=false"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


BUNDLES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))
REFUSED = {"lattice": "learned graph", "ultragcn": "UltraGCNLoss", "ultragcn_gowalla": "UltraGCNLoss",
           "lightgcn_gowalla": "drop the optimizer section (LazyAdam then uses model.lr"}


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_every_bundle_trains_sampled_or_is_refused_in_one_line(path, tmp_path, tiny_data, capsys):
    args = ["fit", "--config", str(path), "--model.sampling", '{"fanouts": [4, 4, 4, 4]}',  # LightGCN has K=4
            "--trainer.fast_dev_run=true", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.default_root_dir", str(tmp_path)]
    if path.stem.endswith("_gowalla"):
        from recplug.core.data.formats.lightgcn import write_lightgcn

        args += ["--data.path", str(write_lightgcn(tiny_data, tmp_path / "tiny_lightgcn"))]
    code = main(args)
    err = capsys.readouterr().err
    if path.stem in REFUSED:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and REFUSED[path.stem] in errors[0], err
    else:
        assert code == 0, err[-2000:]


def test_a_node_budget_trains_both_graphs_of_crane(tmp_path, tiny_data, capsys):
    """model.sampling.budget thins the user-item, kNN and profile hops alike (recplug.core.ops.sampling)."""
    code = main(["fit", "--config", str(ROOT / "configs" / "crane.yaml"), "--data.path",
                 str(write_mmrec(tiny_data, tmp_path / "data")), "--model.sampling",
                 '{"fanouts": [4, 4, 4], "budget": 6}', "--trainer.max_epochs=1", "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err[-2000:]


def test_an_optimizer_section_naming_lazy_adam_trains_sampled_with_its_lr_schedule(tmp_path, tiny_data, capsys):
    from recplug.core.data.formats.lightgcn import write_lightgcn

    code = main(["fit", "--config", str(ROOT / "configs" / "lightgcn_gowalla.yaml"), "--model.sampling",
                 '{"fanouts": [4, 4, 4]}', "--optimizer.class_path", "recplug.core.model.sampled.LazyAdam",
                 "--optimizer.init_args.lr", "0.001", "--data.path",
                 str(write_lightgcn(tiny_data, tmp_path / "tiny_lightgcn")), "--trainer.fast_dev_run=true",
                 "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir",
                 str(tmp_path)])
    assert code == 0, capsys.readouterr().err[-2000:]


@pytest.mark.parametrize("draw_ahead", [None, True], ids=["default", "draw_ahead"])
def test_sampled_epochs_are_reproducible_and_differ_by_epoch(draw_ahead, tiny_data, tmp_path):
    """Drawn in the step (the default on CPU) or one batch ahead in a thread (model.sampling.draw_ahead)."""
    folder = write_mmrec(tiny_data, tmp_path / "data")

    def fit(epochs: int) -> dict[str, torch.Tensor]:
        pl.seed_everything(3)
        data = RecDataModule(str(folder), batch_size=64, seed=3)
        model = RecModule(data.num_users, data.num_items, data.feature_dims, 8,
                          sampling=Sampling([3, 3], draw_ahead=draw_ahead), encoders=[UserItemGraph(num_layers=2)])
        pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   limit_val_batches=0, enable_model_summary=False).fit(model, data)
        assert data.draw == (model.draw_batch if draw_ahead else None)  # on CPU only when asked for
        return {k: v.clone() for k, v in model.state_dict().items()}

    first, again, longer = fit(1), fit(1), fit(2)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["user_embedding.weight"], longer["user_embedding.weight"])


def test_lazy_adam_matches_sparse_adam_as_the_rows_per_step_grow_and_shrink():
    """Its scratch tensors are reused across steps of different row counts (and parameters of other shapes)."""
    torch.manual_seed(0)
    tables = [torch.randn(8, 3), torch.randn(5, 2)]
    ours = [torch.nn.Parameter(t.clone()) for t in tables]
    reference = [torch.nn.Parameter(t.clone()) for t in tables]
    lazy, sparse_adam = LazyAdam(ours, lr=0.01), torch.optim.SparseAdam(reference, lr=0.01)
    for rows in ([1, 4], [0, 2, 3, 5, 7, 1], [2]):
        for mine, theirs in zip(ours, reference):
            index = torch.tensor([[r for r in rows if r < mine.shape[0]]])
            grad = torch.randn(index.shape[1], mine.shape[1])
            mine.grad = torch.sparse_coo_tensor(index, grad, mine.shape).coalesce()
            theirs.grad = mine.grad.clone()
        lazy.step()
        sparse_adam.step()
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine.detach(), theirs.detach())


def test_fanouts_beyond_the_deepest_encoder_are_warned_of(tiny_data) -> None:
    """The extra entries were dropped without a word ("uses the first L")."""
    with pytest.warns(UserWarning, match=r"model.sampling.fanouts has 3 entries but the deepest encoder samples 2 "
                                         r"hop\(s\): the entries after the first 2 are not used"):
        RecModule(tiny_data.num_users, tiny_data.num_items, sampling=Sampling([5, 5, 5]),
                  encoders=[UserItemGraph(num_layers=2)])


@pytest.mark.parametrize(("settings", "message"), [
    ({"lr": -1.0}, "LazyAdam: lr must be >= 0, got -1.0"), ({"lr": float("nan")}, "LazyAdam: lr must be >= 0, got nan"),
    ({"betas": (0.9, 1.0)}, r"LazyAdam: betas must be in \[0, 1\), got 1.0"), ({"eps": -1e-8}, "LazyAdam: eps must"),
    ({"weight_decay": -1.0}, "LazyAdam: weight_decay must be >= 0"),
])
def test_lazy_adam_refuses_bad_settings_by_name(settings: dict, message: str) -> None:
    """A negative lr trained until the first step, then was blamed on the lr_scheduler."""
    from recplug.core.errors import InvalidArgument
    from recplug.core.model.sampled import LazyAdam

    with pytest.raises(InvalidArgument, match=f"^{message}"):
        LazyAdam([torch.nn.Parameter(torch.zeros(2))], **settings)


@pytest.mark.parametrize(("params", "message"), [
    ([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1}], r"LazyAdam: param_groups\[0\].lr must be >= 0"),
    ([{"params": [torch.nn.Parameter(torch.zeros(2))], "betas": (0.9, 0.9, 0.9)}],
     r"LazyAdam: param_groups\[0\].betas must be two numbers"),
    ([], r"LazyAdam: params must be a non-empty list"),
    (torch.zeros(3), r"LazyAdam: params must be an iterable of parameters"),
])
def test_lazy_adam_refuses_bad_parameter_groups_by_name(params, message: str) -> None:
    """A group's own lr and betas were not checked; an empty list or a tensor was torch's error (fuzz round 5)."""
    from recplug.core.errors import InvalidArgument
    from recplug.core.model.sampled import LazyAdam

    with pytest.raises(InvalidArgument, match=message):
        LazyAdam(params)
    optimizer = LazyAdam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(InvalidArgument, match=r"param_groups\[1\].eps must be >= 0"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "eps": -1.0})
    assert len(optimizer.param_groups) == 1
