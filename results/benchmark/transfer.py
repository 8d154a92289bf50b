"""Do the shipped defaults transfer? Each bundle run unchanged against its tuned self, per real set (issue 13).

Reads the two benchmarks' leaderboards, ``shipped/<set>/leaderboard.csv`` (``configs/<bundle>.yaml`` as given, 5
seeds) and ``tuned/<set>/leaderboard.csv`` (20 TPE trials on validation, then 5 seeds of the best), and writes
``transfer.md`` beside this file: test Recall@20 of both, the change of shipped over tuned, whether it is within
the issue's 5% (above counts as within), and whether a shipped seed stopped at its epoch cap.

    python results/benchmark/transfer.py
"""

from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SETS = ("amazon_office", "tiktok")
METRIC = "test/recall@20"
TOLERANCE = 5.0


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def cell(row: dict[str, str]) -> str:
    """``mean ± std (seeds)`` of the metric in a leaderboard row."""
    return f"{float(row[f'{METRIC} mean']):.4f} ± {float(row[f'{METRIC} std']):.4f} ({row['seeds']})"


def main() -> None:
    lines = ["| bundle | set | shipped test R@20 | tuned test R@20 | shipped vs tuned | within 5% | shipped at cap |",
             "|---|---|---:|---:|---:|---|---|"]
    for dataset in SETS:
        shipped = rows(ROOT / "shipped" / dataset / "leaderboard.csv")
        tuned = rows(ROOT / "tuned" / dataset / "leaderboard.csv")
        for model in (m for m in tuned if m in shipped and not m.startswith("mf-")):
            ours, best = shipped[model], tuned[model]
            change = 100 * (float(ours[f"{METRIC} mean"]) / float(best[f"{METRIC} mean"]) - 1)
            lines.append(f"| {model} | {dataset} | {cell(ours)} | {cell(best)} | {change:+.1f}% | "
                         f"{'yes' if change >= -TOLERANCE else '**no**'} | {ours['stopped_at_cap']} |")
    table = "\n".join(lines)
    (ROOT / "transfer.md").write_text(
        "# Shipped defaults against tuned (issue 13)\n\n" + table + "\n\nTest Recall@20 at each run's best-validation "
        "epoch, mean ± sample std (seeds); from shipped/<set>/leaderboard.csv and tuned/<set>/leaderboard.csv "
        "(written by results/benchmark/transfer.py).\n")
    print(table)


if __name__ == "__main__":
    main()
