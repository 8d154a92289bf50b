"""The cold-start metric groups on a hand-made case (all, warm, cold, cold-only, with masking and a user without
training interactions), NaN where the model scores no cold item, and the names RecModule logs them under."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from recplug.core.data.datamodule import RecDataModule
from recplug.core.data.dataset import InteractionData
from recplug.core.data.formats.mmrec import write_mmrec
from recplug.core.eval.evaluator import GROUPS, RankingEvaluation
from recplug.core.model.module import RecModule
from recplug.plugins.embedding import ContentView, IdEmbedding
from recplug.plugins.fusion import ConcatFusion
from recplug.plugins.combine import ConcatCombiner

# Items 4 and 5 are cold. Scores (user x item); masked: train, and valid at test time.
SCORES = torch.tensor([
    [9.0, 5, 1, 2, 8, 0],  # u0: train {0}            test {1, 4}  -> ranks 4, 1, ...
    [0.0, 3, 9, 1, 7, 2],  # u1: train {1}, valid {0} test {5}     -> ranks 2, 4, 5, ...
    [1.0, 2, 0, 6, 5, 9],  # u2: train {2}, valid {5} test {3, 4}  -> ranks 3, 4, ...; cold-only: 4 alone
    [1.0, 1, 1, 1, 1, 1],  # u3: no training interaction, test {0}: left out of every group
])
TRAIN = ([0, 1, 2], [0, 1, 2])
VALID = ([1, 2], [0, 5])
TEST = ([0, 0, 1, 2, 2, 3], [1, 4, 5, 3, 4, 0])
EXPECTED = {  # recall@1, recall@2, worked out by hand in the comments above
    "": (1 / 3, 2 / 3),          # u0 1/2, 1 | u1 0, 0 | u2 1/2, 1
    "warm": (1 / 2, 1.0),        # u0 {1}: 0, 1 | u2 {3}: 1, 1 (u1 has no warm held-out item)
    "cold": (1 / 3, 2 / 3),      # u0 {4}: 1, 1 | u1 {5}: 0, 0 | u2 {4}: 0, 1
    "coldonly": (2 / 3, 1.0),    # u0 [4, 5]: 1, 1 | u1 [4, 5]: 0, 1 | u2 [4] (5 masked): 1, 1
}


def columns(split: tuple[list[int], list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(split[0]), torch.tensor(split[1])


@pytest.fixture
def hand_made(tmp_path: Path) -> RecDataModule:
    data = InteractionData(name="hand", num_users=4, num_items=6,
                           splits={"train": columns(TRAIN), "valid": columns(VALID), "test": columns(TEST)})
    dm = RecDataModule(str(write_mmrec(data, tmp_path / "hand")))
    dm.data = InteractionData(name="hand", num_users=4, num_items=6, splits=dm.data.splits,
                              cold_items=torch.tensor([4, 5]))
    return dm


def evaluate_test(dm: RecDataModule, cold_scored: bool) -> dict[str, float]:
    evaluation = RankingEvaluation(ks=[1, 2], metrics=["recall"])
    evaluation.start(dm, "test", SCORES, torch.eye(6), None, cold_scored=cold_scored)
    evaluation.update(dm.eval_task("test").users)
    return {name: float(value) for name, value in evaluation.compute().items()}


def test_each_group_ranks_and_counts_as_worked_out_by_hand(hand_made: RecDataModule) -> None:
    assert hand_made.eval_task("test").users.tolist() == [0, 1, 2]  # u3 has no training interaction
    values = evaluate_test(hand_made, cold_scored=True)
    for group, (at1, at2) in EXPECTED.items():
        prefix = f"{group}/" if group else ""
        assert values[f"{prefix}recall@1"] == pytest.approx(at1) and values[f"{prefix}recall@2"] == pytest.approx(at2)


def test_a_model_that_scores_no_cold_item_gets_nan_for_the_cold_groups(hand_made: RecDataModule) -> None:
    values = evaluate_test(hand_made, cold_scored=False)
    assert values["recall@2"] == pytest.approx(2 / 3) and values["warm/recall@2"] == pytest.approx(1.0)
    assert all(math.isnan(values[f"{g}/recall@{k}"]) for g in ("cold", "coldonly") for k in (1, 2))


def test_without_cold_items_only_the_all_item_metrics_exist(hand_made: RecDataModule) -> None:
    hand_made.data = InteractionData(name="hand", num_users=4, num_items=6, splits=hand_made.data.splits)
    assert sorted(evaluate_test(hand_made, cold_scored=True)) == ["recall@1", "recall@2"]


def test_the_module_logs_each_group_under_its_stage(tmp_path: Path) -> None:
    dm = RecDataModule(cold_items=0.2, eval_batch_size=1500)
    run = dict(max_epochs=1, limit_train_batches=2, logger=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    mf = RecModule(dm.num_users, dm.num_items, evaluation=RankingEvaluation(ks=[20], metrics=["recall"]))
    with pytest.warns(UserWarning, match="cannot score them"):
        (trainer := pl.Trainer(**run)).fit(mf, datamodule=dm)
    logged = trainer.callback_metrics
    assert {"val/recall@20", *(f"val_{g}/recall@20" for g in GROUPS)} <= set(logged)
    assert math.isnan(float(logged["val_cold/recall@20"])) and not math.isnan(float(logged["val_warm/recall@20"]))
    vbpr = RecModule(dm.num_users, dm.num_items, dm.feature_dims, fusion=ConcatFusion(),
                     encoders=[IdEmbedding(), ContentView()], combiner=ConcatCombiner(),
                     evaluation=RankingEvaluation(ks=[20], metrics=["recall"]))
    (trainer := pl.Trainer(**run)).fit(vbpr, datamodule=dm)
    trainer.test(vbpr, datamodule=dm)
    assert all(not math.isnan(float(trainer.callback_metrics[f"test_{g}/recall@20"])) for g in GROUPS)


DDP_SCRIPT = """
import json, sys
import pytorch_lightning as pl, torch
from recplug.core.data.datamodule import RecDataModule
from recplug.core.eval.evaluator import RankingEvaluation
from recplug.core.model.module import RecModule
from recplug.plugins.combine import ConcatCombiner
from recplug.plugins.embedding import ContentView, IdEmbedding
from recplug.plugins.fusion import ConcatFusion

dm = RecDataModule(cold_items=0.2, cold_seed=1, eval_batch_size=700)
module = RecModule(dm.num_users, dm.num_items, dm.feature_dims, fusion=ConcatFusion(),
                   encoders=[IdEmbedding(), ContentView()], combiner=ConcatCombiner(),
                   evaluation=RankingEvaluation(ks=[10, 20]))
module.load_state_dict(torch.load(sys.argv[1]))
run = pl.Trainer(accelerator="cpu", devices=3, strategy="ddp",
                 logger=False, enable_progress_bar=False, enable_model_summary=False)
run.validate(module, datamodule=dm)
if run.global_rank == 0:
    json.dump({k: float(v) for k, v in run.callback_metrics.items()}, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_ddp_on_three_processes_gives_the_single_process_groups(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    dm = RecDataModule(cold_items=0.2, cold_seed=1, eval_batch_size=700)
    module = RecModule(dm.num_users, dm.num_items, dm.feature_dims, fusion=ConcatFusion(),
                       encoders=[IdEmbedding(), ContentView()], combiner=ConcatCombiner(),
                       evaluation=RankingEvaluation(ks=[10, 20]))
    module.prepare(dm.data)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=3", "--master_port=29519",
         str(tmp_path / "ddp.py"), str(tmp_path / "weights.pt"), str(tmp_path / "metrics.json")],
        check=True, cwd=tmp_path, timeout=300,
    )
    sharded = json.loads((tmp_path / "metrics.json").read_text())
    single = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    single.validate(module, datamodule=dm)
    keys = [k for k in single.callback_metrics if k.startswith(("val/", *(f"val_{g}/" for g in GROUPS)))]
    assert len(keys) == 4 * 12 and len(dm.eval_task("valid").users) % 3 != 0
    for key in keys:
        assert sharded[key] == pytest.approx(float(single.callback_metrics[key]), abs=1e-9), key
