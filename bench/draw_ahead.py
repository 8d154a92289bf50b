"""Does drawing batch i+1's neighbourhoods while batch i trains pay? An A/B inside one process (issue 18).

    python bench/draw_ahead.py [--size l] [--fanouts 5 5] [--threads 2] [--steps 40] [--rounds 4]

One ``recplug fit`` of sampled LightGCN (2 layers, batch 2048) on ``bench/scale.py``'s synthetic set of that
size. Its epochs alternate (ABBA within each round) between the draw one batch ahead in a background thread
(``RecDataModule.draw``, :class:`~recplug.core.data.sampler.DrawnAhead`) and the draw inside the training step
(``draw = None``), ``--steps`` steps each, no validation. Alternating in one process, with the same data, model
and allocator state, takes out most of the run-to-run noise that separate processes show here (up to 25%).
Prints each epoch's seconds per step, then the medians; last line ``ratio=<x>``: the median step with the draw
ahead over the median step with the draw inside it (below 1.0: the thread pays).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pytorch_lightning as pl
import torch

from scale import CONFIGS, LIGHTGCN_2, SIZES, generate
from timing import EpochTimer


class Alternate(EpochTimer):
    """Times each epoch and switches the next epoch's draw: ABBA per round (A: ahead, B: in the step)."""

    def __init__(self, draw) -> None:
        super().__init__()
        self.draw = draw
        self.arms: list[str] = []

    @staticmethod
    def arm(epoch: int) -> str:
        return "ahead" if epoch % 4 in (0, 3) else "in_step"

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.arms.append(self.arm(trainer.current_epoch))
        super().on_train_epoch_start(trainer, module)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, module)
        following = self.arm(trainer.current_epoch + 1)
        trainer.datamodule.draw = self.draw if following == "ahead" else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="l", choices=sorted(SIZES))
    parser.add_argument("--fanouts", nargs="+", type=int, default=[5, 5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds (4 epochs each)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/recplug-scale"))
    args = parser.parse_args(argv)

    from recplug.core.cli.main import run_cli

    torch.set_num_threads(args.threads)
    folder = args.root / args.size
    generate(folder, *SIZES[args.size])
    cli = run_cli([
        "--config", str(CONFIGS / "lightgcn.yaml"), "--model.encoders", LIGHTGCN_2,
        "--model.sampling", json.dumps({"fanouts": args.fanouts, "draw_ahead": True}), "--data.path", str(folder),
        "--data.batch_size", "2048", "--data.cache_dir", str(args.root / "cache"),
        "--trainer.max_epochs", str(4 * args.rounds), "--trainer.limit_train_batches", str(args.steps),
        "--trainer.limit_val_batches", "0", "--trainer.reload_dataloaders_every_n_epochs", "1",
        "--trainer.callbacks", "[]", "--trainer.logger", "false", "--checkpoint.save_top_k", "0",
        "--checkpoint.save_last", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(args.root / "runs"),
    ], run=False)
    timer = Alternate(cli.model.draw_batch)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    per_step = {"ahead": [], "in_step": []}
    for epoch, (arm, seconds) in enumerate(zip(timer.arms, timer.train)):
        print(f"epoch {epoch} {arm}: {seconds / args.steps:.4f} s/step")
        if epoch > 0:  # the first epoch also pays one-off warm-up
            per_step[arm].append(seconds / args.steps)
    medians = {arm: statistics.median(values) for arm, values in per_step.items()}
    print(f"median s/step: ahead {medians['ahead']:.4f}, in the step {medians['in_step']:.4f} "
          f"({args.size}, fanouts {args.fanouts}, {args.threads} threads)")
    print(f"ratio={medians['ahead'] / medians['in_step']:.3f}")


if __name__ == "__main__":
    main()
