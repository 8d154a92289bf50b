"""Sampled against full-graph LightGCN on Gowalla, epoch by epoch (issue 18).

Reads the sampled run's ``metrics.csv`` (several when it was resumed: later files win) and prints its test
Recall@20 / NDCG@20 every 50 epochs beside the full-graph run of ``configs/lightgcn_gowalla.yaml`` (the README's
Gowalla curve, measured 2026-12 at commit 075ba1c; that run's metrics were not kept, so its curve is copied here).
Gowalla has no validation split: the ``val/`` metrics every 50 epochs evaluate the test split, as the bundle's
last-epoch test does, and nothing is selected on them.

    python results/scale/gowalla_sampled/curve.py results/scale/gowalla_sampled/metrics.csv

With ``--against B.csv`` the reference is that run's curve instead, and the last column compares the two at the
same epoch (``results/scale/gowalla_budget/``).
"""

from __future__ import annotations

import argparse
import csv

# epoch -> (Recall@20, NDCG@20) of the full-graph run (README, "LightGCN on Gowalla")
FULL = dict(zip(range(50, 1001, 50), zip(
    [.1607, .1660, .1687, .1721, .1735, .1759, .1778, .1784, .1791, .1797,
     .1807, .1809, .1808, .1825, .1828, .1826, .1826, .1828, .1830, .1834],
    [.1393, .1435, .1453, .1474, .1490, .1507, .1520, .1524, .1535, .1539,
     .1546, .1547, .1547, .1556, .1559, .1558, .1560, .1562, .1566, .1568],
)))
FINAL = FULL[1000]


def sampled_curve(paths: list[str]) -> dict[int, tuple[float, float]]:
    """Epoch (1-based) -> (Recall@20, NDCG@20) of every validation row of the given metrics files."""
    curve = {}
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("val/recall@20"):
                    curve[int(row["epoch"]) + 1] = (float(row["val/recall@20"]), float(row["val/ndcg@20"]))
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+", help="the run's metrics.csv (several: a resumed run, later win)")
    parser.add_argument("--against", nargs="+", help="another run's metrics.csv: the reference, epoch by epoch")
    args = parser.parse_args(argv)
    curve = sampled_curve(args.metrics)
    if args.against:  # the other run at the same epoch
        reference = sampled_curve(args.against)
        print("| epoch | R@20 | against R@20 | N@20 | against N@20 | R / N vs against, same epoch |")
    else:  # the full-graph run, and its final scores
        reference = FULL
        print("| epoch | sampled R@20 | full R@20 | sampled N@20 | full N@20 | sampled vs full's final (R / N) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for epoch, (recall, ndcg) in sorted(curve.items()):
        other = reference.get(epoch, (float("nan"), float("nan")))
        base = other if args.against else FINAL
        print(f"| {epoch} | {recall:.4f} | {other[0]:.4f} | {ndcg:.4f} | {other[1]:.4f} | "
              f"{recall / base[0] - 1:+.1%} / {ndcg / base[1] - 1:+.1%} |")


if __name__ == "__main__":
    main()
