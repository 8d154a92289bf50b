"""Reproducibility and resumption: same seed, same results; a SIGKILLed run resumes to the same end."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]


def cli_args(config: str, root: Path, *extra: str) -> list[str]:
    logger = '{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "%s", "name": "run"}}'
    return ["fit", "--config", str(ROOT / "configs" / config), "--trainer.default_root_dir", str(root),
            f"--trainer.logger={logger % root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *extra]


def logged(root: Path, version: int = 0) -> list[dict[str, str]]:
    return list(csv.DictReader(open(root / "run" / f"version_{version}" / "metrics.csv")))


def metric_values(rows: list[dict[str, str]], prefix: str) -> dict[str, list[float]]:
    keys = sorted({k for row in rows for k in row if k.startswith(prefix)})
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in keys}


def test_same_seed_gives_identical_metrics_weights_and_topk(tmp_path) -> None:
    from recplug.core.cli.main import main

    # bitwise reproducibility is promised on CPU; CUDA kernels such as index_add are not deterministic (README)
    extra = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--seed_everything=3",
             "--trainer.accelerator=cpu")
    for name in ("a", "b"):
        assert main(cli_args("crane.yaml", tmp_path / name, *extra)) == 0
    for prefix in ("val/", "test/"):
        assert metric_values(logged(tmp_path / "a"), prefix) == metric_values(logged(tmp_path / "b"), prefix)
    # epoch-mean training losses are summed by multi-threaded reductions: equal to float precision
    train = [metric_values(logged(tmp_path / n), "train/") for n in ("a", "b")]
    assert train[0].keys() == train[1].keys()
    for key in train[0]:
        assert train[0][key] == pytest.approx(train[1][key], rel=1e-6), key
    states = [torch.load(tmp_path / n / "run" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
              for n in ("a", "b")]
    for key, value in states[0]["state_dict"].items():
        assert torch.equal(value, states[1]["state_dict"][key]), key


def test_different_seeds_differ(tmp_path) -> None:
    from recplug.core.cli.main import main

    for seed in (1, 2):
        assert main(cli_args("mf.yaml", tmp_path / str(seed), "--trainer.max_epochs=1",
                             "--trainer.limit_train_batches=2", f"--seed_everything={seed}")) == 0
    assert metric_values(logged(tmp_path / "1"), "train/") != metric_values(logged(tmp_path / "2"), "train/")


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    """Kill `recplug fit` after its second epoch checkpoint, resume from last.ckpt, compare final test metrics."""
    extra = ("--trainer.max_epochs=4", "--data.batch_size=256", "--seed_everything=5")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "recplug.core.cli.main"]

    subprocess.run(command + cli_args("crane.yaml", tmp_path / "full", *extra), check=True, env=env,
                   capture_output=True)

    interrupted = tmp_path / "killed"
    last = interrupted / "run" / "version_0" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(command + cli_args("crane.yaml", interrupted, *extra), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                if torch.load(last, weights_only=True)["epoch"] >= 1:
                    break
            except (FileNotFoundError, RuntimeError, EOFError):  # not written yet, or being written
                pass
            if process.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not metric_values(logged(interrupted), "test/"), "killed before testing"

    subprocess.run(command + cli_args("crane.yaml", interrupted, *extra, "--ckpt_path", str(last)),
                   check=True, env=env, capture_output=True)
    resumed = metric_values(logged(interrupted, version=1), "test/")
    assert resumed and resumed == metric_values(logged(tmp_path / "full"), "test/")


def test_resuming_a_run_logged_under_a_relative_folder_keeps_its_checkpoints(tmp_path, monkeypatch) -> None:
    """The bundles log under the relative `runs/`; resuming from `runs/.../last.ckpt` must restore the best score
    and update `last.ckpt` (Lightning compared the saved relative folder with the resumed absolute one, dropped
    the best score and wrote last-v1.ckpt)."""
    from recplug.core.cli.main import main

    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.limit_train_batches=2",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    folder = Path("runs/mf/version_0/checkpoints")
    assert main([*args, "--trainer.max_epochs=1"]) == 0
    saved = torch.load(folder / "last.ckpt", weights_only=True)["callbacks"]
    score = next(state["best_model_score"] for key, state in saved.items() if key.startswith("ModelCheckpoint"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "The dirpath has changed ..."
        warnings.filterwarnings("ignore", message="(?!The dirpath)")
        assert main([*args, "--trainer.max_epochs=2", "--ckpt_path", str(folder / "last.ckpt")]) == 0
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("last")) == ["last.ckpt"]
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    state = next(state for key, state in resumed["callbacks"].items() if key.startswith("ModelCheckpoint"))
    assert state["best_model_score"] >= score  # the first run's best was kept as the bar to beat


def test_absolute_checkpoint_paths_resolves_relative_paths_only(tmp_path, monkeypatch) -> None:
    from recplug.core.model.checkpoint import absolute_checkpoint_paths

    monkeypatch.chdir(tmp_path)
    here = os.path.realpath(tmp_path)
    checkpoint = {"callbacks": {
        "ModelCheckpoint{'monitor': 'val/recall@20'}": {
            "dirpath": "runs/c", "best_model_path": "runs/c/best.ckpt", "kth_best_model_path": "",
            "last_model_path": "/abs/last.ckpt", "best_k_models": {"runs/c/best.ckpt": 0.5}},
        "EarlyStopping{'monitor': 'val/recall@20'}": {"dirpath": "runs/c"},
    }}
    absolute_checkpoint_paths(checkpoint)
    state = checkpoint["callbacks"]["ModelCheckpoint{'monitor': 'val/recall@20'}"]
    assert state == {"dirpath": f"{here}/runs/c", "best_model_path": f"{here}/runs/c/best.ckpt",
                     "kth_best_model_path": "", "last_model_path": "/abs/last.ckpt",
                     "best_k_models": {f"{here}/runs/c/best.ckpt": 0.5}}
    assert checkpoint["callbacks"]["EarlyStopping{'monitor': 'val/recall@20'}"] == {"dirpath": "runs/c"}
