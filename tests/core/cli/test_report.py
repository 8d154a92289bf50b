"""`recplug report` on a real (short) run: the pictures and the table exist, and the table's numbers are the
logged ones; the same run read from TensorBoard gives the same report."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from recplug.core.cli.main import main
from recplug.core.cli.report import best_epoch, configured_monitor, find_run, make_report, read_run_log
from recplug.core.errors import DataError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch MF fit on the embedded dataset, logged by both CSVLogger (runs/mf) and TensorBoard (runs/tb)."""
    pytest.importorskip("matplotlib", reason="needs the report extra: pip install 'recplug[report]'")
    pytest.importorskip("tensorboard", reason="needs the report extra: pip install 'recplug[report]'")
    root = tmp_path_factory.mktemp("runs")
    loggers = json.dumps([
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(root), "name": "mf"}},
        {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(root), "name": "tb"}},
    ])
    assert main(["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.max_epochs=3",
                 "--trainer.limit_train_batches=3", "--trainer.default_root_dir", str(root),
                 f"--trainer.logger={loggers}", "--trainer.enable_progress_bar=false",
                 "--trainer.enable_model_summary=false"]) == 0
    return root


def logged(metrics_csv: Path) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """``({epoch: {val metric: value}}, {test metric: value})`` straight from the CSV."""
    val: dict[int, dict[str, float]] = {}
    test: dict[str, float] = {}
    for row in csv.DictReader(open(metrics_csv)):
        for name, value in row.items():
            if value and name.startswith("val/"):
                val.setdefault(int(row["epoch"]), {})[name[4:]] = float(value)
            elif value and name.startswith("test/"):
                test[name[5:]] = float(value)
    return val, test


def table(markdown: str) -> dict[str, tuple[str, str]]:
    """``{metric: (validation cell, test cell)}`` of the metrics table."""
    rows = re.findall(r"^\| ([a-z]+@\d+) \| (\S+) \| (\S+) \|$", markdown, flags=re.M)
    return {name: (v, t) for name, v, t in rows}


def test_a_picture_linked_to_another_file_replaces_the_link_not_the_file(run: Path, tmp_path: Path, capsys) -> None:
    """A run folder whose losses.png was a link to another file made report overwrite that file (fuzz round 5)."""
    out = tmp_path / "linked"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    for png in ("losses.png", "validation.png"):
        (out / png).symlink_to(precious)
    assert main(["report", str(run / "mf"), "--out", str(out)]) == 0
    assert precious.read_text() == "keep me"
    assert not (out / "losses.png").is_symlink() and (out / "losses.png").read_bytes()[:4] == b"\x89PNG"


def test_report_writes_pictures_and_a_table_equal_to_the_logged_metrics(run: Path, capsys) -> None:
    out = run / "report"
    assert main(["report", str(run / "mf"), "--out", str(out)]) == 0  # logger folder: latest version is used
    written = capsys.readouterr().out.split()
    assert written == [str(out / "losses.png"), str(out / "validation.png"), str(out / "metrics.md")]
    for png in ("losses.png", "validation.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000

    val, test = logged(run / "mf" / "version_0" / "metrics.csv")
    assert sorted(val) == [0, 1, 2] and test
    best = max(sorted(val), key=lambda e: (val[e]["recall@20"], -e))
    markdown = (out / "metrics.md").read_text()
    assert f"Best validation epoch: **{best}** (val/recall@20 = {val[best]['recall@20']:.4f}, max)" in markdown
    assert f"| metric | validation (epoch {best}) | test |" in markdown
    cells = table(markdown)
    assert set(cells) == set(val[best]) == set(test) and "recall@20" in cells
    for name, (val_cell, test_cell) in cells.items():
        assert val_cell == f"{val[best][name]:.4f}" and test_cell == f"{test[name]:.4f}", name


def test_tensorboard_log_of_the_same_run_gives_the_same_report(run: Path) -> None:
    from_csv = make_report(run / "mf" / "version_0", run / "from_csv")
    from_tb = make_report(run / "tb", run / "from_tb")
    assert from_tb.log.source.name.startswith("events.out.tfevents.")
    assert from_tb.best_epoch == from_csv.best_epoch
    assert set(from_tb.log.series) == set(from_csv.log.series)  # train/loss, train/bpr, val/...
    for metric, series in from_csv.log.series.items():
        assert from_tb.log.series[metric] == pytest.approx(series, rel=1e-6), metric  # TB stores float32
    assert from_tb.test == pytest.approx(from_csv.test, rel=1e-6)
    assert [p.name for p in from_tb.files] == ["losses.png", "validation.png", "metrics.md"]


def test_best_epoch_follows_monitor_and_mode(run: Path) -> None:
    folder = find_run(run / "mf")
    assert configured_monitor(folder) == ("val/recall@20", "max")  # from the run's config.yaml
    log = read_run_log(folder)
    series = log.series["val/ndcg@10"]
    assert series[best_epoch(log, "val/ndcg@10", "min")] == min(series.values())
    assert series[best_epoch(log, "val/ndcg@10", "max")] == max(series.values())
    assert best_epoch(log, "val/no_such_metric", "max") is None


def test_missing_run_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path}: no metrics.csv or TensorBoard events file (nor a version_N folder holding one)\n"
    with pytest.raises(Exception, match="run folder not found"):
        find_run(tmp_path / "nope")


def test_version_folders_numbered_in_other_than_ascii_digits_are_not_runs(tmp_path: Path) -> None:
    """Fuzz round 5, M7: ``version_\u00b2`` failed ``int()``; ``version_\u0663`` was taken as version 3."""
    for name in ("version_0", "version_\u00b2", "version_\u0663"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text("epoch,step,val/recall@20\n0,0,0.1\n")
    assert find_run(tmp_path) == tmp_path / "version_0"
    (tmp_path / "version_0" / "metrics.csv").unlink()
    (tmp_path / "version_0").rmdir()
    with pytest.raises(DataError, match=r"no metrics\.csv or TensorBoard events file \(nor a version_N folder"):
        find_run(tmp_path)


def test_a_file_as_the_run_or_as_out_and_an_empty_out_are_named(tmp_path: Path, monkeypatch, capsys) -> None:
    """An empty --out wrote into the current folder; a file as --out was an OSError, as the run "not found"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,val/recall@20\n0,0,0.1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run), "--out", ""]) == 2
    assert capsys.readouterr().err == "error: --out is empty; give a path\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written here
    assert main(["report", str(run), "--out", str(run / "metrics.csv")]) == 2
    assert capsys.readouterr().err == f"error: --out {run / 'metrics.csv'}: a file, not a folder\n"
    assert main(["report", str(run / "metrics.csv")]) == 2
    assert capsys.readouterr().err == f"error: {run / 'metrics.csv'}: a file, not a run folder\n"


def test_an_unlogged_monitor_a_nan_epoch_and_a_broken_config_are_handled(run: Path, tmp_path: Path, capsys) -> None:
    folder = find_run(run / "mf")
    assert main(["report", str(folder), "--out", str(tmp_path / "r"), "--monitor", "val/nope@5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --monitor val/nope@5: not logged in") and "logged: val/recall@" in err
    log = read_run_log(folder)
    series = log.series["val/recall@20"]
    series[min(series)] = float("nan")  # a NaN epoch is never the best, whatever the mode
    assert best_epoch(log, "val/recall@20", "max") != min(series)
    assert best_epoch(log, "val/recall@20", "min") != min(series)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.csv").write_text((folder / "metrics.csv").read_text())
    for text, message in (("- 1\n", "config.yaml: expected a mapping of config keys, got a list"), ("checkpoint: {monitor: x, mode: 7}\n",
                          "config.yaml: checkpoint.mode must be max or min, got '7'"),
                          ("a: [1\n", "config.yaml, line 2, column 1:")):
        (broken / "config.yaml").write_text(text)
        assert main(["report", str(broken), "--out", str(tmp_path / "r2")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_a_metrics_csv_with_a_byte_order_mark_reads_the_same(run: Path, tmp_path: Path) -> None:
    folder = find_run(run / "mf")
    (tmp_path / "metrics.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "metrics.csv").read_bytes())
    assert read_run_log(tmp_path).series == read_run_log(folder).series


def test_a_row_cut_short_and_a_binary_metrics_csv_are_named(run: Path, tmp_path: Path, capsys) -> None:
    """A run killed while writing leaves a last row with fewer fields than the header: its missing metrics must not
    read as absent (or 0.0000); a file that is not text is named, not a bare UnicodeDecodeError."""
    lines = (find_run(run / "mf") / "metrics.csv").read_text().splitlines()
    fields = lines[0].count(",") + 1
    (tmp_path / "metrics.csv").write_text("\n".join([*lines[:-1], lines[-1].rsplit(",", 3)[0]]) + "\n")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'metrics.csv'}:{len(lines)}: expected {fields} ','-separated fields, got {fields - 3}\n")
    (tmp_path / "metrics.csv").write_bytes(b"epoch,step\n\xff\xfe\n")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'metrics.csv'}:2: byte 0xff is not UTF-8; save the file as UTF-8\n"


@pytest.mark.parametrize(("text", "message"), [
    ("epoch,step,val/recall@20,val/recall@20\n0,0,0.1,0.9\n",  # the last one read as the only one
     ":1: columns 3 ('val/recall@20') and 4 ('val/recall@20') both hold 'val/recall@20'"),
    ("epoch,step,val/recall@20,val/recall@20_epoch\n0,0,0.1,0.9\n",
     ":1: columns 3 ('val/recall@20') and 4 ('val/recall@20_epoch') both hold 'val/recall@20'"),
    ("epoch, step, val/recall@20\n0, 0, 0.1\n", ":1: column 2 ' step' has spaces around its name"),  # not logged
    ("epoch,step,\n0,0,0.1\n", ":1: column 3 has no name"),  # its value dropped
    ("epoch,step,val/recall@20\n0,0,0.1\n0.7,1,0.2\n", ":3: epoch must be a whole number from 0 to 2**53, got '0.7'"),  # 0
    ("epoch,step,val/recall@20\ninf,0,0.1\n", ":2: epoch must be a whole number from 0 to 2**53, got 'inf'"),  # OverflowError
    ("epoch,step,val/recall@20\n-1,0,0.1\n", ":2: epoch must be a whole number from 0 to 2**53, got '-1'"),
    ("epoch,step,val/recall@20\n1e30,0,0.1\n",  # reported as epoch 1000000000000000019884624838656
     ":2: epoch must be a whole number from 0 to 2**53, got '1e30'"),
    ("epoch,step,val/recall@20\n0,0,1e309\n",  # read as infinity
     ":2: column 3 (val/recall@20): 1e309 is beyond float32's range (what Lightning logs)"),
    ("epoch,step,train/loss\n0,0,1e308\n",  # matplotlib's ticker: arange: cannot compute length
     ":2: column 3 (train/loss): 1e308 is beyond float32's range (what Lightning logs)"),
    ("epoch,step,val/recall@20\n0,0,\u0663\n", ":2: column 3 (val/recall@20): expected a number, got '\u0663'"),
])
def test_a_metrics_csv_that_would_be_misread_is_named(text: str, message: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "metrics.csv").write_text(text, encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'metrics.csv'}{message}\n"


def test_logged_infinities_a_whole_float_epoch_and_an_odd_cutoff_are_read(tmp_path: Path) -> None:
    """What CSVLogger writes for a diverged value (``inf``, ``nan``) is kept; a cutoff that is no ASCII number
    sorts after the others instead of failing ``int()``."""
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/recall@\u00b2,val/recall@20\n0,0,inf,0.1,0.2\n1.0,1,nan,0.3,-inf\n",
        encoding="utf-8")
    report = make_report(tmp_path)
    assert report.log.series["train/loss"][0] == float("inf")
    assert report.log.series["val/recall@20"][1] == -float("inf")
    assert report.best_epoch == 0 and report.val == {"recall@\u00b2": 0.1, "recall@20": 0.2}


def test_a_monitor_that_is_no_validation_metric_is_refused(tmp_path: Path, capsys) -> None:
    """The best epoch is chosen on validation: a test (or training) monitor would pick it on the test metrics."""
    (tmp_path / "metrics.csv").write_text("epoch,step,val/recall@20,test/recall@20\n0,0,0.1,\n1,0,0.2,\n1,1,,0.3\n")
    (tmp_path / "config.yaml").write_text("checkpoint: {monitor: test/recall@20}\n")
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'config.yaml'}: checkpoint.monitor is 'test/recall@20': "
                                       "the best epoch is chosen on a validation metric (val/...)\n")
    (tmp_path / "config.yaml").unlink()
    assert main(["report", str(tmp_path), "--monitor", "train/loss"]) == 2
    assert capsys.readouterr().err == (
        "error: --monitor train/loss: the best epoch is chosen on a validation metric (val/...)\n")
