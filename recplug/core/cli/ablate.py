"""``recplug ablate``: run every variant of a bundle over several seeds and report paper-ready tables.

    recplug ablate --config configs/crane_rca.yaml --variants configs/ablations/crane.yaml --seeds 0 1 2 \\
        --out runs/ablate/crane [--against configs/freedom.yaml] [--max-epochs N] [-- extra CLI overrides for every run]

A *variant* is a set of config overrides (plugin swaps and argument changes) applied on top of the base
config; the variants file (docs/ablation.md) lists them by name, or as a factorial ``grid`` of named levels.
Every (variant, seed) is one ``recplug fit`` run, in this process, under ``<out>/runs/<variant>/seed<S>/``
(``log.txt``, ``result.json``, and Lightning's ``fit/``).
Its epoch is selected on validation (the ``checkpoint.monitor`` of the config, ``val/recall@20`` by default)
and the test metrics are those of that epoch's checkpoint (the CLI tests the best-validation checkpoint after
fit: the field's protocol). A run is finished when its ``result.json`` (metrics + provenance) exists; a rerun
of the same command skips finished runs, so an interrupted ablation resumes where it stopped.

Every run also stores each test user's metrics (``per_user.npz``). With ``--against CONFIG``, that config (say
another model) is trained on the same seeds as one more row (under ``<out>/runs/<its file stem>/``, with only the
arguments after ``--``), and every variant is compared with it by paired tests on the users' first metric
(:mod:`recplug.core.cli.paired`: Wilcoxon and t-test, Holm-corrected across the variants).

Outputs in ``<out>``: ``results.csv`` (one row per run, then a mean and a std row per variant; the mean row
holds the paired tests' p-values), ``results.md`` (mean ± std over seeds, best mean in bold, p-values,
provenance) and ``results.png`` (bars with std error bars; needs matplotlib, ``pip install 'recplug[report]'``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import gc
import hashlib
import itertools
import json
import logging
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from recplug.core.cli.boundary import SEED, CommandParser, number_in, output_folder
from recplug.core.cli.paired import PER_USER_FILE, load_per_user, paired_comparisons, record_per_user
from recplug.core.data.formats.text import first_repeated
from recplug.core.errors import ConfigError, RecplugError, one_line
from recplug.core.ops.io import atomic_write, save_png
from recplug.core.ops.yaml_file import read_yaml

if TYPE_CHECKING:
    from recplug.core.cli.report import RunLog

RESULT_FILE = "result.json"
FIT_DIR = "fit"  # a run's Lightning outputs: metrics.csv, config.yaml, checkpoints/
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


# ---------------------------------------------------------------------------- the variants file
@dataclass(frozen=True)
class Variant:
    """One named configuration: dotted config keys -> values, and its level on each grid axis."""

    name: str
    overrides: dict[str, Any]
    levels: dict[str, str] = field(default_factory=dict)

    def args(self) -> list[str]:
        return override_args(self.overrides)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"model.fusion": "ConcatFusion", "model.aux_losses": []}`` -> ``["--model.fusion=ConcatFusion",
    "--model.aux_losses=[]"]``: strings as they are, anything else (lists, dicts, numbers, null) as JSON."""
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]


KEY = re.compile(r"[A-Za-z_][\w-]*(\[\d+\])*(\.[A-Za-z_][\w-]*(\[\d+\])*)*")
"""A dotted config key, with ``[i]`` list indices: ``model.aux_losses[0].init_args.weight``."""


def check_key(key: Any, where: str) -> str:
    """``key``, if it is a dotted config key; else a :class:`ConfigError` naming ``where``."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ConfigError(
            f"{where}: {key!r} is not a dotted config key (like model.lr or model.aux_losses[0].init_args.weight)"
        )
    return key


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted config keys to values, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            kind = ("a boolean, like on/off/yes/no" if isinstance(key, bool) else "a null" if key is None
                    else "a number" if isinstance(key, (int, float)) else f"a {type(key).__name__}")
            raise ConfigError(f"{where}: key {key!r} is not a string (YAML reads it unquoted as {kind}: quote it)")
    return value


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """A mapping of dotted config keys to values (``common``, a variant, a grid level)."""
    overrides = _mapping(value, where)
    for key in overrides:
        check_key(key, where)
    return dict(overrides)


MAX_VARIANTS = 1_000
"""The most variants a variants file may hold (a grid counts its combinations)."""
MAX_FOLDER_NAME = 255
"""The longest folder name (in bytes) of the common file systems (ext4, XFS, APFS, tmpfs): a variant's runs folder."""
MAX_TRIALS = 100_000
"""The most trials ``recplug tune --trials`` and ``recplug benchmark --trials`` ask for (as many as a grid may have
points): each trains a model."""


def load_variants(path: str | Path) -> tuple[list[Variant], list[str], dict[str, Any]]:
    """Read a variants file; return ``(variants, grid axes, common overrides)``.

    Keys: ``common`` (overrides for every run), ``variants`` (``{name: overrides}``) and/or ``grid``
    (``{axis: {level: overrides}}``: one variant per combination of levels, named ``axis=level,...``).
    A key repeated in one mapping, a key that is not a dotted config key and names whose runs would share a
    folder are refused.
    """
    path = Path(path)
    spec = _mapping(read_yaml(path, "variants file"), str(path))
    unknown = sorted(set(spec) - {"common", "variants", "grid"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected common, variants and/or grid")
    variants = [
        Variant(name, _overrides(overrides, f"{path}: variants.{name}"))
        for name, overrides in _mapping(spec.get("variants"), f"{path}: variants").items()
    ]
    grid = _mapping(spec.get("grid"), f"{path}: grid")
    axes = [(axis, _mapping(levels, f"{path}: grid.{axis}")) for axis, levels in grid.items()]
    for axis, levels in axes:
        if not levels:
            raise ConfigError(f"{path}: grid.{axis} has no levels")
    count = len(variants) + (math.prod(len(levels) for _, levels in axes) if axes else 0)
    if count > MAX_VARIANTS:
        shape = f" (grid {' x '.join(str(len(levels)) for _, levels in axes)})" if axes else ""
        raise ConfigError(f"{path}: {count:,} variants{shape}, more than {MAX_VARIANTS:,}: each trains once per seed; "
                          "search a space this large with `recplug tune`")
    combinations = itertools.product(*[[(axis, level) for level in levels] for axis, levels in axes]) if axes else []
    for combination in combinations:
        merged: dict[str, Any] = {}
        for axis, level in combination:
            for key, value in _overrides(grid[axis][level], f"{path}: grid.{axis}.{level}").items():
                if key in merged:
                    raise ConfigError(f"{path}: {key} is set by two grid axes; each key belongs to one axis")
                merged[key] = value
        name = ",".join(f"{axis}={level}" for axis, level in combination)
        variants.append(Variant(name, merged, dict(combination)))
    if not variants:
        raise ConfigError(f"{path}: no variants; give `variants: {{name: {{key: value}}}}` or a `grid`")
    names = [v.name for v in variants]
    duplicates = sorted(n for n, times in collections.Counter(names).items() if times > 1)
    if duplicates:
        raise ConfigError(f"{path}: duplicate variant name(s) {duplicates}")
    for name in names:
        if folder_name(name) in ("", ".", ".."):
            raise ConfigError(f"{path}: variant name {name!r} cannot name its runs' folder; use letters or digits")
        if len(folder_name(name)) > MAX_FOLDER_NAME:  # folder_name keeps ASCII only: characters are bytes
            raise ConfigError(f"{path}: variant name {one_line(name, 40)!r} is too long to name its runs' folder "
                              f"({len(folder_name(name))} characters, at most {MAX_FOLDER_NAME}); shorten it")
    shared = folder_clash(names)
    if shared:
        raise ConfigError(f"{path}: variants {shared[0]!r} and {shared[1]!r} would share the runs folder "
                          f"{folder_name(shared[0])!r}; rename one")
    return variants, [axis for axis, _ in axes], _overrides(spec.get("common"), f"{path}: common")


# ---------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    """One (variant, seed): where it writes and the ``recplug fit`` arguments that reproduce it."""

    variant: Variant
    seed: int
    directory: Path
    args: list[str]
    spec_sha256: str


def folder_name(name: str) -> str:
    """``name`` as a folder name: every run of characters other than letters, digits and ``._=,+-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name)


def folder_clash(names: Iterable[str]) -> tuple[str, str] | None:
    """Two of ``names`` whose runs would share a folder (the same name, or ``a/b`` and ``a_b``), or ``None``."""
    seen: dict[str, str] = {}
    for name in names:
        if folder_name(name) in seen:
            return seen[folder_name(name)], name
        seen[folder_name(name)] = name
    return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan(
    configs: list[str], variants: list[Variant], seeds: list[int], out: Path, common: list[str], extra: list[str]
) -> list[Run]:
    """Every (variant, seed) run, variant-major. ``spec_sha256`` covers the config files' contents and every
    argument except the run's own directory: a finished run is reused only while its spec is unchanged."""
    try:
        config_texts = [_sha256(Path(c).read_text()) for c in configs]
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename}: no such config file") from None
    runs = []
    for variant in variants:
        for seed in seeds:
            directory = out / "runs" / folder_name(variant.name) / f"seed{seed}"
            args = [
                "fit", *itertools.chain.from_iterable(("--config", c) for c in configs),
                *common, *variant.args(), *extra, f"--seed_everything={seed}", f"--data.seed={seed}",
            ]
            spec = _sha256(json.dumps({"configs": config_texts, "args": args}))
            runs.append(Run(variant, seed, directory, args + output_args(directory), spec))
    return runs


def output_overrides(directory: Path) -> dict[str, Any]:
    """The overrides that put a run's Lightning outputs (``metrics.csv``, ``config.yaml``, checkpoints) in
    ``directory/fit``, without a progress bar or model summary."""
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
              "init_args": {"save_dir": str(directory), "name": "", "version": FIT_DIR}}
    return {"trainer.default_root_dir": str(directory), "trainer.logger": logger,
            "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False}


def output_args(directory: Path) -> list[str]:
    """:func:`output_overrides` as ``recplug fit`` arguments."""
    return override_args(output_overrides(directory))


OUTPUT_KEYS = tuple(output_overrides(Path()))
"""The keys every run's own outputs set (:func:`output_overrides`): a variant or an override cannot set them."""


# ---------------------------------------------------------------------------- checks before any run
def existing_file(what: str) -> Callable[[str], str]:
    """An argparse ``type``: the path of an existing file, so the usage error names the option
    (``argument --variants: va: a folder, not a variants file``)."""

    def parse(text: str) -> str:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{text}: no such {what}")
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: {'a folder' if path.is_dir() else 'not a regular file'}, "
                                              f"not a {what}")
        return text

    return parse


def check_once(values: Iterable[object], option: str) -> None:
    """Refuse a value given twice to ``option`` (its runs, rows or columns would be merged into one silently)."""
    repeated = first_repeated([str(value) for value in values])
    if repeated is not None:
        raise ConfigError(f"{option}: {repeated} is given twice")


def seconds(text: str) -> float:
    """An argparse ``type``: a positive, finite number of seconds (``--timeout``)."""
    value = number_in(float)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


EPOCHS = number_in(int, 1)
"""The argparse ``type`` of ``--max-epochs``: at least one epoch (0 trains nothing, -1 has no end)."""
NOT_PASSED_ON = {
    "--help": "it prints the help and exits instead of training",
    "--print_config": "it prints the config and exits instead of training",
    "--print_shtab": "it prints a completion script and exits instead of training",
    "--config": "a config file there would override what each run sets (its variant or tuned values); give it "
                "as this command's own option",
}
"""Options of ``recplug fit`` that cannot follow ``--``, and why."""
OPTION_KEYS = {option[2:]: f"is recplug fit's {option} option, not a setting ({why})"
               for option, why in NOT_PASSED_ON.items()}
"""The same options as keys of a variant, ``common`` or a search space (``config: x.yaml``), which reach each run
as those options."""


def reserved_clash(key: str, reserved: dict[str, str]) -> str | None:
    """The key of ``reserved`` (``{key: who sets it}``) that setting ``key`` would set: the same key, one inside
    it (``trainer.logger.init_args.save_dir`` sets ``trainer.logger``) or one it holds (``trainer``)."""
    return next((r for r in reserved if key == r or key.startswith(r + ".") or r.startswith(key + ".")), None)


def check_reserved(keys: Iterable[str], reserved: dict[str, str], where: str) -> None:
    """Refuse a key of ``keys`` that sets a ``reserved`` key, or may (``model`` holds ``model.lr``): the command's own
    value would win silently."""
    for key in keys:
        clash = reserved_clash(key, reserved)
        if clash is not None and clash.startswith(key + "."):
            raise ConfigError(f"{where} may set {clash} (a key inside {key}), which {reserved[clash]}; set the keys "
                              f"inside {key} one by one")
        if clash is not None:
            raise ConfigError(f"{where} sets {clash}, which {reserved[clash]}")


def check_passthrough(extra: list[str], runs: str, reserved: dict[str, str]) -> None:
    """Refuse, among the arguments after ``--`` (passed on to every one of ``runs``), an option of
    :data:`NOT_PASSED_ON` (also abbreviated, or ``-h``/``-c``) and a ``--key`` that sets a ``reserved`` key."""
    for token in extra:
        name = token.split("=", 1)[0]
        if name.startswith("--"):
            option = next((o for o in NOT_PASSED_ON if len(name) > 2 and o.startswith(name)), None)
        else:
            option = {"-h": "--help", "-c": "--config"}.get(name[:2])
        if option is not None:
            shown = name if name == option else f"{name} ({option})"
            raise ConfigError(f"{shown} cannot be passed to {runs} (after `--`): {NOT_PASSED_ON[option]}")
        if name.startswith("--"):
            check_reserved([name[2:]], reserved, f"the fit override {name}")


def preflight(args: list[str], where: str, tested: bool = True) -> set[str]:
    """Build the CLI on a run's ``recplug fit`` arguments without training (parsed, checked and instantiated, which
    loads the dataset), so a config every seed would refuse stops the command before any run, in one line starting
    with ``where``; ``tested``: the run also tests its best-validation checkpoint (not a tuning trial). Returns the
    metrics such a run logs (``val/recall@20``, ``test/recall@20``, ...)."""
    from recplug.core.cli.main import run_cli

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.txt"
        try:
            with captured(log):
                cli = run_cli(args[1:] if args[:1] == ["fit"] else args, run=False)
        except RecplugError as exc:
            raise ConfigError(f"{where}: {one_line(exc)}") from None
    if cli.trainer.max_epochs == 0:
        raise ConfigError(f"{where}: trainer.max_epochs is 0: a run would train and validate nothing")
    if tested and cli.trainer.limit_test_batches == 0:
        raise ConfigError(f"{where}: trainer.limit_test_batches is 0: a run would report no test metrics")
    checkpoint = cli.trainer.checkpoint_callback
    if tested and checkpoint is not None and checkpoint.monitor and checkpoint.save_top_k == 0:
        raise ConfigError(f"{where}: checkpoint.save_top_k is 0: no best-validation checkpoint would be kept, so "
                          "each run would test its last epoch")
    evaluation = cli.model.evaluation
    try:
        evaluation.check_cutoffs(cli.model.num_items)  # as at the start of fit, which the preflight does not reach
    except RecplugError as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None
    return {f"{split}/{metric}@{k}" for split in ("val", "test") for metric in evaluation.metrics
            for k in evaluation.ks}


def check_metrics(metrics: list[str], logged: set[str]) -> None:
    """Refuse ``--metrics`` that no run logs (their column would be empty); nothing when nothing is known."""
    unknown = [m for m in metrics if m not in logged]
    if logged and unknown:
        raise ConfigError(f"--metrics {unknown}: no run logs them; choose from {sorted(logged)}")


RESULT_TYPES = {"variant": str, "levels": dict, "seed": int, "monitor": str, "epoch": int, "val": dict, "test": dict,
                "seconds": (int, float), "provenance": dict, "spec_sha256": str}
"""What :func:`fit_one` writes to ``result.json`` and the reports read back, with their types."""
PROVENANCE_KEYS = ("recplug", "torch", "pytorch_lightning", "python", "plugins", "data", "config_sha256", "data_sha256")
"""The provenance entries the reports print."""


def _result_problem(result: Any) -> str | None:
    """What a parsed ``result.json`` lacks for the reports (``None`` when nothing)."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    wrong = [key for key, kind in RESULT_TYPES.items() if not isinstance(result.get(key), kind)]
    if wrong:
        return f"missing or mistyped {', '.join(wrong)}"
    for split in ("val", "test"):
        if not all(isinstance(v, (int, float)) for v in result[split].values()):
            return f"a non-numeric {split} metric"
    absent = [key for key in PROVENANCE_KEYS if key not in result["provenance"]]
    return f"provenance lacks {', '.join(absent)}" if absent else None


def finished(run: Run) -> dict[str, Any] | None:
    """The run's stored result if it finished under the same spec, else ``None``. A ``result.json`` that cannot
    be read or lacks what the reports need (truncated, edited by hand), or a ``per_user.npz`` beside it that
    cannot be read, counts as unfinished, with a warning."""
    path = run.directory / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        problem: str | None = f"{path}: unreadable ({type(exc).__name__})"
    else:
        problem = _result_problem(result)
        problem = f"{path}: {problem}" if problem is not None else None
    per_user = run.directory / PER_USER_FILE
    if problem is None and result["spec_sha256"] == run.spec_sha256 and per_user.exists():
        try:
            load_per_user(per_user)
        except RecplugError as exc:
            problem = str(exc)
    if problem is not None:  # warned once per file and problem: the warning's location is this line
        warnings.warn(f"{problem}; the run counts as unfinished and is run again")
        return None
    return result if result["spec_sha256"] == run.spec_sha256 else None


def with_directories(runs: list[Run], results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Path]]:
    """Each result of ``runs`` with the directory of the run that wrote it (its ``per_user.npz``, ``fit/``)."""
    directories = {(run.variant.name, run.seed): run.directory for run in runs}
    return [(result, directories[(result["variant"], result["seed"])]) for result in results]


def select_validation_epoch(
    metrics_csv: Path, monitor: str, mode: str, log: RunLog | None = None
) -> dict[str, Any]:
    """From a CSVLogger ``metrics.csv`` (or its ``log``, already read): the epoch that is best on ``monitor`` (the
    first of ties, as ``ModelCheckpoint`` keeps it; :func:`recplug.core.cli.report.best_epoch`) and its validation
    metrics; no test metric is read.

    Returns ``{"epoch", "val": {metric: value}, "epochs_validated"}``.
    """
    from recplug.core.cli.report import best_epoch, read_csv_log

    log = log or read_csv_log(metrics_csv)
    epoch = best_epoch(log, monitor, mode)
    if epoch is None:
        raise ConfigError(f"{metrics_csv}: {monitor} was never logged (or only as NaN); is checkpoint.monitor a "
                          "validation metric?")
    return {
        "epoch": epoch,
        "val": {k: s[epoch] for k, s in log.series.items() if k.startswith("val/") and epoch in s},
        "epochs_validated": len(log.series[monitor]),
    }


def select_epoch(metrics_csv: Path, monitor: str, mode: str) -> dict[str, Any]:
    """:func:`select_validation_epoch` plus the test metrics logged after fit (``"test": {metric: value}``)."""
    from recplug.core.cli.report import read_csv_log

    log = read_csv_log(metrics_csv)
    test = {k: v for k, v in log.final.items() if k.startswith("test/")}
    if not test:
        raise ConfigError(f"{metrics_csv}: no test metrics were logged after fit")
    return {**select_validation_epoch(metrics_csv, monitor, mode, log), "test": test}


@contextlib.contextmanager
def captured(log_path: Path) -> Iterator[None]:
    """Send a run's prints, warnings and Lightning's log lines to ``log_path`` instead of the terminal (with
    ``sys.argv`` emptied: the run's arguments are given to the CLI directly, not read from the command line)."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    saved_argv = sys.argv
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        sys.argv = sys.argv[:1]
        try:
            yield
        finally:
            sys.argv = saved_argv
            for lg, (handlers, propagate) in zip(loggers, saved):
                lg.handlers, lg.propagate = handlers, propagate


def fit_one(run: Run, after: Callable[[Any, Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and test one run in this process; return its result record (also written to ``result.json``).

    ``after(cli, directory)``, when given, runs once the CLI has tested the best-validation checkpoint (the
    module holds those weights) and returns entries added to the record (``recplug benchmark``'s per-user metrics).
    """
    from recplug.core.cli.main import run_cli
    from recplug.core.model.provenance import provenance

    if run.directory.exists():  # a partial run (interrupted, failed, or of an older spec): start clean
        shutil.rmtree(run.directory)
    run.directory.mkdir(parents=True)
    start = time.perf_counter()
    with captured(run.directory / "log.txt"):
        cli = run_cli(run.args)
    seconds = time.perf_counter() - start
    config = cli.config[cli.subcommand].as_dict()
    checkpoint = config.get("checkpoint") or {}
    monitor, mode = checkpoint.get("monitor") or "val/recall@20", checkpoint.get("mode") or "max"
    selected = select_epoch(run.directory / FIT_DIR / "metrics.csv", monitor, mode)
    result = {
        "variant": run.variant.name,
        "levels": run.variant.levels,
        "seed": run.seed,
        "monitor": monitor,
        **selected,
        "best_checkpoint": cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else "",
        "seconds": round(seconds, 2),
        "command": ["recplug", *run.args],
        "spec_sha256": run.spec_sha256,
        "provenance": provenance(config, cli.datamodule.data, run.seed),
    }
    if after is not None:
        result.update(after(cli, run.directory))
    del cli
    gc.collect()
    with atomic_write(run.directory / RESULT_FILE) as handle:  # result.json exists only for a finished run
        handle.write(json.dumps(result, indent=2))
    return result


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def execute(
    runs: list[Run], primary: str, after: Callable[[Any, Path], dict[str, Any]] | None = None,
    stored: list[dict[str, Any] | None] | None = None,
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Run what is not finished (:func:`fit_one` with ``after``), printing one progress line per run.

    ``stored``: each run's :func:`finished` result, when the caller has read them already.
    Returns ``(results of finished runs, failure messages, interrupted)``; a failed run is reported and
    the others go on; an interrupt (Ctrl-C) stops the loop, leaving every finished run's result in place.
    """
    results, failures, durations = [], [], []
    stored = [finished(r) for r in runs] if stored is None else stored
    todo = stored.count(None)
    for index, (run, done) in enumerate(zip(runs, stored), 1):
        head = f"[{index}/{len(runs)}] variant={run.variant.name} seed={run.seed}"
        if done is not None:
            print(f"{head}: finished earlier, skipped", flush=True)
            results.append(done)
            continue
        print(f"{head} ...", end="", flush=True)
        try:
            result = fit_one(run, after)
        except (KeyboardInterrupt, SystemExit):  # SystemExit: Lightning's answer to Ctrl-C during fit
            print(" interrupted", flush=True)
            return results, failures, True
        except Exception as exc:  # a crashing variant must not lose the others' results
            with open(run.directory / "log.txt", "a") as log:
                traceback.print_exc(file=log)
            message = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RecplugError):
                message += f" (traceback in {run.directory / 'log.txt'})"
        else:
            message = ""
        todo -= 1
        if message:
            failures.append(f"variant={run.variant.name} seed={run.seed}: {message}")
            print(f" failed: {message}", flush=True)
            continue
        results.append(result)
        durations.append(result["seconds"])
        score = result["test"].get(primary)
        shown = f"  {primary}={score:.4f}" if score is not None else ""
        eta = f"  (about {_duration(statistics.fmean(durations) * todo)} left)" if todo else ""
        print(f" {result['seconds']:.1f}s  epoch={result['epoch']}{shown}{eta}", flush=True)
    return results, failures, False


# ---------------------------------------------------------------------------- reports
@dataclass
class Summary:
    """Per-variant values of each reported metric over the seeds that finished."""

    variant: Variant
    values: dict[str, list[float]]

    def mean(self, metric: str) -> float:
        return seed_mean(self.values.get(metric, []))

    def std(self, metric: str) -> float:
        return seed_std(self.values.get(metric, []))


def seed_mean(values: list[float]) -> float:
    """The mean over seeds; ``nan`` with none."""
    return statistics.fmean(values) if values else math.nan


def seed_std(values: list[float]) -> float:
    """Sample standard deviation (n - 1) over seeds; ``nan`` with fewer than two."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def summarize(variants: list[Variant], results: list[dict[str, Any]], metrics: list[str]) -> list[Summary]:
    summaries = []
    for variant in variants:
        mine = [_run_values(r) for r in results if r["variant"] == variant.name]
        values = {m: [run[m] for run in mine if m in run] for m in metrics}
        values["epoch"] = [run["epoch"] for run in mine]
        summaries.append(Summary(variant, values))
    return summaries


P_COLUMNS = ("wilcoxon_p_holm", "ttest_p_holm")
"""The paired tests' Holm-adjusted p-values shown per variant (:func:`recplug.core.cli.paired.paired_comparisons`)."""


def p_value(value: float) -> str:
    """A p-value for a table: ``–`` when undefined, 3 decimals, or scientific below 1e-3."""
    return "–" if math.isnan(value) else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def mean_std(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` (just ``mean`` when ``std`` is nan: one seed); the caller handles a nan mean."""
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _run_values(result: dict[str, Any]) -> dict[str, float]:
    return {"epoch": float(result["epoch"]), **result["val"], **result["test"]}


def write_csv(path: Path, axes: list[str], results: list[dict[str, Any]], summaries: list[Summary],
              tests: dict[str, dict[str, Any]] | None = None) -> None:
    """One row per run (the selected epoch, its val and test metrics, provenance), then a ``mean`` and a
    ``std`` row per variant (std empty with one seed); with ``tests`` (``--against``), the mean row holds the
    variant's Holm-adjusted paired p-values."""
    columns = ["epoch", *sorted({k for r in results for k in [*r["val"], *r["test"]]})]
    p_columns = list(P_COLUMNS) if tests is not None else []
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", *axes, "seed", *columns, *p_columns, "recplug", "plugins", "config_sha256",
                         "data_sha256", "seconds"])
        for r in results:
            p, values = r["provenance"], _run_values(r)
            writer.writerow([r["variant"], *[r["levels"].get(a, "") for a in axes], r["seed"],
                             *[_number(values.get(c, math.nan)) for c in columns], *[""] * len(p_columns),
                             p["recplug"], "; ".join(p["plugins"]), p["config_sha256"], p["data_sha256"], r["seconds"]])
        for s in summaries:
            runs = [_run_values(r) for r in results if r["variant"] == s.variant.name]
            test = (tests or {}).get(s.variant.name, {})
            for stat, fn, needed in (("mean", statistics.fmean, 1), ("std", statistics.stdev, 2)):
                cells = []
                for c in columns:
                    values = [v[c] for v in runs if c in v]
                    cells.append(_number(fn(values)) if len(values) >= needed else "")
                p_cells = [_number(test.get(c, math.nan)) if stat == "mean" else "" for c in p_columns]
                writer.writerow([s.variant.name, *[s.variant.levels.get(a, "") for a in axes], stat, *cells, *p_cells,
                                 "", "", "", "", ""])


def markdown(
    summaries: list[Summary], axes: list[str], metrics: list[str], monitor: str, results: list[dict[str, Any]],
    seeds: list[int], tests: dict[str, dict[str, Any]] | None = None, against: str = "",
) -> str:
    """The mean ± std table (best mean per metric in bold; with ``tests``, the paired p-values against the
    ``against`` row) followed by the provenance of the runs."""
    first = axes or ["variant"]
    compared = [f"p Wilcoxon vs {against} (Holm)", f"p t-test vs {against} (Holm)"] if tests is not None else []
    lines = ["| " + " | ".join([*first, "seeds", *metrics, *compared, "epoch"]) + " |",
             "|" + "---|" * len(first) + "---:|" * (len(metrics) + len(compared) + 2)]
    best = {m: max((s.mean(m) for s in summaries if not math.isnan(s.mean(m))), default=math.nan) for m in metrics}
    for s in summaries:
        cells = ([s.variant.levels.get(a, "" if i else s.variant.name) for i, a in enumerate(axes)] if axes
                 else [s.variant.name])
        cells.append(str(len(s.values["epoch"])))
        for m in metrics:
            mean, std = s.mean(m), s.std(m)
            text = "–" if math.isnan(mean) else mean_std(mean, std)
            cells.append(f"**{text}**" if mean == best[m] else text)
        test = (tests or {}).get(s.variant.name, {})
        cells += [p_value(test.get(c, math.nan)) for c in P_COLUMNS] if tests is not None else []
        cells.append("–" if math.isnan(s.mean("epoch")) else mean_std(s.mean("epoch"), s.std("epoch"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Metrics (test/…, and val/… where asked for) at the epoch selected on {monitor}, mean ± sample std over seeds {seeds} "
        "(the seeds column counts finished runs); epoch = selected epoch (0-based).",
    ]
    if tests is not None:
        lines[-1] += (f" p: two-sided paired tests of each variant against {against} on each test user's {metrics[0]} "
                      "averaged over the seeds both finished, Holm-corrected across the variants.")
    if results:
        p = results[0]["provenance"]
        data = sorted({r["provenance"]["data_sha256"] for r in results})
        plugins = sorted({x for r in results for x in r["provenance"]["plugins"]})
        lines += [
            "",
            "Provenance:",
            f"- recplug {p['recplug']}, torch {p['torch']}, pytorch-lightning {p['pytorch_lightning']}, "
            f"python {p['python']}",
            f"- plugins: {', '.join(plugins)}",
            f"- data: {p['data']} sha256 {', '.join(data)}",
        ]
        for s in summaries:
            hashes = sorted({r["provenance"]["config_sha256"][:12] for r in results if r["variant"] == s.variant.name})
            lines.append(f"- config sha256 of {s.variant.name}: {', '.join(hashes)}")
    return "\n".join(lines) + "\n"


def write_plot(path: Path, summaries: list[Summary], metrics: list[str]) -> None:
    """Grouped bars (one group per variant, one bar per metric) with ±std error bars."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the PNG chart needs matplotlib: pip install 'recplug[report]' (or pass --no-plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(summaries) * max(1, len(metrics)) ** 0.5 + 2), 4.5))
    for k, metric in enumerate(metrics):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(summaries))]
        means = [s.mean(metric) for s in summaries]
        stds = [0.0 if math.isnan(s.std(metric)) else s.std(metric) for s in summaries]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=metric)
    ax.set_xticks(range(len(summaries)))
    ax.set_xticklabels([s.variant.name for s in summaries], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean ± std over seeds")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------------------- command
def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="recplug ablate",
        description="Run every variant x seed of a bundle; report test at the best-validation epoch as "
        "mean ± std (CSV, Markdown, PNG). Rerunning skips finished runs. Arguments after `--` are passed "
        "to every `recplug fit` run.",
    )
    parser.add_argument("--config", action="append", required=True, type=existing_file("config file"),
                        help="base config(s), composed left to right")
    parser.add_argument("--variants", required=True, type=existing_file("variants file"),
                        help="variants YAML (see docs/ablation.md)")
    parser.add_argument("--seeds", type=SEED, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument("--out", help="output folder (default: runs/ablate/<variants file name>)")
    parser.add_argument("--max-epochs", type=EPOCHS, help="shortcut for --trainer.max_epochs in every run")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run and report only these variants (default: all), in the file's order")
    parser.add_argument("--against", metavar="CONFIG", type=existing_file("config file"),
                        help="one more row: this config (e.g. configs/freedom.yaml) on the same seeds, with only the "
                        "arguments after `--`; each variant gets paired tests against it on the first metric")
    parser.add_argument("--metrics", nargs="+", default=["test/recall@20", "test/ndcg@20"],
                        help="metrics in the table and the chart (default: test/recall@20 test/ndcg@20)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    parser.add_argument("--dry-run", action="store_true",
                        help="check as a real run does (one run of each row still to run is built, without "
                        "training), then print each run's `recplug fit` command; run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the runs finished so far (others left out); train nothing")
    return parser


LOGGER_OFF = {"trainer.fast_dev_run": "turns the logger off, while each run's result is read from its metrics.csv "
                                     "(use --max-epochs 1 and trainer.limit_train_batches instead)"}
"""Keys no run of ablate, benchmark or tune may set, with why (each run failed on its missing metrics.csv)."""


def reserved_keys(command: str, max_epochs: int | None) -> dict[str, str]:
    """The keys ``recplug <command>`` sets in every run (``{key: who sets it}``), which nothing else may set."""
    reserved = {key: f"recplug {command} sets for each run (its outputs go to the run's folder)" for key in OUTPUT_KEYS}
    reserved |= LOGGER_OFF | OPTION_KEYS
    reserved |= dict.fromkeys(("seed_everything", "data.seed"), f"recplug {command} sets from --seeds")
    if max_epochs is not None:
        reserved["trainer.max_epochs"] = "--max-epochs sets"
    return reserved


def main(argv: list[str]) -> int:
    """``recplug ablate ...`` (``argv`` excludes ``ablate``). Returns 0, 1 if a run failed, 130 if interrupted."""
    args, extra = build_parser().parse_with_passthrough(argv)
    for option, values in (("--seeds", args.seeds), ("--only", args.only or []), ("--metrics", args.metrics)):
        check_once(values, option)
    variants, axes, reference, out, runs = _planned(args, extra)
    stored = [finished(r) for r in runs]
    if args.report_only and stored.count(None) == len(runs):  # the tables would be empty, replacing any written
        raise ConfigError(f"--report-only: none of the {len(runs)} runs has finished under {out} (with these configs, "
                          "variants, seeds and overrides); run the command without --report-only first")
    logged = {m for done in stored if done is not None for m in _run_values(done)} - {"epoch"}
    if not args.report_only:  # one run of each row still to run is built first: a refused config stops it all
        try:
            for run in {r.variant.name: r for r, done in zip(runs, stored) if done is None}.values():
                where = (f"--against {args.against}" if run.variant is reference
                         else f"{args.variants}: variant {run.variant.name!r}" if run.variant.overrides
                         else "--config with the common overrides and those after `--`")
                logged |= preflight(run.args, where)
        except KeyboardInterrupt:
            print("recplug ablate: interrupted before any run. Run the same command again to start.")
            return 130
    check_metrics(args.metrics, logged)
    if args.dry_run:  # after the checks of a real run, so what it prints would run
        for run in runs:
            print(" ".join(["recplug", *run.args]))
        return 0
    todo = stored.count(None)
    rows = len(variants) + (reference is not None)
    print(f"recplug ablate: {rows} rows x {len(args.seeds)} seeds = {len(runs)} runs, "
          f"{len(runs) - todo} finished earlier, {todo} {'left out' if args.report_only else 'to run'}; logs in "
          f"{out / 'runs'}", flush=True)
    if args.report_only:
        results, failures, interrupted = [done for done in stored if done is not None], [], False
    else:
        results, failures, interrupted = execute(runs, args.metrics[0], after=record_per_user, stored=stored)
    if interrupted:
        print(f"recplug ablate: interrupted; {len(results)} runs finished. Run the same command again to resume.")
        return 130
    _report(args, out, [*variants, reference] if reference is not None else variants, axes, runs, results)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _planned(args: argparse.Namespace, extra: list[str]) -> tuple[list[Variant], list[str], Variant | None, Path,
                                                                   list[Run]]:
    """``(variants, grid axes, the --against row or None, output folder, runs)`` of the command line, its variants
    file checked (reserved keys, ``--only``, ``--against``'s name and metric) before anything runs."""
    reserved = reserved_keys("ablate", args.max_epochs)
    check_passthrough(extra, "the runs", reserved)
    variants, axes, common = load_variants(args.variants)
    check_reserved(common, reserved, f"{args.variants}: common")
    for variant in variants:
        check_reserved(variant.overrides, reserved, f"{args.variants}: variant {variant.name!r}")
    if args.only:
        unknown = sorted(set(args.only) - {v.name for v in variants})
        if unknown:
            raise ConfigError(f"--only: {args.variants} has no variant(s) {unknown}; it has {[v.name for v in variants]}")
        variants = [v for v in variants if v.name in args.only]
    if args.max_epochs is not None:
        common = {**common, "trainer.max_epochs": args.max_epochs}
    out = output_folder(args.out if args.out is not None else str(Path("runs") / "ablate" / Path(args.variants).stem),
                        "--out")
    runs = plan(args.config, variants, args.seeds, out, override_args(common), extra)
    reference = None
    if args.against:
        reference = Variant(Path(args.against).stem, {})
        shared = folder_clash([*(v.name for v in variants), reference.name])
        if shared:
            raise ConfigError(f"--against {args.against}: its row {reference.name!r} and the variant {shared[0]!r} "
                              f"of {args.variants} would share the runs folder {folder_name(reference.name)!r}; rename one")
        if not args.metrics[0].startswith("test/"):
            raise ConfigError(f"--against compares test users, so the first --metrics must be a test metric, not "
                              f"{args.metrics[0]}")
        shortcut = {"trainer.max_epochs": args.max_epochs} if args.max_epochs is not None else {}
        runs += plan([args.against], [reference], args.seeds, out, override_args(shortcut), extra)
    return variants, axes, reference, out, runs


def _report(args: argparse.Namespace, out: Path, rows: list[Variant], axes: list[str], runs: list[Run],
            results: list[dict[str, Any]]) -> None:
    """Write and print ``results.csv``, ``results.md`` (and ``results.png``) of the finished ``results``: mean and
    std per row and, with ``--against`` (the last row), each row's paired test against it."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(rows, results, args.metrics)
    tests = None
    if args.against:
        located = with_directories(runs, results)
        grouped = {row.name: [(r, d) for r, d in located if r["variant"] == row.name] for row in rows}
        anchor = grouped.pop(rows[-1].name)
        tests = paired_comparisons(anchor, grouped, args.metrics[0])
    monitor = results[0]["monitor"] if results else "val/recall@20"
    write_csv(out / "results.csv", axes, results, summaries, tests)
    with atomic_write(out / "results.md") as handle:
        handle.write(markdown(summaries, axes, args.metrics, monitor, results, args.seeds, tests,
                              rows[-1].name if args.against else ""))
    written = [out / "results.csv", out / "results.md"]
    if not args.no_plot and results:
        write_plot(out / "results.png", summaries, args.metrics)
        written.append(out / "results.png")
    print((out / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
