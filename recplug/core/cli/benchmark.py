"""``recplug benchmark``: bundles x datasets x seeds in one command, one leaderboard per dataset.

    recplug benchmark --configs configs/crane.yaml configs/freedom.yaml configs/mf.yaml \\
        --datasets tiktok amazon_office --seeds 0 1 2 3 4 --out runs/benchmark \\
        [--trials N [--spaces configs/search] [--tune-timeout S]] [--proposed crane] [--mf configs/mf.yaml] \\
        [--max-epochs N] [--no-plot] [--dry-run] [--report-only] [-- fit overrides for every run]

GRecX's aim (Cai et al., arXiv 2111.10342): a fair, unified benchmark. Per (bundle, dataset):

1. with ``--trials N``, ``recplug tune`` on validation only (the search space ``<spaces>/<bundle>.yaml``, the
   same budget for every bundle, the config's own seed); the seeds then train ``best.yaml``. Without it, the
   config as given;
2. each seed is one ``recplug fit`` (as ``recplug ablate`` runs it), tested at its best-validation epoch; the
   run also stores every test user's metrics (``per_user.npz``) and its representation size ``X``;
3. GRMF-X (:mod:`recplug.core.eval.grmfx`): an MF-BPR of each size ``X`` that occurs is trained on the same
   seeds under the same protocol (the ``--mf`` config, tuned like the others when ``--trials`` is given).

Each dataset's leaderboard (``<out>/<dataset>/leaderboard.{md,csv,png}``): mean ± std over seeds, the change
over the best baseline, paired Wilcoxon and t-tests of ``--proposed`` against each other model on per-user test
metrics (each user's mean over seeds), Holm-corrected across the comparisons (:mod:`recplug.core.eval.significance`),
GRMF-X, the selected epoch, epochs trained (and whether training stopped at ``max_epochs`` while validation was
still improving), seconds per epoch and the provenance of every run. Rerunning the same command skips finished
runs and resumes the tuning studies; ``--report-only`` writes the leaderboards from the runs finished so far
(a benchmark still running elsewhere, or one stopped early).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recplug.core.cli import ablate
from recplug.core.cli.boundary import SEED, CommandParser, number_in, output_folder
from recplug.core.cli.paired import paired_comparisons, record_per_user
from recplug.core.errors import ConfigError
from recplug.core.ops.io import atomic_write

REFERENCE = "mf"  # the name of the GRMF-X reference rows: mf-<X>
SPACES = "search"  # the default --spaces: this folder beside the first --configs file
MF = "mf.yaml"  # the default --mf: this file beside the first --configs file


@dataclass(frozen=True)
class Entry:
    """One row of a leaderboard: a bundle (``configs/<name>.yaml``) or an MF-X reference, and its config.
    ``mf``: the row trains the ``--mf`` config (a GRMF-X reference of its size); ``reference``: it was added only
    for that (not a baseline)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    reference: bool = False
    mf: bool = False


# ---------------------------------------------------------------------------- one dataset
@dataclass
class Row:
    """A leaderboard row: the finished runs of one entry on one dataset."""

    entry: Entry
    results: list[dict[str, Any]]
    directories: list[Path]
    trials: int

    def values(self, metric: str) -> list[float]:
        return [r["test"][metric] for r in self.results if metric in r["test"]]

    def mean(self, metric: str) -> float:
        return ablate.seed_mean(self.values(metric))

    def std(self, metric: str) -> float:
        return ablate.seed_std(self.values(metric))

    def runs(self) -> list[tuple[dict[str, Any], Path]]:
        return list(zip(self.results, self.directories))

    @property
    def size(self) -> int | None:
        sizes = {r.get("representation_size") for r in self.results}
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def seeds(self) -> set[int]:
        return {r["seed"] for r in self.results}

    def capped(self) -> bool:
        """Some seed trained up to ``max_epochs`` without early stopping ending it: validation had not gone
        ``patience`` epochs without a new best, so it was still improving when the cap stopped it."""
        return any(r.get("epochs_trained") == r.get("max_epochs") and not r.get("stopped_early", False)
                   for r in self.results)

    def seconds_per_epoch(self) -> float:
        rates = [r["seconds"] / max(1, r.get("epochs_trained", r["epochs_validated"])) for r in self.results]
        return statistics.fmean(rates) if rates else math.nan


def _fmt(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else ablate.mean_std(mean, std)


def leaderboard(rows: list[Row], proposed: str, metrics: list[str], dataset: str) -> tuple[list[dict[str, Any]], str]:
    """The leaderboard of one dataset as CSV records and a Markdown table (see the module docstring)."""
    primary = metrics[0]
    ranked = [r for r in rows if r.results]
    baselines = [r for r in ranked if r.entry.name != proposed and not r.entry.reference]
    best_baseline = max(baselines, key=lambda r: r.mean(primary), default=None)
    mine = next((r for r in ranked if r.entry.name == proposed), None)
    references = {r.size: r for r in ranked if r.entry.mf}
    tests = (paired_comparisons(mine.runs(), {r.entry.name: r.runs() for r in ranked if r is not mine}, primary)
             if mine is not None else {})
    header = ["model", "seeds", *metrics, f"vs best baseline ({primary})", f"p Wilcoxon vs {proposed} (Holm)",
              f"p t-test vs {proposed} (Holm)", "GRMF-X (X)", "selected epoch", "epochs trained", "s/epoch", "tuned"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    best = {m: max((r.mean(m) for r in ranked), default=math.nan) for m in metrics}
    records = []
    for row in ranked:
        record = _record(row, dataset, metrics, best_baseline, tests.get(row.entry.name, {}),
                         references.get(row.size))
        records.append(record)
        lines.append(_markdown_row(row, record, proposed, metrics, best))
    lines += ["", _legend(ranked, proposed, primary, best_baseline)]
    if ranked:
        p = ranked[0].results[0]["provenance"]
        data = sorted({r["provenance"]["data_sha256"][:12] for row in ranked for r in row.results})
        lines += ["", f"Provenance: recplug {p['recplug']}, torch {p['torch']}, pytorch-lightning "
                  f"{p['pytorch_lightning']}, python {p['python']}; data {p['data']} sha256 {', '.join(data)}; "
                  "every run's command, config hash and plugins are in its result.json (leaderboard.csv has the "
                  "config hashes)."]
    return records, "\n".join(lines) + "\n"


def _record(row: Row, dataset: str, metrics: list[str], best_baseline: Row | None, test: dict[str, Any],
            reference: Row | None) -> dict[str, Any]:
    """One leaderboard.csv record: the row's means and stds, its gain over ``best_baseline``, its paired ``test``
    against the proposed model, its GRMF-X against the MF ``reference`` of its size, epochs and time."""
    from recplug.core.eval.grmfx import grmfx

    primary = metrics[0]
    gain = ((row.mean(primary) / best_baseline.mean(primary) - 1) * 100
            if best_baseline is not None and best_baseline.mean(primary) else math.nan)
    ratio = (grmfx({primary: row.mean(primary)}, {primary: reference.mean(primary)}, row.size, reference.size)
             [primary] if reference is not None and row.size is not None else math.nan)
    return {
        "dataset": dataset, "model": row.entry.name, "seeds": len(row.results),
        **{f"{m} mean": row.mean(m) for m in metrics}, **{f"{m} std": row.std(m) for m in metrics},
        "gain_over_best_baseline_%": gain, "wilcoxon_p_holm": test.get("wilcoxon_p_holm", math.nan),
        "ttest_p_holm": test.get("ttest_p_holm", math.nan), "wilcoxon_p": test.get("wilcoxon_p", math.nan),
        "ttest_p": test.get("ttest_p", math.nan), "paired_users": test.get("users", ""),
        "grmfx": ratio, "representation_size": row.size,
        "selected_epoch_mean": statistics.fmean(r["epoch"] for r in row.results),
        "epochs_trained_mean": statistics.fmean(r.get("epochs_trained", r["epochs_validated"]) for r in row.results),
        "stopped_at_cap": row.capped(), "seconds_per_epoch": row.seconds_per_epoch(), "tuning_trials": row.trials,
        "config_sha256": " ".join(sorted({r["provenance"]["config_sha256"][:12] for r in row.results})),
    }


def _markdown_row(row: Row, record: dict[str, Any], proposed: str, metrics: list[str], best: dict[str, float]) -> str:
    """The leaderboard.md line of ``record``: the proposed model and each metric's best mean in bold."""
    name = row.entry.name
    cells = [f"**{name}**" if name == proposed else name + (" (GRMF-X reference)" if row.entry.reference else ""),
             str(len(row.results))]
    for m in metrics:
        text = _fmt(row.mean(m), row.std(m))
        cells.append(f"**{text}**" if row.mean(m) == best[m] else text)
    gain, ratio = record["gain_over_best_baseline_%"], record["grmfx"]
    cells += ["–" if math.isnan(gain) else f"{gain:+.1f}%", ablate.p_value(record["wilcoxon_p_holm"]),
              ablate.p_value(record["ttest_p_holm"]), "–" if math.isnan(ratio) else f"{ratio:.3f} ({row.size})",
              f"{record['selected_epoch_mean']:.0f}",
              f"{record['epochs_trained_mean']:.0f}" + (" (cap)" if record["stopped_at_cap"] else ""),
              f"{record['seconds_per_epoch']:.2f}", str(row.trials) if row.trials else "as given"]
    return "| " + " | ".join(cells) + " |"


def _legend(ranked: list[Row], proposed: str, primary: str, best_baseline: Row | None) -> str:
    """What the leaderboard's columns mean."""
    seeds = sorted({r["seed"] for row in ranked for r in row.results})
    return (
        f"Test metrics at each run's best-validation epoch ({ranked[0].results[0]['monitor'] if ranked else ''}), "
        f"mean ± sample std over seeds {seeds}. vs best baseline: the change of the mean {primary} over the best "
        f"model other than {proposed} ({best_baseline.entry.name if best_baseline else '–'}). p: two-sided "
        f"paired tests of {proposed} against the row on each test user's {primary} averaged over seeds, "
        "Holm-corrected across the rows. GRMF-X: the row's mean over the mean of an MF-BPR with the same "
        "representation size X trained here. s/epoch: wall time of the run (validation and test included) per "
        "epoch trained. "
        "(cap): a seed stopped at max_epochs before early stopping did, i.e. while validation still improved."
    )


def write_outputs(out: Path, records: list[dict[str, Any]], table: str, rows: list[Row], metrics: list[str],
                  plot: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "leaderboard.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["model"])
        writer.writeheader()
        writer.writerows(records)
    with atomic_write(out / "leaderboard.md") as handle:
        handle.write(table)
    written = [out / "leaderboard.csv", out / "leaderboard.md"]
    if plot and records:
        summaries = [ablate.Summary(ablate.Variant(r.entry.name, {}), {m: r.values(m) for m in metrics})
                     for r in rows if r.results]
        ablate.write_plot(out / "leaderboard.png", summaries, metrics)
        written.append(out / "leaderboard.png")
    return written


# ---------------------------------------------------------------------------- command
def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="recplug benchmark",
        description="Bundles x datasets x seeds: tune on validation (optional), train every seed, test at the "
        "best-validation epoch; one leaderboard per dataset with significance tests and GRMF-X (docs/benchmark.md). "
        "Rerunning resumes. Arguments after `--` are passed to every `recplug fit` run.",
    )
    parser.add_argument("--configs", nargs="+", required=True, type=ablate.existing_file("config file"),
                        help="bundle configs; a row is named by its file stem")
    parser.add_argument("--datasets", nargs="+", default=["default"],
                        help="--data.path of each dataset (a registered name or a folder; default: default)")
    parser.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds (default: 0 1 2 3 4)")
    parser.add_argument("--out", default="runs/benchmark", help="output folder (default: runs/benchmark)")
    parser.add_argument("--trials", type=number_in(int, 0, ablate.MAX_TRIALS), default=0,
                        help="tuning trials per bundle and dataset (0, the default: no tuning, each config as given)")
    parser.add_argument("--spaces", help=f"folder of <bundle>.yaml search spaces (default: {SPACES}/ beside the first "
                        "--configs file, configs/search for configs/X.yaml; with --trials)")
    parser.add_argument("--tune-timeout", type=ablate.seconds,
                        help="seconds per tuning study (recplug tune --timeout; with --trials)")
    parser.add_argument("--proposed", help="the model tested against all others (default: the first config)")
    parser.add_argument("--mf", type=ablate.existing_file("config file"),
                        help=f"the MF-BPR config of the GRMF-X reference rows (default: the --configs file named "
                        f"{MF}, else {MF} beside the first --configs file: configs/mf.yaml for configs/X.yaml)")
    parser.add_argument("--metrics", nargs="+", default=["test/recall@20", "test/ndcg@20"],
                        help="leaderboard metrics; the first is tested (default: test/recall@20 test/ndcg@20)")
    parser.add_argument("--max-epochs", type=ablate.EPOCHS,
                        help="shortcut for --trainer.max_epochs in every run and trial")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG charts")
    parser.add_argument("--dry-run", action="store_true", help="check as a real run does (one run of each row is "
                        "built, without training), print the plan's commands and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="write the leaderboards from the runs finished so far; train and tune nothing")
    return parser


def _dataset_folder(text: str) -> str:
    """The results folder name of a dataset: a folder's own name, or the registered name."""
    return ablate.folder_name(Path(text).name if Path(text).is_dir() else text)


def _space(args: Any, stem: str) -> Path:
    """The search space ``--trials`` tunes the bundle ``<stem>.yaml`` with."""
    return Path(args.spaces) / f"{stem}.yaml"


def _common(entry: Entry, dataset: str, args: Any) -> list[str]:
    """The arguments every run and trial of ``entry`` on ``dataset`` starts with."""
    shortcut = [f"--trainer.max_epochs={args.max_epochs}"] if args.max_epochs is not None else []
    return [f"--data.path={dataset}", *entry.overrides, *shortcut]


def entry_extra(entry: Entry, extra: list[str]) -> list[str]:
    """The overrides after ``--`` as ``entry``'s runs take them: a GRMF-X reference's own size is repeated after
    them when they set ``model.embedding_dim`` (which would otherwise resize every reference to that one value)."""
    sets_size = any(ablate.reserved_clash(token.split("=", 1)[0][2:], {"model.embedding_dim": ""}) is not None
                    for token in extra if token.startswith("--"))
    return [*extra, *entry.overrides] if entry.reference and sets_size else extra


def tune_entry(entry: Entry, dataset: str, study: Path, args: Any, extra: list[str]) -> tuple[str, int]:
    """The config the seeds train after ``--trials`` of tuning on validation (``best.yaml``), and the trials."""
    from recplug.core.cli import tune

    space = _space(args, Path(args.mf).stem if entry.reference else entry.name)
    argv = ["--config", entry.config, "--space", str(space), "--trials", str(args.trials), "--study", str(study)]
    argv += ["--timeout", str(args.tune_timeout)] if args.tune_timeout is not None else []
    argv += ["--no-plot"] if args.no_plot else []
    argv += ["--", f"--data.path={dataset}", *entry.overrides, *entry_extra(entry, extra)]
    if args.max_epochs is not None:
        argv.append(f"--trainer.max_epochs={args.max_epochs}")
    print(f"recplug benchmark: tuning {entry.name} on {dataset} ({args.trials} trials, study {study})", flush=True)
    status = tune.main(argv)
    best = study / "best.yaml"
    if status == 130:
        raise KeyboardInterrupt
    if not best.exists():
        raise ConfigError(f"tuning {entry.name} on {dataset} found no best trial (see {study / 'trials.md'})")
    return str(best), args.trials


def run_entries(entries: list[Entry], dataset: str, args: Any, extra: list[str], out: Path) -> tuple[list[Row], bool]:
    """Tune (optionally) and train every entry x seed on one dataset, seed-major (every model's seed 0 first).
    Returns ``(rows, some run failed)``; raises ``KeyboardInterrupt`` when interrupted."""
    rows, plans = [], []
    for entry in entries:
        config, trials = entry.config, 0
        best = out / "tune" / entry.name / "best.yaml"
        if args.trials and args.report_only and best.exists():
            config, trials = str(best), args.trials
        elif args.trials and not (args.dry_run or args.report_only):
            config, trials = tune_entry(entry, dataset, out / "tune" / entry.name, args, extra)
        runs = ablate.plan([config], [ablate.Variant(entry.name, {})], args.seeds, out, _common(entry, dataset, args),
                           entry_extra(entry, extra))
        rows.append(Row(entry, [], [], trials))
        plans.append(runs)
    ordered = [run for seed_runs in zip(*plans) for run in seed_runs]
    if args.dry_run:
        for run in ordered:
            print(" ".join(["recplug", *run.args]))
        return rows, False
    if args.report_only:
        results = [done for done in map(ablate.finished, ordered) if done is not None]
        failures = []
        missing = len(ordered) - len(results)
        if missing:
            print(f"recplug benchmark: {dataset}: {missing} of {len(ordered)} runs not finished, left out", flush=True)
    else:
        results, failures, interrupted = ablate.execute(ordered, args.metrics[0], after=record_per_user)
        if interrupted:
            raise KeyboardInterrupt
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    by_name = {row.entry.name: row for row in rows}
    for result, directory in ablate.with_directories(ordered, results):
        row = by_name[result["variant"]]
        row.results.append(result)
        row.directories.append(directory)
    return rows, bool(failures)


def check_plan(args: Any, extra: list[str], entries: list[Entry]) -> None:
    """Everything the runs depend on, checked before any tuning or training: the options, the search spaces and
    one build of every config on every dataset (:func:`ablate.preflight`), and the metrics they log."""
    if not args.trials:
        tuning = {"--spaces": args.spaces, "--tune-timeout": args.tune_timeout}
        given = next((option for option, value in tuning.items() if value is not None), None)
        if given:
            raise ConfigError(f"{given} applies to tuning only; add --trials N")
    args.spaces = args.spaces if args.spaces is not None else str(Path(args.configs[0]).parent / SPACES)
    for entry in entries:
        if re.fullmatch(rf"{REFERENCE}-\d+", entry.name):
            raise ConfigError(f"--configs {entry.config}: rows named {REFERENCE}-<X> are the GRMF-X references "
                              f"trained from --mf; rename the file")
    shared = ablate.folder_clash(e.name for e in entries)
    if shared:
        raise ConfigError(f"--configs: the rows {shared[0]!r} and {shared[1]!r} (named by the file stems) would share "
                          "a runs folder; rename one")
    if any(not dataset.strip() for dataset in args.datasets):
        raise ConfigError("--datasets: an empty name; give a registered dataset or a folder")
    folders: dict[str, str] = {}
    for dataset in args.datasets:  # each given once (above)
        other = folders.setdefault(_dataset_folder(dataset), dataset)
        if other != dataset:
            raise ConfigError(f"--datasets: {other} and {dataset} would share the leaderboard folder "
                              f"{Path(args.out) / _dataset_folder(dataset)}")
    not_test = [m for m in args.metrics if not m.startswith("test/")]
    if not_test:
        raise ConfigError(f"--metrics {not_test}: the leaderboard ranks test metrics (test/...); validation only "
                          "chooses each run's epoch")
    reserved = ablate.reserved_keys("benchmark", args.max_epochs)
    reserved["data.path"] = "recplug benchmark sets from --datasets"
    ablate.check_passthrough(extra, "the runs", reserved)
    if args.trials:
        for stem in dict.fromkeys([*(e.name for e in entries), Path(args.mf).stem]):
            if not _space(args, stem).is_file():
                raise ConfigError(f"--spaces {args.spaces}: --trials needs a search space per bundle: "
                                  f"{_space(args, stem)} does not exist")
    logged: set[str] = set()
    if not args.report_only:  # the --configs files first: their own problem, not the default --mf's beside them
        logged = preflight_entries(entries, args, extra)
    if not Path(args.mf).is_file():  # only the default: a given --mf is checked as it is parsed
        raise ConfigError(f"--mf: {args.mf} (the default, beside the first --configs file) is not a file; give "
                          "the MF-BPR config of the GRMF-X reference rows")
    if args.report_only:
        return
    if not any(e.mf for e in entries):
        logged |= preflight_entries([Entry(Path(args.mf).stem, args.mf)], args, extra)
    ablate.check_metrics(args.metrics, {m for m in logged if m.startswith("test/")})


def preflight_entries(entries: list[Entry], args: Any, extra: list[str]) -> set[str]:
    """One build of every entry's config on every dataset (:func:`ablate.preflight`); the metrics they log."""
    logged: set[str] = set()
    for dataset in args.datasets:
        for entry in entries:
            run = ablate.plan([entry.config], [ablate.Variant(entry.name, {})], args.seeds[:1],
                              Path(args.out) / _dataset_folder(dataset), _common(entry, dataset, args), extra)[0]
            logged |= ablate.preflight(run.args, f"{entry.config} on --datasets {dataset}")
    return logged


def main(argv: list[str]) -> int:
    """``recplug benchmark ...`` (``argv`` excludes ``benchmark``). Returns 0, 1 if a run failed, 130 if
    interrupted, 2 on a config error."""
    args, extra = build_parser().parse_with_passthrough(argv)
    output_folder(args.out, "--out")
    for option, values in (("--configs", args.configs), ("--datasets", args.datasets), ("--seeds", args.seeds),
                           ("--metrics", args.metrics)):
        ablate.check_once(values, option)
    if args.mf is None:  # checked after the --configs files (check_plan)
        args.mf = next((c for c in args.configs if Path(c).name == MF), str(Path(args.configs[0]).parent / MF))
    mf_config = Path(args.mf).resolve()
    entries = [Entry(Path(c).stem, c, mf=Path(c).resolve() == mf_config) for c in args.configs]
    names = [e.name for e in entries]
    if len(set(names)) < len(names):
        raise ConfigError(f"--configs: two configs share a file name, and rows are named by it: {names}")
    proposed = args.proposed or names[0]
    if proposed not in names:
        raise ConfigError(f"--proposed {proposed!r} is none of the --configs rows {names}")
    try:
        check_plan(args, extra, entries)
        return run_plan(args, extra, entries, proposed)
    except KeyboardInterrupt:
        print("recplug benchmark: interrupted; run the same command again to resume.")
        return 130


def run_plan(args: Any, extra: list[str], entries: list[Entry], proposed: str) -> int:
    """Every dataset's runs and leaderboard; returns 0, or 1 if a run failed."""
    status = 0
    for dataset in args.datasets:
        out = Path(args.out) / _dataset_folder(dataset)
        print(f"recplug benchmark: {dataset}: {len(entries)} models x {len(args.seeds)} seeds; runs in "
              f"{out / 'runs'}", flush=True)
        rows, failed = run_entries(entries, dataset, args, extra, out)
        if args.dry_run:
            continue
        if args.report_only and not any(row.results for row in rows):  # an empty leaderboard, replacing any written
            raise ConfigError(f"--report-only: no run on {dataset} has finished under {out} (with these configs, seeds "
                              "and overrides); run the command without --report-only first")
        sizes = sorted({row.size for row in rows if row.size is not None})
        mf_size = next((row.size for row in rows if row.entry.mf), None)
        references = [Entry(f"{REFERENCE}-{size}", args.mf, (f"--model.embedding_dim={size}",), True, True)
                      for size in sizes if size != mf_size]
        if references:
            more, more_failed = run_entries(references, dataset, args, extra, out)
            rows, failed = rows + more, failed or more_failed
        ablate.check_metrics(args.metrics, {m for row in rows for r in row.results for m in r["test"]})
        records, table = leaderboard(rows, proposed, args.metrics, dataset)
        written = write_outputs(out, records, table, rows, args.metrics, not args.no_plot)
        print(f"\n## {dataset}\n\n{table}")
        print("wrote " + ", ".join(str(p) for p in written), flush=True)
        status = max(status, 1 if failed else 0)
    return status
