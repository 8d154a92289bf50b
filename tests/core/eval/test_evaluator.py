"""BatchEval in a real Trainer: the module's own validation/test steps log metrics equal to a brute-force reference
on its cached embeddings (and to ``evaluate``), with a bare Trainer and no CLI; test uses the best-validation
checkpoint, DDP shards count every user once, predict writes top-k, and GRMF-X ratios."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler
from test_metrics import assert_close, numpy_reference

from recplug.core.data.datamodule import RecDataModule
from recplug.core.errors import ConfigError
from recplug.core.eval.evaluator import RankingEvaluation, TopKWriter, _samples_on_rank, evaluate, rec_datamodule
from recplug.core.eval.grmfx import grmfx, representation_size
from recplug.core.eval.metrics import METRICS
from recplug.core.model.module import RecModule
from recplug.core.eval.search import FaissFlatSearch

KS = [10, 20]


def dense(csr: tuple[torch.Tensor, torch.Tensor], num_items: int) -> np.ndarray:
    indptr, items = csr
    out = np.zeros((len(indptr) - 1, num_items), dtype=bool)
    rows = np.repeat(np.arange(len(indptr) - 1), (indptr[1:] - indptr[:-1]).numpy())
    out[rows, items.numpy()] = True
    return out


def brute_force(module: RecModule, dm: RecDataModule, split: str, seen_splits: tuple[str, ...]) -> dict[str, float]:
    users, items = module.cached_embeddings()
    scores = (users.cpu() @ items.cpu().T).numpy()
    scores[dense(dm.data.user_csr(seen_splits), dm.num_items)] = -np.inf
    return numpy_reference(scores, dense(dm.data.user_csr(split), dm.num_items), KS)


def trainer(tmp_path: Path, *callbacks: pl.Callback, **kwargs) -> pl.Trainer:
    options = dict(max_epochs=1, limit_train_batches=2, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    options.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **options)


def logged(trainer_: pl.Trainer, stage: str) -> dict[str, float]:
    return {f"{m}@{k}": float(trainer_.callback_metrics[f"{stage}/{m}@{k}"]) for m in METRICS for k in KS}


@pytest.fixture(scope="module")
def dm() -> RecDataModule:
    return RecDataModule(eval_batch_size=700)  # several batches, the last one partial


def test_validation_metrics_logged_by_the_trainer_equal_brute_force(dm: RecDataModule, tmp_path: Path) -> None:
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items, lr=0.05, evaluation=RankingEvaluation(ks=KS))
    run = trainer(tmp_path)
    run.fit(module, datamodule=dm)
    assert {f"val/{m}@{k}" for m in METRICS for k in KS} <= set(run.callback_metrics)
    assert_close(logged(run, "val"), brute_force(module, dm, "valid", ("train",)), tol=1e-6)


def test_test_reports_the_best_validation_checkpoint(dm: RecDataModule, tmp_path: Path) -> None:
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items, lr=0.05, evaluation=RankingEvaluation(ks=KS))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/recall@20", mode="max")
    stop = EarlyStopping(monitor="val/recall@20", mode="max", patience=5)
    run = trainer(tmp_path, checkpoint, stop, max_epochs=3)
    run.fit(module, datamodule=dm)
    assert checkpoint.best_model_path and stop.best_score is not None
    run.test(module, datamodule=dm, ckpt_path="best", weights_only=False)
    best = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    best.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=False)["state_dict"])
    assert_close(logged(run, "test"), brute_force(best, dm, "test", ("train", "valid")), tol=1e-6)


def test_a_bare_trainer_fit_and_test_log_the_metrics_of_evaluate(tiny_folder: Path, tmp_path: Path) -> None:
    """No CLI and no callback: the module's own validation/test steps log val/ and test/ metrics, equal to
    ``evaluate`` on the same cached embeddings and the datamodule's tasks."""
    data = RecDataModule(path=str(tiny_folder), eval_batch_size=64)  # several user batches per epoch
    module = RecModule(num_users=data.num_users, num_items=data.num_items, embedding_dim=8, lr=0.05)
    run = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, default_root_dir=tmp_path)
    run.fit(module, datamodule=data)
    users, items = module.cached_embeddings()
    for stage, split in (("val", "valid"), ("test", "test")):
        if stage == "test":
            run.test(module, datamodule=data)
        task = data.eval_task(split)
        expected = evaluate(users, items, task.truth, task.seen)
        assert {f"{stage}/{name}" for name in expected} <= set(run.callback_metrics)
        assert float(run.callback_metrics[f"{stage}/recall@20"]) == pytest.approx(expected["recall@20"], abs=1e-6)
        assert 0 < expected["recall@20"] < 1


def test_evaluation_and_prediction_need_a_rec_datamodule_and_an_embedding_model(tmp_path: Path) -> None:
    bare = trainer(tmp_path)
    with pytest.raises(ConfigError, match=r"^RecModule's evaluation needs a RecDataModule, got no datamodule: "):
        rec_datamodule(bare, "RecModule's evaluation")
    bare.datamodule = pl.LightningDataModule()
    with pytest.raises(ConfigError, match=r"^TopKWriter needs a RecDataModule, got a LightningDataModule: "):
        rec_datamodule(bare, "TopKWriter")
    with pytest.raises(ConfigError, match=r"^TopKWriter ranks with a RecModule's embeddings; LightningModule has"):
        TopKWriter(output_path=str(tmp_path / "top.tsv")).setup(bare, pl.LightningModule(), "predict")
    module = RecModule(num_users=5, num_items=4)
    module.trainer = bare
    with pytest.raises(ConfigError, match=r"^RecModule needs a RecDataModule, got a LightningDataModule: "):
        module.setup("fit")  # was a RuntimeError (a traceback)


def test_a_search_that_is_no_vector_search_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^eval.search must be a VectorSearch .*, got str$"):
        RankingEvaluation(search="bogus")  # type: ignore[arg-type]


def test_cutoffs_beyond_the_catalogue_are_refused_before_training(tiny_folder: Path, tmp_path: Path) -> None:
    data = RecDataModule(path=str(tiny_folder))
    module = RecModule(num_users=data.num_users, num_items=data.num_items, evaluation=RankingEvaluation(ks=[151]))
    with pytest.raises(ConfigError, match=r"^eval.ks must be in \[1, 150\] \(the number of items\), got 151$"):
        trainer(tmp_path).fit(module, datamodule=data)
    assert module.global_step == 0


def test_evaluate_outside_a_trainer_with_faiss_equals_brute_force(dm: RecDataModule) -> None:
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    users, items = module.cached_embeddings()
    task = dm.eval_task("valid")
    ours = evaluate(users, items, task.truth, task.seen, ks=KS, search=FaissFlatSearch(), batch_size=999)
    assert_close(ours, brute_force(module, dm, "valid", ("train",)), tol=1e-6)


def test_predict_writes_every_users_top_k_without_seen_items(dm: RecDataModule, tmp_path: Path) -> None:
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    out = tmp_path / "out" / "top.tsv"
    run = trainer(tmp_path, TopKWriter(output_path=str(out), k=10))
    run.predict(module, datamodule=dm, return_predictions=False)
    lines = out.read_text().splitlines()
    assert lines[0] == "user\titems\tscores" and len(lines) == dm.num_users + 1
    users, items = module.cached_embeddings()
    scores = users.cpu() @ items.cpu().T
    seen = torch.from_numpy(dense(dm.data.user_csr(("train", "valid")), dm.num_items))
    scores[seen] = float("-inf")
    expected = torch.topk(scores, 10)
    for line in lines[1:]:
        user, ranked, values = line.split("\t")
        ranked_items = [int(i) for i in ranked.split(",")]
        assert not seen[int(user), ranked_items].any()
        assert ranked_items == expected.indices[int(user)].tolist()
        np.testing.assert_allclose([float(v) for v in values.split(",")], expected.values[int(user)], rtol=1e-5)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_is_named_by_its_option(dm: RecDataModule, tmp_path: Path, capfd) -> None:
    """``/dev/full`` was a bare ``[Errno 28] No space left on device``; the failure comes from a batch's write or, for
    a short output still buffered, from the closing flush, which must not be retried (and reported) at exit."""
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    message = r"^topk\.output_path /dev/full: cannot be written \(No space left on device\)$"
    with pytest.raises(ConfigError, match=message):
        trainer(tmp_path, TopKWriter(output_path="/dev/full", k=10)).predict(module, datamodule=dm,
                                                                            return_predictions=False)
    writer = TopKWriter(output_path="/dev/full")
    writer._path, writer._file = Path("/dev/full"), writer._output.enter_context(open("/dev/full", "w", encoding="utf-8"))
    writer._file.write("user\titems\tscores\n")  # buffered: fails when closed
    with pytest.raises(ConfigError, match=message):
        writer.on_predict_epoch_end(trainer(tmp_path), module)
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_predict_that_fails_midway_leaves_the_earlier_output_whole(dm: RecDataModule, tmp_path: Path) -> None:
    """The top-k file is written whole or not at all: a failure after some batches (here the non-finite scores of
    an untrained, broken model, on the second batch) keeps the earlier file and leaves no temporary one."""
    module = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    out = tmp_path / "top.tsv"
    trainer(tmp_path, TopKWriter(output_path=str(out), k=10)).predict(module, datamodule=dm, return_predictions=False)
    before = out.read_bytes()
    with torch.no_grad():
        module.user_embedding.weight[dm.eval_batch_size:] = float("nan")
    with pytest.raises(ConfigError, match="finite"):
        trainer(tmp_path, TopKWriter(output_path=str(out), k=10)).predict(module, datamodule=dm,
                                                                         return_predictions=False)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["top.tsv"]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sharded_loaders_count_each_user_once(world: int) -> None:
    users = torch.arange(101, 1200, 7)  # 157 users: DistributedSampler pads some shards with repeats
    counted: list[int] = []
    for rank in range(world):
        loader = DataLoader(users, batch_size=10, sampler=DistributedSampler(users, world, rank, shuffle=False))
        real = _samples_on_rank(loader)
        assert real is not None
        counted += torch.cat(list(loader))[:real].tolist()
    assert sorted(counted) == users.tolist()
    assert _samples_on_rank(DataLoader(users)) is None


DDP_SCRIPT = """
import json, sys
import pytorch_lightning as pl, torch
from recplug.core.data.datamodule import RecDataModule
from recplug.core.errors import ConfigError
from recplug.core.eval.evaluator import RankingEvaluation
from recplug.core.model.module import RecModule

dm = RecDataModule(eval_batch_size=700)
module = RecModule(num_users=dm.num_users, num_items=dm.num_items, evaluation=RankingEvaluation(ks=[10, 20]))
module.load_state_dict(torch.load(sys.argv[1]))
run = pl.Trainer(accelerator="cpu", devices=3, strategy="ddp",
                 logger=False, enable_progress_bar=False, enable_model_summary=False)
run.validate(module, datamodule=dm)
if run.global_rank == 0:
    json.dump({k: float(v) for k, v in run.callback_metrics.items()}, open(sys.argv[2], "w"))
# close gloo before exit: a process that exits with the group alive can abort in its teardown ("terminate called
# without an active exception", SIGABRT on one rank: seen twice in CI runs of this test)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_on_three_processes_gives_the_single_process_metrics(dm: RecDataModule, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    module = RecModule(num_users=dm.num_users, num_items=dm.num_items)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=3", "--master_port=29517",
         str(tmp_path / "ddp.py"), str(tmp_path / "weights.pt"), str(tmp_path / "metrics.json")],
        check=True, cwd=tmp_path, timeout=300,
    )
    sharded = json.loads((tmp_path / "metrics.json").read_text())
    single = trainer(tmp_path)
    single.validate(module, datamodule=dm)
    assert len(dm.eval_task("valid").users) % 3 != 0  # so DistributedSampler padded shards with repeated users
    assert_close({k: sharded[f"val/{k}"] for k in logged(single, "val")}, logged(single, "val"), tol=1e-9)


def test_grmfx_is_the_ratio_to_mf_of_the_same_size() -> None:
    model = {"test/recall@20": torch.tensor(0.18), "test/ndcg@20": 0.15, "train/loss": 0.3}
    mf = {"test/recall@20": 0.16, "test/ndcg@20": 0.0}
    ratios = grmfx(model, mf, model_dim=64, mf_dim=64)
    assert ratios["test/recall@20"] == pytest.approx(1.125) and math.isnan(ratios["test/ndcg@20"])
    assert "train/loss" not in ratios
    with pytest.raises(ValueError, match="X=256"):
        grmfx(model, mf, model_dim=256, mf_dim=64)
    with pytest.raises(KeyError, match="ndcg"):
        grmfx(model, {"test/recall@20": 0.1}, model_dim=64, mf_dim=64)
    assert representation_size(RecModule(num_users=3, num_items=4, embedding_dim=8)) == 8
