"""Seconds per training epoch as the data grows: full-graph against sampled training (issue 18).

    python bench/scale.py [--sizes s m l] [--models lightgcn crane] [--fanouts 10 10] [--budget N]
                          [--engine torch] [--threads 2] [--root /tmp/recplug-scale] [--batches 10 60]
                          [--repeats 1] [--epochs N]

Synthetic power-law sets in MMRec format (``--root``/<size>, generated once, seeded): users' activity
log-normal (at least 5 interactions), items drawn from a Zipf law (exponent 0.8, each at least once), per-user
80/10/10 split, random 128-d ``image`` and 64-d ``text`` features:

    s: 25k users x 12.5k items (0.38M train pairs), m: 100k x 50k (1.55M), l: 400k x 200k (6.3M)

Models: ``mf`` (configs/mf.yaml: no graph, so its sampled step reads only the batch's own rows: the floor of
any model with ID tables), ``lightgcn`` (configs/lightgcn.yaml with 2 layers), ``crane``, ``crane_rca`` and
``freedom`` (their configs as shipped; until issue 17 ``crane`` was today's ``crane_rca``, the RCA pipeline),
batch 2048, through the real CLI; ``sampled`` adds ``--model.sampling {fanouts: ..., budget: ...}``
(``--budget``: new nodes kept per hop, at most in expectation; default none). Each (size, model, mode) runs in a
fresh process for ``--batches`` a and b steps; the training epoch is timed by a callback (model and graph setup
excluded), so a run of n steps takes ``fixed + n * step``; the epoch estimate is ``fixed + steps_per_epoch *
step`` with ``step = (t_b - t_a) / (b - a)`` (the issue's method, plus the per-epoch fixed cost: sampler draws,
FREEDOM pruning, sampler rebuild). ``--epochs`` N times sampled runs instead over N whole epochs in one process
and takes the median of the epochs after the first (the first is a warm-up; N=1: that epoch): on s the runs of a
and b steps differ by seconds, as little as a whole sampled epoch there (full-graph runs still extrapolate: their
l epoch takes hours). ``--repeats`` r makes r such estimates in r rounds over every (size, model, mode), so that
the machine's drift reaches all sizes alike, and reports their medians (consecutive identical runs differ by
5-25% on a shared 2-core machine). Peak RSS is the largest run's. Results go to
``--root``/results.jsonl, reused on a rerun (delete it to re-measure). Last line: ``ratio=<x>``, the worst graph
model's (sampled epoch time growth s -> l) / (train-pair growth s -> l); 1.0 is linear (``mf``'s own ratio is
printed above it, and is ``ratio`` only when ``mf`` is the sole model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SIZES = {"s": (25_000, 12_500), "m": (100_000, 50_000), "l": (400_000, 200_000)}
BATCH_SIZE = 2048
MEAN_INTERACTIONS = 20.0  # per user, before the split: 80% train gives the 0.38M / 1.55M / 6.3M pairs
LIGHTGCN_2 = '[{"class_path": "UserItemGraph", "init_args": {"name": "behavior", "num_layers": 2}}]'


def generate(folder: Path, num_users: int, num_items: int, seed: int = 0) -> None:
    """A power-law interaction set in MMRec format with random features (see the module docstring)."""
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    activity = np.maximum(5, rng.lognormal(np.log(MEAN_INTERACTIONS) - 0.5, 1.0, num_users).round()).astype(np.int64)
    users = np.repeat(np.arange(num_users), activity)
    popularity = (np.arange(num_items) + 1.0) ** -0.8
    items = rng.permutation(num_items)[rng.choice(num_items, users.size, p=popularity / popularity.sum())]
    items[rng.choice(items.size, num_items, replace=False)] = np.arange(num_items)  # every item occurs (MMRec ids)
    pairs = np.unique(users * num_items + items)
    users, items = pairs // num_items, pairs % num_items
    # per-user 80/10/10 split: rank each user's pairs at random, the last 10% (at least 1) valid, then test
    counts = np.bincount(users, minlength=num_users)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    order = np.lexsort((rng.random(users.size), users))
    users, items = users[order], items[order]
    rank = np.arange(users.size) - starts
    held = np.maximum(1, np.round(0.1 * counts[users]))
    label = np.where(rank >= counts[users] - held, 2, np.where(rank >= counts[users] - 2 * held, 1, 0))
    with open(folder / "scale.inter", "w") as out:
        out.write("userID\titemID\trating\ttimestamp\tx_label\n")
        np.savetxt(out, np.stack([users, items, np.ones_like(users), np.zeros_like(users), label], 1), fmt="%d",
                   delimiter="\t")
    np.save(folder / "image_feat.npy", rng.standard_normal((num_items, 128), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((num_items, 64), dtype=np.float32))
    (folder / "done").write_text(json.dumps({"train_pairs": int((label == 0).sum())}))


def child(args: argparse.Namespace) -> None:
    """One measured run: ``args.steps`` training steps of one (size, model, mode), a JSON line on stdout."""
    import torch

    from recplug.core.cli.main import run_cli
    from timing import EpochTimer

    torch.set_num_threads(args.threads)
    folder = Path(args.root) / args.size
    whole_epochs = bool(args.epochs) and args.mode == "sampled"  # (the module docstring)
    argv = [
        "--config", str(CONFIGS / f"{args.model}.yaml"), "--data.path", str(folder),
        "--data.batch_size", str(BATCH_SIZE), "--data.cache_dir", str(Path(args.root) / "cache"),
        "--trainer.max_epochs", str(args.epochs if whole_epochs else 1),
        "--trainer.limit_train_batches", "1.0" if whole_epochs else str(args.steps), "--trainer.limit_val_batches", "0",
        "--trainer.callbacks", "[]", "--trainer.logger", "false", "--checkpoint.save_top_k", "0",
        "--checkpoint.save_last", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(Path(args.root) / "runs"),
    ]
    if args.model == "lightgcn":
        argv += ["--model.encoders", LIGHTGCN_2]
    if args.mode == "sampled":
        argv += ["--model.sampling", json.dumps({"fanouts": args.fanouts, "engine": args.engine,
                                                  "budget": args.budget})]
    cli = run_cli(argv, run=False)
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    train_pairs = int(cli.datamodule.data.split("train")[0].numel())
    warm = timer.train[1:] or timer.train
    print(json.dumps({
        "seconds": statistics.median(warm), "epoch_seconds": timer.train, "steps": args.steps,
        "train_pairs": train_pairs,
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }))


def measure(args: argparse.Namespace, size: str, model: str, mode: str, steps: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "--size", size, "--model", model, "--mode", mode,
               "--steps", str(steps), "--threads", str(args.threads), "--root", str(args.root),
               "--engine", args.engine, "--fanouts", *map(str, args.fanouts)]
    command += ["--epochs", str(args.epochs)] if args.epochs else []
    command += ["--budget", str(args.budget)] if args.budget is not None else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{size} {model} {mode} {steps} steps failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steps_per_epoch(train_pairs: int) -> int:
    """Training steps in an epoch of ``train_pairs`` at the bench's batch size."""
    return -(-train_pairs // BATCH_SIZE)


def measure_epoch(args: argparse.Namespace, size: str, model: str, mode: str) -> dict[str, float]:
    """One estimate of (size, model, mode)'s epoch from runs of ``--batches`` a and b steps, or for a sampled run
    with ``--epochs``, from whole epochs (module docstring)."""
    if args.epochs and mode == "sampled":
        run = measure(args, size, model, mode, 0)
        return {"step": run["seconds"] / steps_per_epoch(run["train_pairs"]), "epoch": run["seconds"],
                "epoch_seconds": run["epoch_seconds"], "train_pairs": run["train_pairs"], "rss_gb": run["rss_gb"]}
    short, long = (measure(args, size, model, mode, n) for n in args.batches)
    step = (long["seconds"] - short["seconds"]) / (long["steps"] - short["steps"])
    fixed = max(0.0, short["seconds"] - short["steps"] * step)
    return {"step": step, "fixed": fixed, "epoch": fixed + steps_per_epoch(long["train_pairs"]) * step,
            "train_pairs": long["train_pairs"], "rss_gb": max(short["rss_gb"], long["rss_gb"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=sorted(SIZES))
    parser.add_argument("--models", nargs="+", default=["lightgcn", "crane"],
                        choices=["mf", "lightgcn", "crane", "crane_rca", "freedom"])
    parser.add_argument("--modes", nargs="+", default=["full", "sampled"], choices=["full", "sampled"])
    parser.add_argument("--fanouts", nargs="+", type=int, default=[10, 10])
    parser.add_argument("--budget", type=int, help="model.sampling.budget (default: none)")
    parser.add_argument("--engine", default="torch", choices=["pyg", "torch"], help="model.sampling.engine")
    parser.add_argument("--batches", nargs=2, type=int, default=[10, 60])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="estimates per (size, model, mode); their median")
    parser.add_argument("--epochs", type=int, help="time sampled runs over this many whole epochs (default: "
                        "extrapolate from --batches)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/recplug-scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    results_file = args.root / "results.jsonl"
    args.root.mkdir(parents=True, exist_ok=True)
    # rows written before --repeats are repeat 0
    results = [{"repeat": 0, **json.loads(line)} for line in results_file.open()] if results_file.exists() else []
    print(f"threads={args.threads} fanouts={args.fanouts} budget={args.budget} engine={args.engine} "
          f"batches={args.batches} repeats={args.repeats} epochs={args.epochs}", flush=True)
    measured: dict[tuple[str, str, str], list[dict]] = {}
    for repeat in range(args.repeats):  # in rounds, so that drift of the machine reaches every size alike
        for size in args.sizes:
            generate(args.root / size, *SIZES[size])
            for model in args.models:
                for mode in args.modes:
                    key = {"size": size, "model": model, "mode": mode, "fanouts": args.fanouts,
                           "engine": args.engine, "budget": args.budget, "batches": args.batches,
                           "threads": args.threads, "repeat": repeat,
                           "epochs": args.epochs if mode == "sampled" else None}
                    # full-graph runs ignore the sampling settings
                    # (and whole-epoch runs the --batches)
                    same = [k for k in key if (mode == "sampled" or k not in ("fanouts", "engine", "budget"))
                            and not (key["epochs"] and k == "batches")]
                    found = next((r for r in results if all(r.get(k) == key[k] for k in same)), None)
                    if found is None:
                        found = {**key, **measure_epoch(args, size, model, mode)}
                        with results_file.open("a") as out:
                            out.write(json.dumps(found) + "\n")
                        results.append(found)
                    measured.setdefault((size, model, mode), []).append(found)
                    print(f"round {repeat + 1}/{args.repeats}: {size} {model} {mode} {found['step']:.4f} s/step",
                          file=sys.stderr, flush=True)
    print("| set | users x items | train pairs | model | mode | s/step | epoch (s) | peak RSS (GB) |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    epochs: dict[tuple[str, str, str], tuple[float, int]] = {}
    for (size, model, mode), runs in measured.items():
        step, epoch = (statistics.median(run[k] for run in runs) for k in ("step", "epoch"))
        train_pairs, rss_gb = runs[0]["train_pairs"], max(run["rss_gb"] for run in runs)
        epochs[size, model, mode] = (epoch, train_pairs)
        users, items = SIZES[size]
        print(f"| {size} | {users // 1000}k x {items / 1000:g}k | {train_pairs / 1e6:.2f}M | {model} | {mode} "
              f"| {step:.4f} | {epoch:.1f} | {rss_gb:.1f} |", flush=True)
    ratios = {}
    for model in args.models:
        if ("s", model, "sampled") in epochs and ("l", model, "sampled") in epochs:
            (t_s, e_s), (t_l, e_l) = epochs["s", model, "sampled"], epochs["l", model, "sampled"]
            ratios[model] = (t_l / t_s) / (e_l / e_s)
            floor = " (no graph: the floor of a model with ID tables)" if model == "mf" else ""
            print(f"{model}: sampled epoch x{t_l / t_s:.1f} for x{e_l / e_s:.1f} train pairs, s -> l, "
                  f"{ratios[model]:.2f}{floor}", flush=True)
    graph_ratios = [r for model, r in ratios.items() if model != "mf"] or list(ratios.values())
    if graph_ratios:
        print(f"ratio={max(graph_ratios):.2f}")
    else:
        print("ratio=nan (needs sampled runs of s and l)")


if __name__ == "__main__":
    main()
