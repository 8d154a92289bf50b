"""``recplug report RUN_DIR``: training curves and the final metrics table of a run, from its logs.

    recplug report runs/crane/version_0 [--out DIR] [--monitor val/recall@20] [--mode max]

Reads the run's CSVLogger ``metrics.csv`` or its TensorBoard event file (``RUN_DIR`` may also be a logger folder
such as ``runs/crane``: its latest ``version_N`` is used) and writes:

* ``losses.png``: every ``train/*`` term per epoch (one panel per term: their scales differ by orders);
* ``validation.png``: every ``val/*`` metric per epoch (one panel per metric, one line per cutoff), the best
  epoch marked and the test values drawn at it;
* ``metrics.md``: the best validation epoch, the validation metrics at it and the test metrics, to 4 decimals.

The best epoch maximises (``--mode max``) the monitored validation metric: by default the ``checkpoint.monitor``
and ``checkpoint.mode`` of the run's ``config.yaml``, else ``val/recall@20`` (a monitor that is no ``val/`` metric is
refused: the epoch is chosen on validation only). Test metrics are the last ones logged;
``recplug fit`` logs them by testing the best-validation checkpoint, so they belong to that epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recplug.core.cli.boundary import CommandParser, output_folder
from recplug.core.data.formats.text import (
    csv_records, field_count_error, first_repeated, plain_float, quoted, read_text,
)
from recplug.core.errors import ConfigError, DataError
from recplug.core.ops.io import atomic_write, save_png
from recplug.core.ops.yaml_file import read_yaml

DEFAULT_MONITOR = "val/recall@20"
METRIC_ORDER = ("recall", "ndcg", "precision", "map", "mrr", "hit")
"""Table and panel order of the usual ranking metrics (others follow alphabetically)."""
DECIMALS = 4
FLOAT32_MAX = 3.4028234663852886e38
"""Largest logged value: Lightning logs float32 tensors."""


@dataclass
class RunLog:
    """Per-epoch scalars of one run.

    Attributes:
        source: the file the scalars were read from.
        series: ``{metric: {epoch: value}}`` (last value logged in that epoch); step-level ``*_step`` series
            are left out, and the ``_epoch`` suffix Lightning adds to metrics also logged per step is dropped.
        final: ``{metric: value}``, the last value logged of every metric (test metrics are read from here).
    """

    source: Path
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)

    def add(self, metric: str, epoch: int | None, value: float) -> None:
        """Record one logged value (in log order)."""
        if metric.endswith("_step"):
            return
        metric = metric.removesuffix("_epoch")
        self.final[metric] = value
        if epoch is not None:
            self.series.setdefault(metric, {})[epoch] = value

    def group(self, prefix: str) -> dict[str, dict[int, float]]:
        """The per-epoch series whose name starts with ``prefix`` (e.g. ``"train/"``), name without prefix."""
        return {m[len(prefix) :]: s for m, s in self.series.items() if m.startswith(prefix)}


@dataclass
class Report:
    """What :func:`make_report` found and wrote.

    Attributes:
        log: the scalars read.
        monitor: the metric that chose the best epoch, and ``mode`` whether it is maximised or minimised.
        best_epoch: the best validation epoch (``None`` when nothing was validated).
        val: ``{metric: value}`` at the best epoch (names without the ``val/`` prefix).
        test: ``{metric: value}`` of the test (names without the ``test/`` prefix).
        files: the written ``losses.png``, ``validation.png`` and ``metrics.md`` (plots only when there is data).
    """

    log: RunLog
    monitor: str
    mode: str
    best_epoch: int | None
    val: dict[str, float]
    test: dict[str, float]
    files: list[Path] = field(default_factory=list)


def find_run(path: str | Path) -> Path:
    """The folder holding the run's log: ``path`` itself, or the latest ``version_N`` under it."""
    path = Path(path)
    if path.is_file():
        raise DataError(f"{path}: a file, not a run folder")
    if not path.is_dir():
        raise DataError(f"{path}: run folder not found")
    if (path / "metrics.csv").is_file() or any(path.glob("events.out.tfevents.*")):
        return path
    numbers = {p: p.name[len("version_") :] for p in path.glob("version_*") if p.is_dir()}
    versions = [p for p, n in numbers.items() if n.isascii() and n.isdigit()]  # int() fails on '²', reads '٣' as 3
    if versions:
        return find_run(max(versions, key=lambda p: int(numbers[p])))
    raise DataError(f"{path}: no metrics.csv or TensorBoard events file (nor a version_N folder holding one)")


def read_csv_log(path: Path) -> RunLog:
    """Read a Lightning ``CSVLogger`` ``metrics.csv`` (sparse rows: ``epoch``, ``step``, one column per metric).
    A header that could be misread (:func:`check_csv_header`), a row with more or fewer fields than the header (a
    run cut short while writing), an epoch that is no whole number, a value that is no plain number or lies beyond
    float32 (what Lightning logs) or a file that is not UTF-8 text is a :class:`DataError` naming ``file:line``."""
    log = RunLog(path)
    records = csv_records(path, read_text(path), ",")
    line, _, header = next(records, (1, 1, []))
    check_csv_header(path, line, header)
    for start, end, fields in records:
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            raise field_count_error(path, start, end, len(header), len(fields), ",")
        row = dict(zip(header, fields))
        epoch = csv_epoch(path, start, row["epoch"]) if row.get("epoch") else None
        for column, (name, text) in enumerate(zip(header, fields), 1):
            if name not in ("epoch", "step") and text:
                log.add(name, epoch, csv_value(path, start, column, name, text))
    if not log.final:
        raise DataError(f"{path}: no metrics logged")
    return log


def check_csv_header(path: Path, line: int, header: list[str]) -> None:
    """Refuse a ``metrics.csv`` header whose values would be dropped or read as another metric's: a column with no
    name, one with spaces around its name (``CSVLogger`` writes none; `` val/recall@20`` would not be found), and
    two columns of one metric (a repeated name, or ``m`` beside ``m_epoch``: the last one would win)."""
    for column, name in enumerate(header, 1):
        if not name.strip():
            raise DataError(f"{path}:{line}: column {column} has no name")
        if name != name.strip():
            raise DataError(f"{path}:{line}: column {column} {name!r} has spaces around its name")
    repeated = first_repeated([name.removesuffix("_epoch") for name in header])
    if repeated is not None:
        columns = [f"{c} ({n!r})" for c, n in enumerate(header, 1) if n.removesuffix("_epoch") == repeated]
        raise DataError(f"{path}:{line}: columns {' and '.join(columns[:2])} both hold {repeated!r}")


def csv_epoch(path: Path, line: int, text: str) -> int:
    """The ``epoch`` field of ``metrics.csv`` line ``line``: a whole number from 0 to ``2**53`` (``0.7`` is
    refused, not read as epoch 0; above ``2**53`` a float holds no exact whole number, ``1e30`` is no epoch)."""
    value = plain_float(text)
    if value is None or not 0 <= value <= 2**53 or value != int(value):
        raise DataError(f"{path}:{line}: epoch must be a whole number from 0 to 2**53, got {quoted(text)}")
    return int(value)


def csv_value(path: Path, line: int, column: int, name: str, text: str) -> float:
    """A logged value of ``metrics.csv``: a plain number within float32's range, or ``inf``/``nan`` as
    ``CSVLogger`` writes them (``1e309`` would read as infinity, ``1e308`` breaks the plot's axis)."""
    value = plain_float(text)
    where = f"{path}:{line}: column {column} ({name})"
    if value is None:
        raise DataError(f"{where}: expected a number, got {quoted(text)}")
    if abs(value) > FLOAT32_MAX and text.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        raise DataError(f"{where}: {text.strip()} is beyond float32's range (what Lightning logs)")
    return value


def read_tensorboard_log(folder: Path) -> RunLog:
    """Read the scalars of a Lightning ``TensorBoardLogger`` run; each value's epoch is the ``epoch`` scalar that
    Lightning logs with it (same step, nearest wall time)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:
        raise ConfigError("reading TensorBoard logs needs tensorboard: pip install 'recplug[report]'") from None
    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    epochs: dict[int, list[tuple[float, int]]] = {}
    if "epoch" in tags:
        for event in events.Scalars("epoch"):
            epochs.setdefault(event.step, []).append((event.wall_time, int(event.value)))
    scalars = [(e.wall_time, e.step, tag, e.value) for tag in tags if tag != "epoch" for e in events.Scalars(tag)]
    log = RunLog(sorted(folder.glob("events.out.tfevents.*"))[-1])
    for wall_time, step, tag, value in sorted(scalars):
        candidates = epochs.get(step)
        epoch = min(candidates, key=lambda c: abs(c[0] - wall_time))[1] if candidates else None
        log.add(tag, epoch, float(value))
    if not log.final:
        raise DataError(f"{folder}: no scalars in the TensorBoard events")
    return log


def read_run_log(run: Path) -> RunLog:
    """The run's scalars, from ``metrics.csv`` when present, else from its TensorBoard events."""
    csv_path = run / "metrics.csv"
    return read_csv_log(csv_path) if csv_path.is_file() else read_tensorboard_log(run)


def configured_monitor(run: Path) -> tuple[str, str]:
    """``(monitor, mode)`` of the run's checkpoint callback, read from its ``config.yaml`` when recorded."""
    config = run / "config.yaml"
    if config.is_file():
        content = read_yaml(config, "run config") or {}
        if not isinstance(content, dict):
            raise ConfigError(f"{config}: expected a mapping of config keys, got a {type(content).__name__}")
        checkpoint = content.get("checkpoint")
        if not isinstance(checkpoint, (dict, type(None))):
            raise ConfigError(f"{config}: checkpoint must be a mapping, got {checkpoint!r}")
        if checkpoint and checkpoint.get("monitor"):
            mode = str(checkpoint.get("mode") or "max")
            if mode not in ("max", "min"):
                raise ConfigError(f"{config}: checkpoint.mode must be max or min, got {mode!r}")
            if not str(checkpoint["monitor"]).startswith("val/"):
                raise ConfigError(f"{config}: checkpoint.monitor is {checkpoint['monitor']!r}: the best epoch is "
                                  "chosen on a validation metric (val/...)")
            return str(checkpoint["monitor"]), mode
    return DEFAULT_MONITOR, "max"


def metric_key(name: str) -> tuple[int, str, int]:
    """Sort key: usual metrics first (recall, ndcg, ...), then by name, then by cutoff."""
    base, _, cutoff = name.partition("@")
    rank = METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER)
    return rank, base, int(cutoff) if cutoff.isascii() and cutoff.isdigit() else -1  # not @², which int() refuses


def best_epoch(log: RunLog, monitor: str, mode: str) -> int | None:
    """The epoch whose ``monitor`` is best (the first one on ties, as ``ModelCheckpoint`` keeps it)."""
    series = log.series.get(monitor)
    if not series:
        return None
    sign = 1.0 if mode == "max" else -1.0
    finite = [epoch for epoch in sorted(series) if math.isfinite(series[epoch])]  # NaN compares as neither
    return max(finite, key=lambda epoch: (sign * series[epoch], -epoch)) if finite else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.{DECIMALS}f}"


def render_markdown(report: Report, run: Path) -> str:
    """``metrics.md``: the best epoch and the validation/test table."""
    lines = [f"# Run report: {run.parent.name}/{run.name}", "", f"Log: `{report.log.source}`", ""]
    epochs = {e for m, s in report.log.series.items() if m.startswith(("train/", "val/")) for e in s}
    if report.best_epoch is not None:
        value = report.log.series[report.monitor][report.best_epoch]
        lines.append(
            f"Epochs trained: {len(epochs)}. Best validation epoch: **{report.best_epoch}** "
            f"({report.monitor} = {_fmt(value)}, {report.mode})."
        )
    else:
        lines.append(f"Epochs trained: {len(epochs)}. No `{report.monitor}` was logged: no best epoch.")
    lines[-1] += (
        " Test: the metrics logged by the test after fit (`recplug fit` tests the best-validation checkpoint)."
        if report.test else " No test metrics were logged (yet)."
    )
    names = sorted(set(report.val) | set(report.test), key=metric_key)
    if names:
        val_header = f"validation (epoch {report.best_epoch})" if report.best_epoch is not None else "validation"
        lines += ["", f"| metric | {val_header} | test |", "|---|---:|---:|"]
        lines += [f"| {n} | {_fmt(report.val.get(n))} | {_fmt(report.test.get(n))} |" for n in names]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in report.files if p.suffix == ".png"]
    return "\n".join(lines) + "\n"


def _panels(count: int) -> tuple[int, int]:
    cols = min(count, 3)
    return -(-count // cols), cols


def _epoch_axis(ax: Any, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set(title=title, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_losses(series: dict[str, dict[int, float]], out: Path) -> Path:
    """``losses.png``: one panel per training term, value per epoch (``loss`` first)."""
    from matplotlib.figure import Figure

    names = sorted(series, key=lambda n: (n != "loss", n))
    rows, cols = _panels(len(names))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        epochs = sorted(series[name])
        ax.plot(epochs, [series[name][e] for e in epochs], marker="o", markersize=3)
        _epoch_axis(ax, f"train/{name}")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Training losses by term")
    save_png(fig, out, dpi=110)
    return out


def plot_validation(
    series: dict[str, dict[int, float]], best: int | None, test: dict[str, float], out: Path
) -> Path:
    """``validation.png``: one panel per metric, one line per cutoff; best epoch marked, test drawn at it."""
    from matplotlib.figure import Figure

    families: dict[str, list[str]] = {}
    for name in sorted(series, key=metric_key):
        families.setdefault(name.partition("@")[0], []).append(name)
    rows, cols = _panels(len(families))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (family, names) in zip(axes, families.items()):
        for name in names:
            epochs = sorted(series[name])
            (line,) = ax.plot(epochs, [series[name][e] for e in epochs], marker="o", markersize=3, label=name)
            if best is not None and name in test:
                ax.plot([best], [test[name]], marker="*", markersize=10, linestyle="none", color=line.get_color())
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1)
        _epoch_axis(ax, f"val/{family}")
        ax.legend(fontsize="small")
    for ax in axes[len(families) :]:
        ax.set_visible(False)
    title = "Validation metrics per epoch"
    if best is not None:
        title += f" (dashed: best epoch {best}; stars: test)" if test else f" (dashed: best epoch {best})"
    fig.suptitle(title)
    save_png(fig, out, dpi=110)
    return out


def make_report(run_dir: str | Path, out: str | Path | None = None, monitor: str | None = None,
                mode: str | None = None) -> Report:
    """Read a run's logs and write ``losses.png``, ``validation.png`` and ``metrics.md`` into ``out``
    (default: the run folder). ``monitor``/``mode`` default to the run's checkpoint settings."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("recplug report needs matplotlib: pip install 'recplug[report]'") from None
    if monitor is not None and not monitor.startswith("val/"):
        raise ConfigError(f"--monitor {monitor}: the best epoch is chosen on a validation metric (val/...)")
    run = find_run(run_dir)
    log = read_run_log(run)
    default_monitor, default_mode = configured_monitor(run)
    monitor, mode = monitor or default_monitor, mode or default_mode
    if mode not in ("max", "min"):
        raise ConfigError(f"--mode must be max or min, got {mode!r}")
    if monitor not in log.series and log.group("val/"):
        logged = ", ".join(f"val/{name}" for name in sorted(log.group("val/"), key=metric_key))
        raise ConfigError(f"--monitor {monitor}: not logged in {run}; logged: {logged}")
    best = best_epoch(log, monitor, mode)
    val = {n: s[best] for n, s in log.group("val/").items() if best in s} if best is not None else {}
    test = {m[len("test/") :]: v for m, v in log.final.items() if m.startswith("test/")}
    report = Report(log, monitor, mode, best, val, test)
    folder = output_folder(str(out), "--out") if out is not None else run
    folder.mkdir(parents=True, exist_ok=True)
    if log.group("train/"):
        report.files.append(plot_losses(log.group("train/"), folder / "losses.png"))
    if log.group("val/"):
        report.files.append(plot_validation(log.group("val/"), best, test, folder / "validation.png"))
    markdown = folder / "metrics.md"
    with atomic_write(markdown, encoding="utf-8") as handle:
        handle.write(render_markdown(report, run))
    report.files.append(markdown)
    return report


def main(argv: list[str]) -> int:
    """``recplug report RUN_DIR [--out DIR]`` (``argv`` excludes ``report``); prints the written paths."""
    parser = CommandParser(prog="recplug report", description="Training curves and metrics table of a run.")
    parser.add_argument("run_dir", help="run folder (runs/NAME/version_N) or logger folder (runs/NAME)")
    parser.add_argument("--out", help="output folder (default: the run folder)")
    parser.add_argument("--monitor", help="val/ metric choosing the best epoch (default: the run's checkpoint.monitor)")
    parser.add_argument("--mode", choices=("max", "min"), help="whether --monitor is maximised (default: max)")

    args = parser.parse_args(argv)
    for path in make_report(args.run_dir, args.out, args.monitor, args.mode).files:
        print(path)
    return 0
