"""``recplug tune``: choose a bundle's hyper-parameters on validation, with Optuna.

    recplug tune --config configs/lightgcn.yaml --space configs/search/lightgcn.yaml --trials 50 \\
        [--study runs/tune/lightgcn] [--timeout S] [--workers K] [--sampler auto|tpe|grid|random] [--seed S] \\
        [--storage URL] [--pruner median|none] [--prune-warmup EPOCHS] [--no-plot] [-- fit overrides]

A *trial* is one ``recplug fit`` of the base config with the sampled values set at the search space's keys
(docs/tuning.md gives the space file's format) and the overrides after ``--``, trained in this process (as
``recplug ablate`` runs) without the post-fit test: its epoch is the best on ``checkpoint.monitor`` (a ``val/``
metric) and its value is the space's ``metric`` at that epoch. Test metrics are never computed, so they cannot
influence a choice. Each epoch's value goes to the pruner (MedianPruner), which stops trials that fall behind.

The study lives in storage (``<study>/study.db``, SQLite, by default; ``--storage`` an RDB URL several machines
share). Rerunning the same command resumes it: COMPLETE and PRUNED trials count against ``--trials``, a trial
left RUNNING by a killed process on this machine is marked FAIL and run again with the same values. ``--workers K``
runs K processes on the study, one thread each. Outputs in the study folder: ``best.yaml`` (the base config with
the best values: ``recplug fit --config best.yaml``), ``trials.csv``, ``trials.md``, ``history.png`` and
``importance.png``; each trial's log and ``metrics.csv`` in ``trials/<number>/``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import decimal
import fcntl
import gc
import itertools
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import yaml
from pytorch_lightning.callbacks import Callback

from recplug.core.cli.ablate import (
    LOGGER_OFF, MAX_TRIALS, OPTION_KEYS, OUTPUT_KEYS, captured, check_key, check_passthrough, check_reserved,
    existing_file, output_args, override_args, preflight, seconds, select_validation_epoch,
)
from recplug.core.cli.boundary import SEED, CommandParser, number_in, output_folder
from recplug.core.errors import ConfigError, RecplugError, one_line
from recplug.core.model.provenance import config_hash
from recplug.core.ops.io import atomic_write, save_png
from recplug.core.ops.yaml_file import read_yaml

if TYPE_CHECKING:
    import optuna

SPACE_KEYS = ("config", "metric", "direction", "params")
KINDS = ("float", "int", "choices")
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("auto", "tpe", "grid", "random")
MAX_GRID = 100_000
"""The most points a grid may have: each is listed and shuffled (a 9M-point grid took 2.2 GB for one trial)."""
TRIALS_DIR = "trials"
LOCK_FILE = "tune.lock"
SPEC_ATTR = "recplug_spec"
TRIAL_OVERRIDES = {"checkpoint.save_top_k": 0, "checkpoint.save_last": False}
"""What every trial sets besides its outputs (:func:`recplug.core.cli.ablate.output_overrides`): no checkpoints."""
TRIAL_KEYS = {**dict.fromkeys(OUTPUT_KEYS, "recplug tune sets for each trial (its outputs go to the trial's folder)"),
              **dict.fromkeys(TRIAL_OVERRIDES, "recplug tune sets for each trial (trials save no checkpoint)"),
              **LOGGER_OFF, **OPTION_KEYS}
"""The keys a trial's own arguments set, which neither the space nor the overrides after ``--`` may set."""
NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
HOST = socket.gethostname()


# ---------------------------------------------------------------------------- the search space
@dataclass(frozen=True)
class Param:
    """One tuned value: where it goes in the config, and the range or choices it is drawn from."""

    key: str  # dotted, with [i] list indices: model.aux_losses[0].init_args.weight
    path: tuple[str | int, ...]
    kind: str  # float | int | choices
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    step: float | None = None

    @property
    def cli_key(self) -> str:
        """The ``recplug fit`` argument that carries it: the key itself, or the list holding its first index
        (``model.aux_losses``: lists are replaced whole on the command line)."""
        head = list(itertools.takewhile(lambda part: isinstance(part, str), self.path))
        return ".".join(head)

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value (drawn by the sampler, or the one it was given when retried)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> dict[str, Any]:
        """The param as plain data (what a study records to refuse resuming with another space)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items() if k != "path"}


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file, resolved against its base config."""

    source: Path
    config: Path
    base: dict[str, Any]  # the loaded base config YAML
    params: tuple[Param, ...]
    metric: str | None  # None: the config's checkpoint.monitor
    direction: str

    @property
    def finite(self) -> bool:
        return all(p.kind == "choices" for p in self.params)

    @property
    def grid_size(self) -> int:
        """The number of combinations of the choices (a finite space only)."""
        return math.prod(len(p.choices) for p in self.params)

    def grid(self, seed: int) -> list[dict[str, Any]]:
        """Every combination of the choices (a finite space only), in an order shuffled by ``seed``."""
        points = [dict(zip([p.key for p in self.params], values))
                  for values in itertools.product(*[p.choices for p in self.params])]
        random.Random(seed).shuffle(points)
        return points

    def applied(self, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of the base config with ``values`` (``{key: value}``) set at their keys."""
        config = copy.deepcopy(self.base)
        for param in self.params:
            node = config
            for part in param.path[:-1]:
                node = node[part]
            node[param.path[-1]] = values[param.key]
        return config

    def unsearched(self) -> dict[str, Any]:
        """A copy of the base config with every tuned key's value blanked: what every trial shares, whatever
        default the base gives the tuned keys."""
        return self.applied({param.key: None for param in self.params})

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """``{cli key: value}`` that set ``values`` on top of the base config (a list with a tuned entry is given
        whole, with its other entries as the base config has them)."""
        config = self.applied(values)
        found: dict[str, Any] = {}
        for param in self.params:
            node: Any = config
            for part in param.path[: len(param.cli_key.split("."))]:
                node = node[part]
            found[param.cli_key] = node
        return found


def _parse_key(key: Any, where: str) -> tuple[str | int, ...]:
    check_key(key, where)
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", key))


def _resolve(path: tuple[str | int, ...], base: dict[str, Any], config: Path, where: str) -> None:
    """Raise unless every step of ``path`` exists in ``base`` (the loaded YAML of ``config``)."""
    node: Any = base
    for depth, part in enumerate(path):
        here = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:depth]).lstrip(".") or "the top"
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ConfigError(f"{where}: {here} is not a list in {config}")
            if part >= len(node):
                raise ConfigError(f"{where}: {here} has {len(node)} entries in {config}, no [{part}]")
        elif not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{where}: {config} sets no {part!r} under {here}; set the value to tune there first")
        node = node[part]


def _number(value: Any, where: str, integer: bool = False) -> float:
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is a string, not a number (YAML reads 1e-4 as text: write 1.0e-4)")
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    return value


def _param(key: Any, spec: Any, base: dict[str, Any], config: Path, where: str) -> Param:
    path = _parse_key(key, where)
    where = f"{where}.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{float: [low, high]}}, {{int: [low, high]}} or {{choices: [...]}}")
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(KINDS)}; got {sorted(map(str, spec))}")
    kind = kinds[0]
    allowed = {kind} | ({"log", "step"} if kind != "choices" else set())
    unknown = sorted(map(str, set(spec) - allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {kind}; allowed: {sorted(allowed)}")
    _resolve(path, base, config, where)
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ConfigError(f"{where}: choice {choice!r} is not a scalar (null, bool, number or string)")
            if isinstance(choice, str) and NUMBER_TEXT.fullmatch(choice):
                _number(choice, where)
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {choices}")
        return Param(key, path, kind, choices=tuple(choices))
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{where}: {kind} must be [low, high], got {bounds!r}")
    integer = kind == "int"
    low, high = (_number(b, where, integer) for b in bounds)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None and _number(step, f"{where}: step", integer) <= 0:
        raise ConfigError(f"{where}: step must be > 0, got {step}")
    if low >= high:
        raise ConfigError(f"{where}: low {low} must be below high {high} (one value: choices: [{low}])")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None and not (integer and step == 1):
        raise ConfigError(f"{where}: log and step cannot be combined")
    if step is not None and (decimal.Decimal(str(high)) - decimal.Decimal(str(low))) % decimal.Decimal(str(step)):
        raise ConfigError(f"{where}: step {step} does not divide the range [{low}, {high}] (Optuna would lower high "
                          "to the last step below it); make high - low a multiple of step")
    return Param(key, path, kind, float(low) if not integer else low, float(high) if not integer else high,
                 log=log, step=step)


def load_space(path: str | Path, base_config: str | Path | None = None) -> SearchSpace:
    """Read and check a search-space file and resolve its keys against ``base_config`` (default: the config the
    file names). Every problem is a one-line :class:`ConfigError` naming the file and key."""
    path = Path(path)
    spec = read_yaml(path, "search-space file")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with {', '.join(SPACE_KEYS)}")
    unknown = sorted(map(str, set(spec) - set(SPACE_KEYS)))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected {', '.join(SPACE_KEYS)}")
    if base_config is None:
        if not isinstance(spec.get("config"), str):
            raise ConfigError(f"{path}: names no config (config: configs/X.yaml); pass --config")
        base_config = spec["config"]
        if not Path(base_config).is_file():
            raise ConfigError(f"{path}: config {base_config}: no such config file (a relative path is read from the "
                              f"current folder, {Path.cwd()}); fix it or pass --config")
    config = Path(base_config)
    base = read_yaml(config, "config file")
    if not isinstance(base, dict):
        raise ConfigError(f"{config}: expected a mapping of config keys")
    metric = spec.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric.startswith("val/")):
        raise ConfigError(f"{path}: metric {metric!r}: tuning selects on validation only; give a val/ metric")
    direction = spec.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{path}: direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    params = spec.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{path}: params must be a non-empty mapping of config keys to ranges or choices")
    parsed = tuple(_param(key, value, base, config, f"{path}: params") for key, value in params.items())
    for a, b in itertools.permutations(parsed, 2):
        if a.path == b.path[: len(a.path)]:
            raise ConfigError(f"{path}: params {a.key} and {b.key} overlap: {b.key} is inside {a.key}")
    return SearchSpace(path, config, base, parsed, metric, direction)


# ---------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class Settings:
    """Everything a worker process needs to run trials of one study."""

    space: SearchSpace
    study_dir: Path
    storage: str
    trials: int
    timeout: float | None
    sampler: str  # tpe | grid | random
    seed: int
    pruner: str  # median | none
    prune_warmup: int
    extra: tuple[str, ...]
    workers: int
    plot: bool

    @property
    def study_name(self) -> str:
        return self.study_dir.resolve().name

    def spec(self) -> dict[str, Any]:
        """What the study's trials depend on; resuming with another spec is refused. A new default of a tuned key
        in the base config changes no trial, so the config is hashed without the tuned keys' values."""
        return {"config": config_hash(self.space.unsearched()), "params": [p.describe() for p in self.space.params],
                "metric": self.space.metric, "direction": self.space.direction, "overrides": list(self.extra),
                "sampler": self.sampler, "seed": self.seed}


class TrialFailed(Exception):
    """A trial's run crashed (not a config error): it is recorded as FAIL and the study goes on."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("recplug tune needs Optuna: pip install 'recplug[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def default_storage(study_dir: Path) -> str:
    """The study's storage without ``--storage``: SQLite ``<study>/study.db``."""
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def _storage_error(exc: Exception, settings: Settings) -> ConfigError | None:
    """One line for a storage that cannot be opened (a bad URL, a missing driver, a file that is not a database),
    naming ``--storage`` or the study's ``study.db``; ``None`` for other errors."""
    from sqlalchemy import exc as sql
    from sqlalchemy.engine import make_url

    if settings.storage == default_storage(settings.study_dir):
        where = str(settings.study_dir / "study.db")
    else:
        try:
            where = f"--storage {make_url(settings.storage).render_as_string(hide_password=True)}"
        except sql.ArgumentError:
            where = f"--storage {settings.storage}"
    cause = one_line(getattr(exc, "orig", None) or exc, 160)
    if isinstance(exc, sql.ArgumentError):  # NoSuchModuleError too: an unknown dialect
        return ConfigError(f"{where}: not a database URL ({cause}); give one like sqlite:///path/study.db or "
                           "postgresql://user@host/database")
    if isinstance(exc, ImportError):
        return ConfigError(f"{where}: the database driver of this URL is not installed ({cause})")
    if isinstance(exc, sql.OperationalError):
        return ConfigError(f"{where}: cannot open the database ({cause})")
    if isinstance(exc, sql.DatabaseError):
        return ConfigError(f"{where}: not an Optuna study database ({cause})")
    return None


def open_study(settings: Settings, worker: int) -> optuna.Study:
    """Create or load the study, with this worker's sampler (seeded by the seed, the worker and the number of
    trials so far, so a resumed or parallel worker does not repeat another's draws) and the pruner."""
    optuna = _optuna()
    storage: Any = settings.storage
    pruner = (optuna.pruners.MedianPruner(n_warmup_steps=settings.prune_warmup) if settings.pruner == "median"
              else optuna.pruners.NopPruner())
    try:
        if storage.startswith("sqlite"):  # several processes write: wait for the file lock instead of failing
            storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 120}})
        study = optuna.create_study(storage=storage, study_name=settings.study_name,
                                    direction=settings.space.direction, load_if_exists=True, pruner=pruner)
    except Exception as exc:
        error = _storage_error(exc, settings)
        if error is None:
            raise
        raise error from None
    seed = int(np.random.SeedSequence([settings.seed, worker, len(study.trials)]).generate_state(1)[0])
    study.sampler = (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if settings.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))  # grid: every trial is enqueued with its values
    return study


def check_spec(study: optuna.Study, settings: Settings) -> None:
    """Record the study's spec, or refuse to resume a study whose finished trials ran under another one."""
    from optuna.trial import TrialState

    spec, stored = settings.spec(), study.user_attrs.get(SPEC_ATTR)
    if stored is not None and stored.get("config") == config_hash(settings.space.base):
        stored = {**stored, "config": spec["config"]}  # recorded before tuned keys were left out of the hash
    if stored is not None and stored != spec and study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        changed = ", ".join(k for k in spec if stored.get(k) != spec[k])
        raise ConfigError(f"{settings.study_dir}: the study's trials ran with another {changed}; resume it with the "
                          "same config, space, overrides, sampler and seed, or pass another --study")
    study.set_user_attr(SPEC_ATTR, spec)


@contextlib.contextmanager
def _locked(study_dir: Path) -> Iterator[None]:
    """Exclusive lock of the study folder: this machine's workers count, retry and start trials one at a time."""
    with open(study_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this machine still runs (signal 0 only checks)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a killed or interrupted trial's values again (as a WAITING trial the next start picks up)."""
    optuna = _optuna()
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": trial.number}, system_attrs=trial.system_attrs))


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process (on this machine) is gone, and queue them again.

    Returns their numbers. Call under :func:`_locked`."""
    from optuna.trial import TrialState

    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("host") == HOST and not _alive(t.user_attrs.get("pid"))]
    for trial in dead:
        study.tell(trial.number, state=TrialState.FAIL)
        _retry(study, trial)
    return [t.number for t in dead]


def _counted(study: optuna.Study, running: bool) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED) + ((TrialState.RUNNING,) if running else ())
    return len(study.get_trials(deepcopy=False, states=states))


def _next_trial(study: optuna.Study, settings: Settings) -> optuna.Trial | None:
    """Start the next trial, or ``None`` when the done and running ones reach ``--trials``. Call under
    :func:`_locked`. A grid trial is enqueued with the first grid point no trial has taken."""
    from optuna.trial import TrialState

    fail_dead_trials(study)
    if _counted(study, running=True) >= settings.trials:
        return None
    if settings.sampler == "grid" and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        taken = [t.params for t in study.get_trials(deepcopy=False)]
        point = next((p for p in settings.space.grid(settings.seed) if p not in taken), None)
        if point is None:
            return None
        study.enqueue_trial(point)
    trial = study.ask()
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())
    return trial


class TrialReporter(Callback):
    """Reports the tuned metric to the Optuna trial after each validation; stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise ConfigError(f"the tuned metric {self.metric} is not logged; the evaluator logs {logged}")
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned at epoch {trainer.current_epoch}")


def _epoch_rule(cli: Any, space: SearchSpace) -> tuple[str, str, str]:
    """``(monitor, mode, metric)`` of a built CLI: the epoch is chosen on the checkpoint's monitor, which must be
    a validation metric; the value is the space's metric (default: the monitor)."""
    checkpoint = cli.trainer.checkpoint_callback
    monitor, mode = (checkpoint.monitor, checkpoint.mode) if checkpoint else (None, "max")
    if not monitor or not monitor.startswith("val/"):
        raise ConfigError(f"checkpoint.monitor is {monitor!r}: recplug tune chooses each trial's epoch on a val/ metric")
    metric = space.metric or monitor
    if metric == monitor and (mode == "max") != (space.direction == "maximize"):
        raise ConfigError(f"{space.source}: direction {space.direction} contradicts checkpoint.mode {mode} for {metric}")
    return monitor, mode, metric


def trial_args(space: SearchSpace, values: dict[str, Any] | None, extra: tuple[str, ...], directory: Path) -> list[str]:
    """The arguments of a trial's ``recplug fit`` (without a subcommand) with ``values`` at the space's keys
    (``None``: the base config's own values), writing into ``directory``."""
    tuned = override_args(space.overrides(values)) if values is not None else []
    return ["--config", str(space.config), *tuned, *extra, *output_args(directory), *override_args(TRIAL_OVERRIDES)]


def check_trials(space: SearchSpace, extra: tuple[str, ...]) -> None:
    """Build a trial's CLI before the study opens (the dataset is loaded, nothing trained): on the base config with
    the overrides after ``--``, then with every param at its low end and at its high end (first and last choices). A
    config or a range bound every such trial would refuse stops here in one line naming the file at fault."""
    with tempfile.TemporaryDirectory() as folder:
        logged = preflight(trial_args(space, None, extra, Path(folder)),
                           f"{space.config}{' with the overrides after `--`' if extra else ''}", tested=False)
        if space.metric is not None and space.metric not in logged:
            raise ConfigError(f"{space.source}: metric {space.metric} is not logged; the trials log "
                              f"{sorted(m for m in logged if m.startswith('val/'))}")
        for end, ends in ((0, "low ends (first choices)"), (-1, "high ends (last choices)")):
            values = {p.key: p.choices[end] if p.kind == "choices" else (p.low, p.high)[end] for p in space.params}
            preflight(trial_args(space, values, extra, Path(folder)), f"{space.source}: params at their {ends}",
                      tested=False)


def _named(space: SearchSpace, values: dict[str, Any], message: str) -> str:
    """The CLI's refusal of a trial's config, preceded by the space file and the tuned values its message names."""
    named = [p for p in space.params if re.search(rf"(?<![\w.]){re.escape(p.cli_key)}(?!\w)", message)]
    if not named:
        return message
    return f"{space.source}: {', '.join(f'params.{p.key} = {_cell(values[p.key])}' for p in named)}: {message}"


def run_trial(trial: optuna.Trial, settings: Settings) -> float:
    """Train one trial in this process; return its metric at the best validation epoch.

    Records ``best_epoch``, ``epochs`` (validated), ``value``, ``metric`` and ``seconds`` as user attributes. Raises
    ``optuna.TrialPruned``, :class:`TrialFailed` (a crash: traceback in the trial's ``log.txt``),
    :class:`ConfigError` (a config the CLI refuses: every trial would) or ``KeyboardInterrupt``.
    """
    from recplug.core.cli.main import run_cli

    optuna = _optuna()
    space = settings.space
    values = {p.key: p.suggest(trial) for p in space.params}
    directory = settings.study_dir / TRIALS_DIR / f"{trial.number:04d}"
    if directory.exists():  # left by a study of the same name that was deleted: start clean
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    log = directory / "log.txt"
    args = trial_args(space, values, settings.extra, directory)
    rule = ("", "", "")  # (monitor, mode, metric), known once the CLI is built
    start = time.perf_counter()

    def record(monitor: str, mode: str, metric: str) -> float:
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        selected = select_validation_epoch(directory / "fit" / "metrics.csv", monitor, mode)
        if metric not in selected["val"]:
            raise ConfigError(f"the tuned metric {metric} is not logged; the evaluator logs {sorted(selected['val'])}")
        value = selected["val"][metric]
        trial.set_user_attr("best_epoch", selected["epoch"])
        trial.set_user_attr("epochs", selected["epochs_validated"])
        trial.set_user_attr("value", value)
        trial.set_user_attr("metric", metric)
        return value

    try:
        with captured(log):
            cli = run_cli(args, run=False)  # no subcommand: fit only, the post-fit test never runs
            rule = _epoch_rule(cli, space)
            cli.trainer.callbacks.append(TrialReporter(trial, rule[2]))
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            del cli
            gc.collect()
    except optuna.TrialPruned:
        record(*rule)
        raise
    except SystemExit:  # Lightning's answer to Ctrl-C during fit
        raise KeyboardInterrupt from None
    except RecplugError as exc:
        raise ConfigError(f"trial {trial.number}: {_named(space, values, one_line(exc))}") from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        with open(log, "a") as handle:
            traceback.print_exc(file=handle)
        raise TrialFailed(f"{type(exc).__name__}: {exc} (traceback in {log})") from exc
    return record(*rule)


def _shown(values: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def work(settings: Settings, worker: int) -> None:
    """Run trials until ``--trials`` are done or running, the timeout passes, or this worker has started as many
    as were missing when it began (so failing trials cannot loop forever). Prints one line per trial."""
    optuna = _optuna()
    from optuna.trial import TrialState

    study = open_study(settings, worker)
    deadline = time.monotonic() + settings.timeout if settings.timeout else math.inf
    for _ in range(max(0, settings.trials - _counted(study, running=False))):
        if time.monotonic() >= deadline:
            break
        with _locked(settings.study_dir):
            trial = _next_trial(study, settings)
        if trial is None:
            break
        retry = f" (retry of {trial.user_attrs['retry_of']})" if "retry_of" in trial.user_attrs else ""
        try:
            value = run_trial(trial, settings)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            outcome = f"{exc}; best {trial.user_attrs['value']:.4f} at epoch {trial.user_attrs['best_epoch']}"
        except TrialFailed as exc:
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            outcome = f"failed: {exc}"
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            _retry(study, study.get_trials(deepcopy=False)[trial.number])
            raise
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
            outcome = f"{trial.user_attrs['metric']} {value:.4f} at epoch {trial.user_attrs['best_epoch']}"
        print(f"trial {trial.number}{retry}: {outcome}, {trial.user_attrs.get('seconds', 0):.1f}s  "
              f"{_shown(trial.params)}  [{_counted(study, running=False)}/{settings.trials} done]", flush=True)


def _worker_process(settings: Settings, worker: int, errors: Any) -> None:
    """Entry point of a ``--workers`` process: one thread; on a config error, its message goes to ``errors`` (a
    queue the parent prints once) and the exit status is 2; 130 on Ctrl-C."""
    import torch

    torch.set_num_threads(1)
    try:
        work(settings, worker)
    except RecplugError as exc:
        errors.put(one_line(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(settings: Settings) -> int:
    """``settings.workers`` processes on the study; returns the worst exit status (130 when interrupted). The
    workers' config errors (several workers usually hit the same one) are raised as one :class:`ConfigError`."""
    context = multiprocessing.get_context("spawn")
    errors = context.SimpleQueue()
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the processes: one thread each
    try:
        processes = [context.Process(target=_worker_process, args=(settings, w, errors))
                     for w in range(settings.workers)]
        for process in processes:
            process.start()
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join()
        return 130
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if messages:
        raise ConfigError("; ".join(dict.fromkeys(messages)))
    return max(process.exitcode or 0 for process in processes)


# ---------------------------------------------------------------------------- outputs
def _rows(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.name == "WAITING":
            continue
        attrs = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name, **{p.key: t.params.get(p.key, "") for p in space.params},
                     "value": attrs.get("value", ""), "best_epoch": attrs.get("best_epoch", ""),
                     "epochs": attrs.get("epochs", ""), "seconds": attrs.get("seconds", ""),
                     "retry_of": attrs.get("retry_of", "")})
    return rows


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial (``None`` before one)."""
    return study.best_trial if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else None


def _metric(study: optuna.Study, space: SearchSpace) -> str:
    """The tuned metric's name: the space's, else the checkpoint monitor the trials used."""
    used = next((t.user_attrs["metric"] for t in study.get_trials(deepcopy=False) if "metric" in t.user_attrs), None)
    return space.metric or used or "checkpoint.monitor"


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_best(path: Path, study: optuna.Study, settings: Settings) -> None:
    """The base config with the best trial's values: runnable with ``recplug fit --config best.yaml``."""
    best, space = study.best_trial, settings.space
    lines = [f"# recplug tune: the best of {_counted(study, running=False)} trials of {settings.study_dir} (trial "
             f"{best.number}: {_metric(study, space)} {best.value:.6g} at epoch {best.user_attrs.get('best_epoch')}, "
             "on validation),",
             f"# {space.config} with the values of {space.source}:",
             *[f"#   {p.key}: {_cell(best.params[p.key])}" for p in space.params]]
    if settings.extra:
        lines.append(f"# The trials also ran with: {' '.join(settings.extra)}")
    command = " ".join(["recplug fit --config", str(path), *settings.extra])
    lines.append(f"#   {command}")
    body = yaml.safe_dump(space.applied(best.params), sort_keys=False)
    with atomic_write(path) as handle:  # workers on other machines may finish at the same time
        handle.write("\n".join(lines) + "\n" + body)


def write_tables(out: Path, study: optuna.Study, settings: Settings, notes: list[str]) -> list[Path]:
    """``trials.csv`` (one row per trial) and ``trials.md`` (the same table, best row in bold, and a summary)."""
    space, rows = settings.space, _rows(study, settings.space)
    columns = ["number", "state", *[p.key for p in space.params], "value", "best_epoch", "epochs", "seconds", "retry_of"]
    with atomic_write(out / "trials.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)  # full precision: a row's values reproduce the trial
    best = _best(study)
    states = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    metric = _metric(study, space)
    lines = [f"# recplug tune: {space.config}", "",
             f"Search space {space.source}; {metric} ({space.direction}) at each trial's best validation epoch; "
             f"sampler {settings.sampler}, seed {settings.seed}, pruner {settings.pruner}; test metrics never computed.",
             "", "Trials: " + ", ".join(f"{n} {s}" for s, n in states.items() if n) + f" (of {settings.trials} asked).",
             ""]
    if best is not None:
        lines += [f"Best: trial {best.number}, {metric} {best.value:.4f}; its config: best.yaml "
                  f"(`recplug fit --config {out / 'best.yaml'}{' ' + ' '.join(settings.extra) if settings.extra else ''}`).", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for row in rows:
        cells = [_cell(row[c]) for c in columns]
        if best is not None and row["number"] == best.number:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "value: the metric at the best validation epoch (for a PRUNED trial, the best before it was stopped); "
              "epochs: validated epochs; retry_of: the killed or interrupted trial it re-runs.", *notes]
    with atomic_write(out / "trials.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return [out / "trials.csv", out / "trials.md"]


def write_plots(out: Path, study: optuna.Study, settings: Settings) -> tuple[list[Path], list[str]]:
    """``history.png`` (each trial's value, the best so far) and ``importance.png`` (Optuna's parameter importance;
    skipped, with a note, under 2 complete trials or with one parameter). Returns ``(written, notes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    optuna = _optuna()
    rows = [r for r in _rows(study, settings.space) if r["value"] != ""]
    metric = _metric(study, settings.space)
    sign = 1 if settings.space.direction == "maximize" else -1
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        mine = [r for r in rows if r["state"] == state]
        if mine:
            ax.scatter([r["number"] for r in mine], [r["value"] for r in mine], marker=marker, label=state.lower())
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        best = list(itertools.accumulate([r["value"] for r in complete], lambda a, b: a if sign * a >= sign * b else b))
        ax.step([r["number"] for r in complete], best, where="post", color="k", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"recplug tune: {settings.space.config.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, out / "history.png", dpi=150)
    plt.close(fig)
    written, notes = [out / "history.png"], []
    if len(complete) < 2 or len(settings.space.params) < 2:
        notes.append(f"importance.png: not drawn ({len(complete)} complete trials, {len(settings.space.params)} "
                     "parameters; it needs at least 2 of each).")
        (out / "importance.png").unlink(missing_ok=True)
        return written, notes
    importance = optuna.importance.get_param_importances(study)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(importance) + 1.5))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (Optuna's default evaluator, normalised)")
    ax.set_title(f"recplug tune: {settings.space.config.name}, {len(complete)} complete trials")
    fig.tight_layout()
    save_png(fig, out / "importance.png", dpi=150)
    plt.close(fig)
    return written + [out / "importance.png"], notes


# ---------------------------------------------------------------------------- command
def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="recplug tune",
        description="Tune a bundle's hyper-parameters on validation with Optuna (docs/tuning.md). Rerunning the "
        "same command resumes the study. Arguments after `--` are passed to every trial's `recplug fit`.",
    )
    parser.add_argument("--config", type=existing_file("config file"),
                        help="base config (default: the `config` the space file names)")
    parser.add_argument("--space", required=True, type=existing_file("search-space file"),
                        help="search-space YAML (configs/search/*.yaml)")
    parser.add_argument("--trials", type=number_in(int, 1, MAX_TRIALS), required=True,
                        help=f"COMPLETE + PRUNED trials the study should have (at most {MAX_TRIALS:,})")
    parser.add_argument("--timeout", type=seconds, help="start no trial after this many seconds")
    parser.add_argument("--study", help="study folder (default: runs/tune/<space file name>)")
    parser.add_argument("--storage", help="Optuna RDB URL shared by several machines (default: sqlite <study>/study.db)")
    parser.add_argument("--workers", type=number_in(int, 1), default=1,
                        help="worker processes, one thread each (default 1; at most one per core)")
    parser.add_argument("--sampler", default="auto", help=f"auto (grid for a space of choices only with at most "
                        f"{MAX_GRID:,} points, else tpe), tpe, grid or random")
    parser.add_argument("--seed", type=SEED, default=0, help="sampler seed (default 0)")
    parser.add_argument("--pruner", default="median", choices=("median", "none"), help="median (default) or none")
    parser.add_argument("--prune-warmup", type=number_in(int, 0), default=10,
                        help="epochs before a trial may be pruned (default 10)")
    parser.add_argument("--no-plot", action="store_true", help="skip history.png and importance.png")
    return parser


def parse_settings(argv: list[str]) -> Settings:
    """The settings of `recplug tune ARGV` (everything checked before any trial runs)."""
    args, extra = build_parser().parse_with_passthrough(argv)
    if args.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {args.sampler!r}")
    cores = os.cpu_count() or 1
    if args.workers > cores:  # more would only share the cores, each process holding its own torch and dataset
        raise ConfigError(f"--workers {args.workers}: more than this machine's {cores} cores (each worker trains on "
                          f"one thread); give at most {cores}")
    _optuna()
    if not args.no_plot:  # checked before the trials, not after them
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("the plots need matplotlib: pip install 'recplug[report]' (or pass --no-plot)") from None
    space = load_space(args.space, args.config)
    enumerable = space.finite and space.grid_size <= MAX_GRID
    sampler = ("grid" if enumerable else "tpe") if args.sampler == "auto" else args.sampler
    trials = args.trials
    if sampler == "grid":
        ranges = [p.key for p in space.params if p.kind != "choices"]
        if ranges:
            raise ConfigError(f"--sampler grid needs choices only; {args.space}: params.{ranges[0]} is a range")
        if not enumerable:
            raise ConfigError(f"--sampler grid: {args.space} has {space.grid_size:,} points (the product of its "
                              f"choices), more than {MAX_GRID:,}; use --sampler tpe or random")
        trials = min(trials, len(space.grid(args.seed)))
    for param in space.params:
        check_reserved([param.cli_key], TRIAL_KEYS, f"{args.space}: params.{param.key}")
    check_passthrough(extra, "trials", {**TRIAL_KEYS, **{p.cli_key: f"{args.space} tunes" for p in space.params}})
    study = args.study if args.study is not None else str(Path("runs") / "tune" / Path(args.space).stem)
    study_dir = output_folder(study, "--study")
    storage = args.storage if args.storage is not None else default_storage(study_dir)
    check_trials(space, tuple(extra))
    return Settings(space, study_dir, storage, trials, args.timeout, sampler, args.seed, args.pruner, args.prune_warmup,
                    tuple(extra), args.workers, not args.no_plot)


def _missing(study: optuna.Study, settings: Settings, start: float) -> str:
    """Why the study has fewer trials than asked, after running since ``start`` (``time.monotonic()``): the timeout
    passed, trials failed (a retried one is not missing) or trials still run in another process."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    reasons = []
    if settings.timeout is not None and time.monotonic() - start >= settings.timeout:
        reasons.append(f"the --timeout of {settings.timeout:g} s passed")
    if failed:
        reasons.append(f"{failed} failed: see the FAIL rows in {settings.study_dir / 'trials.md'}")
    if running:
        reasons.append(f"{running} still running in another process")
    return "; ".join(reasons)


def main(argv: list[str]) -> int:
    """``recplug tune ...`` (``argv`` excludes ``tune``). Returns 0, 1 if some trials failed or are missing,
    2 on a config error, 130 if interrupted."""
    settings = parse_settings(argv)
    created = not settings.study_dir.exists()
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    try:
        study = open_study(settings, worker=0)
    except RecplugError:
        if created:  # a --storage that cannot be opened leaves no empty study folder behind
            with contextlib.suppress(OSError):
                settings.study_dir.rmdir()
        raise
    check_spec(study, settings)
    with _locked(settings.study_dir):
        retried = fail_dead_trials(study)
    space = settings.space
    print(f"recplug tune: {space.config} x {len(space.params)} parameters of {space.source}, {settings.sampler} sampler, "
          f"{settings.workers} worker(s); {_counted(study, running=False)} of {settings.trials} trials done earlier"
          + (f"; trial(s) {retried} were left running by a killed process: run again" if retried else "")
          + f"; study in {settings.study_dir}", flush=True)
    start = time.monotonic()
    try:
        if settings.workers > 1:
            status = run_workers(settings)
        else:
            work(settings, 0)
            status = 0  # failed trials show below as missing ones
    except KeyboardInterrupt:
        status = 130
    if status == 130:
        print("recplug tune: interrupted; run the same command again to resume.")
        return 130
    if status:
        return status
    out, written, notes = settings.study_dir, [], []
    if settings.plot:
        written, notes = write_plots(out, study, settings)
    written = write_tables(out, study, settings, notes) + written
    if _best(study) is not None:
        write_best(out / "best.yaml", study, settings)
        written.append(out / "best.yaml")
    print((out / "trials.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    done = _counted(study, running=False)
    if done < settings.trials:
        print(f"recplug tune: {done} of {settings.trials} trials done ({_missing(study, settings, start)}); "
              "run the same command again to run the missing ones.", file=sys.stderr)
        return 1
    return 0
