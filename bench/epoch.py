"""Seconds per training epoch of the LightGCN and FREEDOM bundles on Gowalla, against their floor.

    python bench/epoch.py [--data /work/shared/data/gowalla] [--batch-size 2048] [--bundles lightgcn freedom]

Each bundle runs through the real CLI parser (``configs/<bundle>.yaml``, one epoch, no validation). The floor
is what an epoch cannot avoid, measured alone in the same run: one epoch of sampler draws (permutation plus
rejection-sampled negatives) plus, per training step, one forward+backward of the bundle's propagation (fusion
and every graph view; FREEDOM on its pruned graph), timed every 25 steps during the epoch itself so that both
see the same machine load (the probes' time is excluded from the epoch's). Gowalla has no item features, so for FREEDOM's kNN graph
the bench adds seeded random ``image`` (128-d) and ``text`` (96-d) features in a temporary copy of the folder.
Last line: ``ratio=<x>``, the worst bundle's epoch time over its floor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from recplug.core.cli.main import run_cli
from recplug.core.data.formats.lightgcn import read_lightgcn
from recplug.core.data.sampler import BPRTrainSet
from timing import EpochTimer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class ProbingEpochTimer(EpochTimer):
    """Also times, every ``every`` steps, one propagation pass alone (forward+backward of the model's stages, no
    loss or optimiser) under the same load; the probes' own time is excluded from the epoch."""

    def __init__(self, every: int = 25) -> None:
        super().__init__()
        self.every = every
        self.probes: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        if trainer.global_step % self.every:
            return
        start = time.perf_counter()
        out = module()
        (out.users.sum() + out.items.sum()).backward()
        module.zero_grad(set_to_none=True)
        self.probes.append(time.perf_counter() - start)
        self.paused += self.probes[-1]


def with_features(source: Path, folder: Path, num_items: int) -> Path:
    """``source``'s LightGCN files plus seeded random ``image``/``text`` features, in ``folder``."""
    rng = np.random.default_rng(0)
    for name in ("train.txt", "test.txt"):
        (folder / name).symlink_to(source / name)
    np.save(folder / "image_feat.npy", rng.standard_normal((num_items, 128), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((num_items, 96), dtype=np.float32))
    return folder


def sampler_seconds(data, batch_size: int) -> float:
    """One epoch of sampler draws: the permutation and the rejection-sampled negatives."""
    users, items = data.split("train")
    sampler = BPRTrainSet(users, items, data.num_items, batch_size)
    start = time.perf_counter()
    sampler.sample_epoch(0)
    return time.perf_counter() - start


def run_bundle(bundle: str, data_path: Path, batch_size: int, root: Path) -> tuple[float, float]:
    timer = ProbingEpochTimer()
    cli = run_cli(
        [
            "--config", str(CONFIGS / f"{bundle}.yaml"),
            "--data.path", str(data_path), "--data.batch_size", str(batch_size),
            "--data.cache_dir", str(root / "cache"),
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.callbacks", "[]",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
        ],
        run=False,
    )
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    steps = cli.trainer.num_training_batches
    sampling = sampler_seconds(cli.datamodule.data, batch_size)
    propagation = statistics.median(timer.probes)
    floor = sampling + steps * propagation
    print(f"{bundle}: {timer.train[-1]:.1f} s/epoch ({steps} steps of {batch_size}); floor {floor:.1f} s "
          f"(sampler {sampling:.1f} s + {steps} x propagation {propagation:.3f} s, median of {len(timer.probes)} "
          f"probes during the epoch); {timer.train[-1] / floor:.2f}x", flush=True)
    return timer.train[-1], floor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/gowalla"))
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--bundles", nargs="+", default=["lightgcn", "freedom"])
    args = parser.parse_args(argv)
    num_items = read_lightgcn(args.data).num_items
    ratios = []
    with tempfile.TemporaryDirectory(prefix="recplug-bench-") as tmp:
        data_path = with_features(args.data, Path(tmp), num_items)
        for bundle in args.bundles:
            epoch, floor = run_bundle(bundle, data_path, args.batch_size, Path(tmp) / bundle)
            ratios.append(epoch / floor)
    print(f"ratio={max(ratios):.2f}")


if __name__ == "__main__":
    main()
