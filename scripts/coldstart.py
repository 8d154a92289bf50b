"""The item cold-start table of docs/coldstart.md (issue 16): bundles x datasets x seeds with 20% of the items cold.

Each run is ``recplug fit --config configs/<bundle>.yaml --data.path <dataset> --data.cold_items 0.2`` with
``--data.cold_seed``, ``--data.seed`` and ``--seed_everything`` set to the seed, so a seed changes both the cold
items and the training; the bundle's own early stopping on ``val/recall@20`` and at most ``--max-epochs`` epochs.
The validation metrics at the best-validation epoch and the test metrics of that checkpoint (what ``recplug fit``
tests after fitting) go to ``<out>/<dataset>_<bundle>_s<seed>.json`` with the config's sha256; a run whose file
holds the same config's result is skipped, so the script resumes where it stopped, and one of another config (the
bundle changed since) is run again. ``random`` is the floor: Gaussian random embeddings ranked by the same
evaluation. Then ``python scripts/coldstart.py --table`` prints the Markdown table (mean ± std over seeds).

    OMP_NUM_THREADS=1 RECPLUG_DATA_MIRROR=/work/shared/data nohup .venv/bin/python scripts/coldstart.py \\
        > results/coldstart/log.txt 2>&1 &

``recplug`` is the one beside the running Python, so a frozen copy of the code runs unchanged while the checkout
moves on: ``git archive HEAD | tar -x -C SNAP`` and ``PYTHONPATH=SNAP .venv/bin/python SNAP/scripts/coldstart.py
--out results/coldstart``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("random", "mf", "lightgcn", "vbpr", "freedom", "crane")  # cheapest first
DATASETS = ("amazon_office", "tiktok")
GROUPS = ("", "_warm", "_cold", "_coldonly")
KEYS = ("recall@20", "ndcg@20")


def best_epoch_metrics(metrics_csv: Path) -> dict[str, object]:
    """Validation metrics at the epoch of the best ``val/recall@20`` and the test row of the CSV logger."""
    rows = list(csv.DictReader(metrics_csv.open()))
    val = [r for r in rows if r.get("val/recall@20")]
    best = max(val, key=lambda r: float(r["val/recall@20"]))  # the first maximum, as ModelCheckpoint keeps it
    test = next(r for r in rows if r.get("test/recall@20"))
    pick = {
        stage: {f"{stage}{g}/{k}": float(row[f"{stage}{g}/{k}"]) for g in GROUPS for k in KEYS}
        for stage, row in (("val", best), ("test", test))
    }
    return {"best_epoch": int(best["epoch"]), "epochs_run": len(val), **pick}


def config_sha256(bundle: str) -> str | None:
    """The sha256 of ``configs/<bundle>.yaml`` (``None`` for ``random``, which has no config)."""
    path = ROOT / f"configs/{bundle}.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest() if bundle != "random" else None


def fit(bundle: str, dataset: str, seed: int, max_epochs: int, cold: float, negatives: bool) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix=f"coldstart_{dataset}_{bundle}_{seed}_"))
    command = [
        str(Path(sys.executable).with_name("recplug")), "fit", "--config", str(ROOT / f"configs/{bundle}.yaml"),
        "--data.path", dataset, "--data.cold_items", str(cold), "--data.cold_seed", str(seed),
        "--data.seed", str(seed), "--seed_everything", str(seed), "--trainer.max_epochs", str(max_epochs),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data.cold_negatives", str(negatives).lower(),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    found = best_epoch_metrics(next(work.glob("runs/*/version_*/metrics.csv")))
    shutil.rmtree(work)
    warned = "cannot score them" in done.stderr
    return {**found, "seconds": round(seconds, 1), "cold_applicable": not warned, "command": " ".join(command[1:])}


def random_floor(dataset: str, seed: int, cold: float) -> dict[str, object]:
    """The same evaluation of Gaussian random embeddings (d=64, seeded): the random-ranking floor."""
    import torch

    from recplug import RecDataModule
    from recplug.core.eval.evaluator import RankingEvaluation

    data = RecDataModule(dataset, cold_items=cold, cold_seed=seed)
    generator = torch.Generator().manual_seed(seed)
    users = torch.randn(data.num_users, 64, generator=generator)
    items = torch.randn(data.num_items, 64, generator=generator)
    out: dict[str, object] = {"best_epoch": 0, "epochs_run": 0, "seconds": 0.0, "cold_applicable": True}
    evaluation = RankingEvaluation(ks=[10, 20], metrics=["recall", "ndcg"])
    for stage, split in (("val", data.validation_split), ("test", "test")):
        evaluation.start(data, split, users, items, None)
        for batch in data._user_loader(data.eval_task(split).users):
            evaluation.update(batch)
        values = evaluation.compute()
        out[stage] = {
            f"{stage}{g}/{k}": float(values[f"{g[1:]}/{k}" if g else k]) for g in GROUPS for k in KEYS
        }
    return out


def run_all(
    out: Path, seeds: list[int], max_epochs: int, cold: float, bundles: list[str], negatives: bool = True
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for dataset in DATASETS:
            for bundle in bundles:
                path = out / f"{dataset}_{bundle}_s{seed}.json"
                sha = config_sha256(bundle)
                if path.exists():
                    if json.loads(path.read_text()).get("config_sha256") == sha:
                        continue
                    print(f"{path.name}: measured with another configs/{bundle}.yaml; running it again", flush=True)
                print(f"{time.strftime('%H:%M:%S')} {dataset} {bundle} seed {seed}", flush=True)
                try:
                    result = (random_floor(dataset, seed, cold) if bundle == "random"
                              else fit(bundle, dataset, seed, max_epochs, cold, negatives))
                except RuntimeError as exc:
                    print(exc, flush=True)
                    continue
                result.update(bundle=bundle, dataset=dataset, seed=seed, cold_items=cold, max_epochs=max_epochs,
                              cold_negatives=negatives, config_sha256=sha)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(result, indent=1) + "\n")
                tmp.replace(path)
                print(f"  {result['seconds']} s, best epoch {result['best_epoch']} of {result['epochs_run']}: "
                      f"{json.dumps(result['test'])}", flush=True)


def table(out: Path) -> str:
    """Markdown: per dataset and bundle, test Recall@20 / NDCG@20 (mean ± std over seeds) per group."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = ["| dataset | bundle | seeds | epochs (best / run) | all R@20 | warm R@20 | warm N@20 | cold R@20 | "
             "cold N@20 | cold-only R@20 | cold-only N@20 |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(runs: list[dict], key: str) -> str:
        values = [r["test"][key] for r in runs]
        if any(math.isnan(v) for v in values):
            return "n/a"
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.4f}{spread}"

    for dataset in DATASETS:
        for bundle in BUNDLES:
            runs = [r for r in results if r["dataset"] == dataset and r["bundle"] == bundle]
            if not runs:
                continue
            seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            epochs = ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in runs) if bundle != "random" else "-"
            cells = [cell(runs, f"test{g}/{k}") for g in GROUPS for k in KEYS if (g, k) != ("", "ndcg@20")]
            lines.append(f"| {dataset} | {bundle} | {seeds} | {epochs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/coldstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--cold-items", type=float, default=0.2)
    parser.add_argument("--warm-negatives", action="store_true",
                        help="--data.cold_negatives false: BPR negatives among warm items only")
    parser.add_argument("--table", action="store_true", help="print the table of the results found and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return 0
    run_all(args.out, args.seeds, args.max_epochs, args.cold_items, args.bundles, not args.warm_negatives)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
