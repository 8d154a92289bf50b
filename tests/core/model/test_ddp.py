"""Multi-process training and evaluation through Lightning's DDP strategy (gloo on CPU)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recplug.core.data.datamodule import RecDataModule

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def recplug(*args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "recplug.core.cli.main", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def last_metrics(root: Path, prefix: str) -> dict[str, float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith(prefix) and v}


@pytest.mark.parametrize(("config", "sampling"), [
    ("crane_rca", None), ("crane_rca", '{"fanouts": [5, 5]}'), ("lightgcn", '{"fanouts": [3, 3, 3, 3]}'),
], ids=["full", "sampled", "sampled-id-tables-only"])  # the last: no dense parameter, DDP refused to wrap it
def test_two_process_ddp_trains_and_evaluates_like_one_process(tmp_path, config, sampling) -> None:
    common = ["--config", str(ROOT / "configs" / f"{config}.yaml"), "--trainer.enable_progress_bar=false",
              "--trainer.accelerator=cpu"]
    if sampling is not None:  # row-sparse gradients of the ID tables and RCA's features, all-reduced by gloo
        common += ["--model.sampling", sampling]
    logger = '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "."}}'
    # training under DDP: 2 processes, each a disjoint half of every epoch
    recplug("fit", *common, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=2",
            logger, cwd=tmp_path.joinpath("train").mkdir() or tmp_path / "train")
    ckpt = next((tmp_path / "train").rglob("last.ckpt"))
    module = RecDataModule("default", batch_size=yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
                           ["data"]["batch_size"])
    module.setup("fit")
    shard = -(-module.data.split("train")[0].numel() // 2)
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2 * -(-shard // module.batch_size)
    # the same weights evaluated by 1 and by 2 processes
    for name, devices in (("one", "1"), ("two", "2")):
        folder = tmp_path / name
        folder.mkdir()
        extra = ["--trainer.strategy=ddp"] if devices == "2" else []
        recplug("validate", *common, f"--trainer.devices={devices}", *extra, "--ckpt_path", str(ckpt), logger,
                cwd=folder)
    one, two = last_metrics(tmp_path / "one", "val/"), last_metrics(tmp_path / "two", "val/")
    assert one and one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
