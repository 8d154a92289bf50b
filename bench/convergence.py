"""Epochs and wall time to the best validation epoch: CRANE against FREEDOM and LightGCN (issue 17).

    RECPLUG_DATA_MIRROR=../shared/data python bench/convergence.py --data amazon_office \\
        --model crane=results/ablate/crane_bundle/amazon_office/runs/base \\
        --model freedom=results/ablate/crane_bundle/amazon_office/runs/freedom \\
        --model lightgcn=results/benchmark/as_given/amazon_office/runs/lightgcn

The CRANE paper claims faster convergence on small datasets. Epochs to the best validation epoch do not depend
on the machine: they are read from finished ``recplug ablate``/``recplug benchmark`` runs (``<folder>/seed<S>/
result.json``, every seed found; the selected epoch, 0-based, plus one). The time of an epoch does, so this bench
measures it here, one model after the other in this process: one training epoch (validation off) plus one full
validation pass of each ``configs/<name>.yaml`` on ``--data``, the first epoch (warm-up) excluded. Time to best =
epochs to best x (training epoch + validation pass), what early-stopped training spends to reach its best
checkpoint. Last line: ``ratio=<x>``, the first model's time to best over the second's (below 1: the first
converges faster in wall time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from recplug.core.cli.main import run_cli
from timing import EpochTimer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def epochs_to_best(folder: Path) -> list[int]:
    """The selected (best-validation) epoch + 1 of every finished seed under ``folder``."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*/result.json"))]
    if not results:
        raise SystemExit(f"{folder}: no finished run (seed*/result.json)")
    return [r["epoch"] + 1 for r in results]


def epoch_seconds(model: str, data: str, epochs: int, root: Path) -> tuple[float, float]:
    """Median seconds of a training epoch and of a validation pass of ``configs/<model>.yaml``, warm-up excluded."""
    timer = EpochTimer()
    cli = run_cli([
        "--config", str(CONFIGS / f"{model}.yaml"), "--data.path", data, "--trainer.max_epochs", str(epochs + 1),
        "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks", "[]", "--trainer.logger", "false",
        "--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
    ], run=False)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return statistics.median(timer.train[1:]), statistics.median(timer.validation[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="--data.path of the runs (a registered name or a folder)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=RUNS",
                        help="configs/NAME.yaml and the folder of its finished seeds; the first two give the ratio")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model after the warm-up one")
    args = parser.parse_args(argv)
    models = [spec.split("=", 1) for spec in args.model]
    if len(models) < 2 or any(len(m) != 2 for m in models):
        raise SystemExit("--model NAME=RUNS, at least two")
    print(f"| model ({args.data}) | seeds | epochs to best | s/train epoch | s/validation | time to best (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    times = []
    with tempfile.TemporaryDirectory(prefix="recplug-convergence-") as tmp:
        for name, runs in models:
            epochs = epochs_to_best(Path(runs))
            train, validation = epoch_seconds(name, args.data, args.epochs, Path(tmp) / name)
            mean = statistics.fmean(epochs)
            spread = f" ± {statistics.stdev(epochs):.0f}" if len(epochs) > 1 else ""
            times.append(mean * (train + validation))
            print(f"| {name} | {len(epochs)} | {mean:.0f}{spread} | {train:.2f} | {validation:.2f} | {times[-1]:.0f} |",
                  flush=True)
    print(f"ratio={times[0] / times[1]:.2f}")


if __name__ == "__main__":
    main()
