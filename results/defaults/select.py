"""Pick each bundle's transferable default from the defaults screen (issue 13), on validation only.

For every grid point of a screen ``results/defaults/spaces/<space>.yaml`` (its study on each set in
``results/defaults/<set>/<space>``), its validation Recall@20 on each real set is divided by the best validation
Recall@20 of that set's tuned study of the screened bundle (``results/benchmark/tuned/<set>/tune/<bundle>``, 20
TPE trials; the bundle is the stem of the screen's ``config``). A screen run on several training seeds (``run.sh``'s
``SEEDS``: studies ``<space>``, ``<space>_seed1``, ...) scores each point by its mean over the seeds. The default is the point whose worst ratio over
the sets is highest; points within ``TIE`` of it count as tied, and among tied points the one that changes fewest
of the bundle's current values wins: a seed-0 screen does not resolve differences of a point or two. A bundle
screened in rounds (``lightgcn``, then ``lightgcn_layers`` at the lr the first chose) takes its last round's
choice; an earlier round's ``->`` line is recomputed against the config as that choice left it.

    python results/defaults/select.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
TUNED = ROOT.parent / "benchmark" / "tuned"
SETS = ("amazon_office", "tiktok")
TIE = 0.02


def config_value(config: dict, key: str) -> str:
    """The value at a dotted ``recplug tune`` key (``model.aux_losses[0].init_args.weight``), as trials.csv
    writes it."""
    node = config
    for part in key.split("."):
        name, *indices = re.findall(r"[^\[\]]+", part)
        node = node[name]
        for index in indices:
            node = node[int(index)]
    return str(node)


def label(key: str) -> str:
    """A screened key, short: ``model.aux_losses[0].init_args.weight`` -> ``aux_losses[0].weight``."""
    return key.removeprefix("model.").replace(".init_args", "")


def trials(study: Path) -> list[dict[str, str]]:
    with open(study / "trials.csv") as handle:
        return [row for row in csv.DictReader(handle) if row["state"] == "COMPLETE"]


def main() -> None:
    for space in sorted((ROOT / "spaces").glob("*.yaml")):
        config_path = Path(yaml.safe_load(space.read_text())["config"])
        bundle = config_path.stem
        best = {s: max(float(r["value"]) for r in trials(TUNED / s / "tune" / bundle)) for s in SETS}
        points: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        seeds: dict[str, int] = {}
        for s in SETS:
            studies = [ROOT / s / space.stem, *sorted((ROOT / s).glob(f"{space.stem}_seed*"))]
            studies = [study for study in studies if (study / "trials.csv").exists()]
            seeds[s] = len(studies)
            runs: dict[tuple[tuple[str, str], ...], list[float]] = {}
            for study in studies:
                for row in trials(study):
                    params = tuple((k, row[k]) for k in row if k.startswith(("model.", "data.", "trainer.")))
                    runs.setdefault(params, []).append(float(row["value"]))
            for params, values in runs.items():
                if len(values) == len(studies):  # a point every seed's study finished
                    points.setdefault(params, {})[s] = sum(values) / len(values)
        print(f"## {space.stem}: {bundle} (tuned best val R@20: " + ", ".join(f"{s} {best[s]:.4f}" for s in SETS)
              + "; seeds per point: " + ", ".join(f"{s} {seeds[s]}" for s in SETS) + ")")
        ranked = []
        for params, values in points.items():
            ratios = {s: values[s] / best[s] for s in values}
            worst = min(ratios.values()) if len(ratios) == len(SETS) else float("nan")
            ranked.append((worst, params, values, ratios))
            cells = ", ".join(f"{s} {values[s]:.4f} ({ratios[s]:.1%})" for s in values)
            print("  " + " ".join(f"{label(k)}={v}" for k, v in params)
                  + f": {cells}; worst {worst:.1%}")
        complete = [r for r in ranked if r[0] == r[0]]
        if complete:
            config = yaml.safe_load(config_path.read_text())
            top = max(r[0] for r in complete)
            tied = [r for r in complete if r[0] >= top - TIE]
            changes = lambda r: sum(float(v) != float(config_value(config, k)) for k, v in r[1])  # noqa: E731
            worst, params, _, _ = min(tied, key=lambda r: (changes(r), -r[0]))
            print("  -> " + " ".join(f"{label(k)}={v}" for k, v in params) + f" (worst {worst:.1%}; "
                  f"{len(tied)} within {TIE * 100:.0f} points of the best worst case {top:.1%})")


if __name__ == "__main__":
    main()
