"""``recplug tune``: the search-space file, a finished study and its outputs, resuming after an interrupt or a kill,
two workers on one study, pruning, and the proof that test metrics never influence a choice."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from recplug.core.cli import tune
from recplug.core.cli.ablate import select_validation_epoch
from recplug.core.cli.main import main
from recplug.core.errors import ConfigError
from recplug.core.cli.tune import load_space
from test_ablate import without_options  # this folder is on sys.path (pytest's default import mode)

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[3]
MF = ROOT / "configs" / "mf.yaml"
CORES = os.cpu_count() or 1
SPACE = f"""config: {MF}
params:
  model.lr: {{float: [1.0e-3, 1.0e-1], log: true}}
  model.aux_losses[0].init_args.weight: {{choices: [0.0, 1.0e-4, 1.0e-2]}}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def space(tmp_path: Path) -> Path:
    return write(tmp_path / "space.yaml", SPACE)


@pytest.fixture
def run_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary folder: the bundle's relative outputs (runs/) stay out of the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tune_args(space: Path, study: Path, folder: Path, trials: int, *options: str, epochs: int = 2) -> list[str]:
    return ["tune", "--space", str(space), "--trials", str(trials), "--study", str(study), *options,
            "--", "--data.path", str(folder), "--trainer.max_epochs", str(epochs)]


def load(study: Path) -> optuna.Study:
    return optuna.load_study(study_name=study.name, storage=f"sqlite:///{study / 'study.db'}")


def states(study: Path) -> list[tuple[int, str]]:
    return [(t.number, t.state.name) for t in load(study).trials]


# ---------------------------------------------------------------- the search-space file
def test_space_parses_kinds_and_resolves_list_indices(tmp_path: Path) -> None:
    space = load_space(write(tmp_path / "s.yaml", SPACE + "  model.embedding_dim: {int: [16, 64], step: 16}\n"))
    assert space.config == MF and space.metric is None and space.direction == "maximize" and not space.finite
    lr, weight, dim = space.params
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-3, 1e-1, True)
    assert (weight.kind, weight.choices, weight.path) == ("choices", (0.0, 1e-4, 1e-2),
                                                          ("model", "aux_losses", 0, "init_args", "weight"))
    assert (dim.kind, dim.low, dim.high, dim.step) == ("int", 16, 64, 16)
    values = {"model.lr": 0.05, "model.aux_losses[0].init_args.weight": 1e-4, "model.embedding_dim": 32}
    base = yaml.safe_load(MF.read_text())
    assert space.overrides(values) == {  # a tuned list entry travels as the whole list, its other keys as in the base
        "model.lr": 0.05, "model.embedding_dim": 32,
        "model.aux_losses": [{**base["model"]["aux_losses"][0], "init_args": {"weight": 1e-4}}]}
    applied = space.applied(values)
    assert applied["model"]["aux_losses"][0]["init_args"]["weight"] == 1e-4 and applied["model"]["lr"] == 0.05
    assert base["model"]["aux_losses"][0]["init_args"]["weight"] != 1e-4 and base["model"]["lr"] != 0.05  # unchanged
    assert applied["trainer"] == base["trainer"]


@pytest.mark.parametrize(("params", "message"), [
    ("  model.nope: {float: [0.1, 0.2]}\n", r"mf.yaml sets no 'nope' under model"),
    ("  model.aux_losses[3].init_args.weight: {choices: [0.1]}\n", r"model.aux_losses has 1 entries in .*mf.yaml, no \[3\]"),
    ("  model.lr[0]: {choices: [0.1]}\n", r"model.lr is not a list"),
    ("  model..lr: {choices: [0.1]}\n", r"'model..lr' is not a dotted config key"),
    ("  model.lr: {float: [1e-4, 1.0e-2]}\n", r"params.model.lr: .1e-4. is a string, not a number \(YAML reads 1e-4"),
    ("  model.lr: {choices: [1e-4, 1.0e-3]}\n", r"'1e-4' is a string"),
    ("  model.lr: {float: [0.1, 0.2], choices: [0.1]}\n", r"give exactly one of float, int, choices"),
    ("  model.lr: {float: [0.2, 0.1]}\n", r"low 0.2 must be below high 0.1"),
    ("  model.embedding_dim: {int: [16, 16]}\n", r"low 16 must be below high 16 \(one value: choices: \[16\]\)"),
    ("  model.lr: {float: [0.0, 0.1], log: true}\n", r"a log range needs low > 0"),
    ("  model.lr: {float: [0.1, 0.2], log: true, step: 0.05}\n", r"log and step cannot be combined"),
    ("  model.lr: {float: [0.1]}\n", r"float must be \[low, high\]"),
    ("  model.embedding_dim: {int: [16, 64.5]}\n", r"expected an integer, got 64.5"),
    ("  model.lr: {float: [0.1, 0.2], base: 10}\n", r"unknown option\(s\) \['base'\]"),
    ("  model.lr: {choices: []}\n", r"choices must be a non-empty list"),
    ("  model.lr: {choices: [[0.1]]}\n", r"choice \[0.1\] is not a scalar"),
    ("  model.lr: {choices: [0.1, 0.1]}\n", r"choices repeat a value"),
    ("  model.lr: 0.1\n", r"params.model.lr: expected a mapping"),
    ("  model.aux_losses: {choices: [null]}\n  model.aux_losses[0].init_args.weight: {choices: [0.1]}\n",
     r"params model.aux_losses and model.aux_losses\[0\].init_args.weight overlap"),
    ("  model.lr: {float: [0.001, 0.01], step: 0.004}\n", r"params.model.lr: step 0.004 does not divide the range"),
    ("  model.embedding_dim: {int: [16, 64], step: 10}\n", r"params.model.embedding_dim: step 10 does not divide"),
    ("  model.lr: {choices: [0.1]}\n  model.lr: {choices: [0.2]}\n", r"line 4.*key 'model.lr' appears twice"),
    ("  --model.lr: {choices: [0.1]}\n", r"'--model.lr' is not a dotted config key"),
], ids=["missing-key", "index-out-of-range", "index-into-a-number", "bad-key", "1e-4-is-text", "1e-4-choice",
        "two-kinds", "low-above-high", "empty-range", "log-of-zero", "log-and-step", "one-bound", "int-bound-float", "unknown-option",
        "no-choices", "list-choice", "repeated-choice", "not-a-mapping", "overlapping-keys", "float-step-off-the-range",
        "int-step-off-the-range", "key-given-twice", "dashed-key"])
def test_bad_space_names_the_file_and_key(tmp_path: Path, params: str, message: str) -> None:
    path = write(tmp_path / "s.yaml", f"config: {MF}\nparams:\n{params}")
    with pytest.raises(ConfigError, match=message) as error:
        load_space(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("text", "message"), [
    (f"config: {MF}\nparams: {{}}\n", r"params must be a non-empty mapping"),
    (f"config: {MF}\nmetric: test/recall@20\nparams: {{model.lr: {{choices: [0.1]}}}}\n", r"validation only"),
    (f"config: {MF}\ndirection: up\nparams: {{model.lr: {{choices: [0.1]}}}}\n", r"direction must be one of"),
    (f"config: {MF}\ntrials: 3\nparams: {{model.lr: {{choices: [0.1]}}}}\n", r"unknown key\(s\) \['trials'\]"),
    ("params: {model.lr: {choices: [0.1]}}\n", r"names no config"),
    ("config: no/such.yaml\nparams: {model.lr: {choices: [0.1]}}\n",
     r"s.yaml: config no/such.yaml: no such config file \(a relative path is read from the current folder"),
    ("params: {model.lr: {choices: [0.1]}\n", r"s.yaml, line 2, column 1: did not find expected ',' or '}'"),
    (f"config: {MF}\nconfig: {MF}\nparams: {{model.lr: {{choices: [0.1]}}}}\n", r"line 2.*key 'config' appears twice"),
], ids=["empty-params", "test-metric", "bad-direction", "unknown-key", "no-config", "missing-config", "bad-yaml",
        "config-given-twice"])
def test_bad_space_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_space(write(tmp_path / "s.yaml", text))
    assert "\n" not in str(error.value)


def test_a_space_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(f"config: {MF}\nparams: {{model.lr: {{choices: [0.1]}}}}  # \xff\n".encode() + b"\xff\n")
    with pytest.raises(ConfigError, match=rf"{path}: byte 0xff .* is not UTF-8"):
        load_space(path)


SHIPPED_SPACES = sorted((ROOT / "configs" / "search").glob("*.yaml"))


def _bundle(space_file: Path) -> Path:
    named = yaml.safe_load(space_file.read_text()).get("config")
    return ROOT / named if named else ROOT / "configs" / space_file.name


@pytest.mark.parametrize("space_file", SHIPPED_SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_resolves_against_its_bundle(space_file: Path) -> None:
    space = load_space(space_file, _bundle(space_file))
    assert space.params


@pytest.mark.slow
@pytest.mark.parametrize("space_file", SHIPPED_SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_builds_through_the_real_cli(space_file: Path, tmp_path: Path) -> None:
    """The lowest and the highest value of every parameter are accepted by the CLI and the components."""
    from recplug.core.cli.ablate import override_args
    from recplug.core.cli.lightning import run_cli

    space = load_space(space_file, _bundle(space_file))
    for end in (0, -1):
        values = {p.key: p.choices[end] if p.kind == "choices" else (p.low, p.high)[end] for p in space.params}
        run_cli(["--config", str(space.config), *override_args(space.overrides(values)),
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)


# ---------------------------------------------------------------- bad command lines: one line, exit 2
def before_dashes(*options: str):
    """Options given last before ``--``, replacing the same options given earlier."""
    return lambda a: without_options(a[:a.index("--")], set(options)) + list(options) + a[a.index("--"):]


def the_space(a: list[str]) -> str:
    return a[a.index("--space") + 1]


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a[:a.index("--space")] + a[a.index("--space") + 2:], r"the following arguments are required: --space"),
    (lambda a: [x if x != "3" else "0" for x in a], r"argument --trials: must be in \[1, 100000\], got 0"),
    (lambda a: [x if x != "3" else "100001" for x in a], r"argument --trials: must be in \[1, 100000\], got 100001"),
    (lambda a: a[:1] + ["--sampler", "cmaes"] + a[1:], r"--sampler must be one of auto, tpe, grid, random, got 'cmaes'"),
    (lambda a: a[:1] + ["--sampler", "grid"] + a[1:], r"--sampler grid needs choices only; .*params.model.lr is a range"),
    (lambda a: a[:1] + ["--workers", "0"] + a[1:], r"argument --workers: must be >= 1"),
    (lambda a: a[:1] + ["--workers", str(CORES + 1)] + a[1:],  # 100 on 2 cores did not finish a trial in 150 s
     rf"--workers {CORES + 1}: more than this machine's {CORES} cores \(each worker trains on one thread\); give at "
     rf"most {CORES}"),
    (lambda a: [x if not x.endswith("space.yaml") else x + ".missing" for x in a], r"no such search-space file"),
    (lambda a: a + ["--model.lr=0.1"], r"the fit override --model.lr sets model.lr, which .* tunes"),
    (lambda a: a + ["--model.aux_losses", "[]"], r"the fit override --model.aux_losses sets model.aux_losses"),
    (lambda a: a + ["--model", "{}"], r"the fit override --model may set model.lr \(a key inside model\), which "
                                      r".*space.yaml tunes; set the keys inside model one by one"),  # it said "sets"
    (before_dashes("--timeout", "nan"), r"argument --timeout: must be a finite number, got nan"),
    (before_dashes("--timeout", "0"), r"argument --timeout: must be > 0, got 0"),
    (before_dashes("--seed", "-1"), r"argument --seed: must be in \[0, 4294967295\], got -1"),
    (before_dashes("--prune-warmup", "-1"), r"argument --prune-warmup: must be >= 0, got -1"),
    (before_dashes("--study", ""), r"--study is empty; give a path"),
    (lambda a: before_dashes("--study", the_space(a))(a), r"--study .*space.yaml: a file, not a folder"),
    (lambda a: before_dashes("--study", the_space(a) + "/sub")(a), r"--study .*space.yaml/sub: cannot be created: "
                                                                    r".*space.yaml is a file, not a folder"),
    (lambda a: [x if not x.endswith("space.yaml") else str(Path(x).parent) for x in a],
     r"argument --space: .*: a folder, not a search-space file"),
    (before_dashes("--config", str(ROOT / "configs")), r"argument --config: .*configs: a folder, not a config file"),
    (lambda a: a + ["--help"], r"--help cannot be passed to trials \(after `--`\)"),
    (lambda a: a + ["--print_config"], r"--print_config cannot be passed to trials"),
    (lambda a: a + ["--he"], r"--he \(--help\) cannot be passed to trials"),
    (lambda a: a + ["--config", str(ROOT / "configs" / "lightgcn.yaml")], r"--config cannot be passed to trials"),
    (lambda a: a + ["-c", str(ROOT / "configs" / "lightgcn.yaml")], r"-c \(--config\) cannot be passed to trials"),
    (lambda a: a + ["--trainer.default_root_dir", "x"],
     r"the fit override --trainer.default_root_dir sets trainer.default_root_dir, which recplug tune sets for each"),
    (lambda a: a + ["--trainer.logger.init_args.save_dir=x"], r"sets trainer.logger, which recplug tune sets"),
    (lambda a: a + ["--checkpoint.save_top_k=1"], r"sets checkpoint.save_top_k, which recplug tune sets for each "
                                                  r"trial \(trials save no checkpoint\)"),
    (lambda a: a + ["--trainer.max_epochs", "0"], r"mf.yaml with the overrides after `--`: trainer.max_epochs is 0"),
    (lambda a: a + ["--model.embedding_dim", "wide"],
     r"mf.yaml with the overrides after `--`: model.embedding_dim: expected int"),
], ids=["no-space", "no-trials", "too-many-trials", "unknown-sampler", "grid-of-ranges", "no-workers",
        "more-workers-than-cores", "missing-space", "override-clash", "override-clash-list", "override-holding-a-tuned-key",
        "nan-timeout", "zero-timeout", "negative-seed", "negative-warmup", "empty-study", "study-is-a-file",
        "study-in-a-file", "space-is-a-folder", "config-is-a-folder", "help-to-trials",
        "print-config-to-trials", "abbreviated-help", "config-to-trials", "short-config-to-trials", "trial-root-dir",
        "trial-logger", "trial-checkpoints", "zero-epochs", "override-the-cli-refuses"])
def test_bad_command_line_is_one_line_exit_2(space: Path, tmp_path: Path, tiny_folder: Path, capsys, change,
                                             message: str) -> None:
    args = change(tune_args(space, tmp_path / "study", tiny_folder, 3))
    assert main(args) == 2, capsys.readouterr()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "study").exists()  # refused before any trial


def test_missing_optuna_is_one_line(space: Path, tmp_path: Path, tiny_folder: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(tune_args(space, tmp_path / "study", tiny_folder, 3)) == 2
    assert capsys.readouterr().err == "error: recplug tune needs Optuna: pip install 'recplug[tune]'\n"


@pytest.mark.parametrize(("params", "message"), [
    ("  trainer.logger.init_args.save_dir: {choices: [a, b]}\n",
     r"space.yaml: params.trainer.logger.init_args.save_dir sets trainer.logger, which recplug tune sets"),
    ("  model.embedding_dim: {float: [8.0, 16.0]}\n",
     r"space.yaml: params at their low ends \(first choices\): model.embedding_dim: expected int, got '8.0'"),
    ("  model.lr: {choices: [0.01, -1.0]}\n", r"space.yaml: params at their high ends \(last choices\): model.lr"),
], ids=["a-key-each-trial-sets", "a-float-range-for-an-int", "a-last-choice-the-cli-refuses"])
def test_a_space_every_trial_would_refuse_is_refused_before_the_study(tmp_path: Path, run_in: Path, tiny_folder: Path,
                                                                      capsys, params: str, message: str) -> None:
    space = write(tmp_path / "space.yaml", f"config: {MF}\nparams:\n{params}")
    assert main(tune_args(space, run_in / "study", tiny_folder, 3)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and __import__("re").search(message, err), err
    assert not (run_in / "study").exists()


def test_a_value_the_cli_refuses_stops_the_study_naming_the_space_file_and_key(tmp_path: Path, run_in: Path,
                                                                               tiny_folder: Path) -> None:
    """A choice between the ends (which are built before the study) that the CLI refuses: every trial drawing it
    would fail alike, so the study stops in one line naming the space file, the key and the value."""
    space = write(tmp_path / "space.yaml",
                  f"config: {MF}\nparams:\n  model.embedding_dim: {{choices: [8, wide, 16]}}\n")
    settings = tune.parse_settings(tune_args(space, run_in / "study", tiny_folder, 1)[1:])
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"model.embedding_dim": "wide"})
    with pytest.raises(ConfigError) as error:
        tune.run_trial(study.ask(), settings)
    assert str(error.value) == (f"trial 0: {space}: params.model.embedding_dim = wide: model.embedding_dim: expected "
                                "int, got 'wide'")


@pytest.mark.parametrize(("storage", "message"), [
    ("notaurl", r"--storage notaurl: not a database URL \(Could not parse"),
    ("foo://bar", r"--storage foo://bar: not a database URL \(Can't load plugin: sqlalchemy.dialects:foo\)"),
    ("sqlite:////no/such/folder/x.db", r"--storage sqlite:////no/such/folder/x.db: cannot open the database "
                                       r"\(unable to open database file\)"),
    (None, r"study.db: not an Optuna study database \(file is not a database\)"),
], ids=["not-a-url", "unknown-dialect", "missing-folder", "corrupt-study-db"])
def test_a_storage_that_cannot_be_opened_is_one_line(space: Path, run_in: Path, tiny_folder: Path, capsys,
                                                     storage: str | None, message: str) -> None:
    study = run_in / "study"
    options = ("--storage", storage) if storage is not None else ()
    if storage is None:
        study.mkdir()
        write(study / "study.db", "garbage\n")
    assert main(tune_args(space, study, tiny_folder, 1, *options)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and __import__("re").search(message, err), err
    assert study.exists() == (storage is None)  # a study folder the command created is not left behind


# ---------------------------------------------------------------- a finished study
@pytest.mark.slow
def test_a_finished_study_writes_a_runnable_best_config(space: Path, run_in: Path, tiny_folder: Path, capsys) -> None:
    study_dir = run_in / "study"
    assert main(tune_args(space, study_dir, tiny_folder, 3)) == 0
    study = load(study_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    with open(study_dir / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == [0, 1, 2] and {r["state"] for r in rows} == {"COMPLETE"}
    for trial, row in zip(study.trials, rows):
        metrics = study_dir / "trials" / f"{trial.number:04d}" / "fit" / "metrics.csv"
        selected = select_validation_epoch(metrics, "val/recall@20", "max")
        assert trial.value == selected["val"]["val/recall@20"] == float(row["value"])  # the best epoch's value
        assert int(row["best_epoch"]) == selected["epoch"] and float(row["model.lr"]) == trial.params["model.lr"]
        header = metrics.read_text().splitlines()[0].split(",")
        assert not [c for c in header if c.startswith("test/")]  # the post-fit test never ran
    best = study.best_trial
    markdown = (study_dir / "trials.md").read_text()
    assert f"Best: trial {best.number}, val/recall@20 {best.value:.4f}" in markdown
    assert f"| **{best.number}** | **COMPLETE** |" in markdown
    assert (study_dir / "history.png").stat().st_size and (study_dir / "importance.png").stat().st_size

    config = yaml.safe_load((study_dir / "best.yaml").read_text())
    base = yaml.safe_load(MF.read_text())
    assert config["model"]["lr"] == best.params["model.lr"]
    assert config["model"]["aux_losses"][0]["init_args"]["weight"] == best.params["model.aux_losses[0].init_args.weight"]
    base["model"]["lr"], base["model"]["aux_losses"] = config["model"]["lr"], config["model"]["aux_losses"]
    assert config == base  # nothing else changed
    assert main(["fit", "--config", str(study_dir / "best.yaml"), "--data.path", str(tiny_folder),
                 "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]) == 0

    capsys.readouterr()
    assert main(tune_args(space, study_dir, tiny_folder, 3)) == 0  # finished: nothing runs again
    assert "3 of 3 trials done earlier" in capsys.readouterr().out and len(load(study_dir).trials) == 3


def test_a_study_stopped_by_its_timeout_says_so(space: Path, run_in: Path, tiny_folder: Path, capsys) -> None:
    """It blamed the FAIL rows of trials.md, of which there were none."""
    assert main(tune_args(space, run_in / "study", tiny_folder, 5, "--timeout", "0.001", "--no-plot", epochs=1)) == 1
    err = capsys.readouterr().err
    assert __import__("re").search(r"recplug tune: [01] of 5 trials done \(the --timeout of 0.001 s passed\); run "
                                   r"the same command again to run the missing ones.\n", err), err
    assert "FAIL" not in err


@pytest.mark.slow
def test_a_finite_space_is_enumerated_once(tmp_path: Path, run_in: Path, tiny_folder: Path) -> None:
    grid = write(tmp_path / "grid.yaml", f"config: {MF}\nparams:\n  model.lr: {{choices: [0.01, 0.05]}}\n"
                                         "  model.embedding_dim: {choices: [8, 16]}\n")
    assert main(tune_args(grid, run_in / "study", tiny_folder, 10, "--no-plot", epochs=1)) == 0  # auto: grid
    trials = load(run_in / "study").trials
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    assert sorted((t.params["model.lr"], t.params["model.embedding_dim"]) for t in trials) == [
        (0.01, 8), (0.01, 16), (0.05, 8), (0.05, 16)]


def test_a_trial_behind_the_pruner_stops_at_that_epoch(space: Path, run_in: Path, tiny_folder: Path) -> None:
    settings = tune.parse_settings(tune_args(space, run_in / "study", tiny_folder, 1, epochs=3)[1:])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        tune.run_trial(trial, settings)
    assert trial.user_attrs["epochs"] == 1 and trial.user_attrs["best_epoch"] == 0  # of 3
    assert list(study.trials[0].intermediate_values) == [0]


# ---------------------------------------------------------------- resuming
@pytest.mark.slow
def test_an_interrupted_study_resumes_with_only_the_missing_trials(space: Path, run_in: Path, tiny_folder: Path,
                                                                   monkeypatch, capsys) -> None:
    study_dir, real_run, calls = run_in / "study", tune.run_trial, []

    def interrupt_the_third(trial, settings):
        calls.append(trial.number)
        if len(calls) == 3:
            for param in settings.space.params:  # values drawn, then Ctrl-C during the fit
                param.suggest(trial)
            raise KeyboardInterrupt
        return real_run(trial, settings)

    monkeypatch.setattr(tune, "run_trial", interrupt_the_third)
    args = tune_args(space, study_dir, tiny_folder, 4, "--no-plot")
    assert main(args) == 130
    assert "run the same command again to resume" in capsys.readouterr().out
    before = load(study_dir).trials
    assert [t.state.name for t in before] == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]

    calls.clear()
    assert main(args) == 0
    assert calls == [3, 4]  # the interrupted trial's retry, then one new trial
    after = load(study_dir).trials
    assert [t.state.name for t in after] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert after[3].params == before[2].params and after[3].user_attrs["retry_of"] == 2
    assert [(t.params, t.value) for t in after[:2]] == [(t.params, t.value) for t in before[:2]]


def test_a_changed_study_is_not_resumed(space: Path, run_in: Path, tiny_folder: Path, capsys) -> None:
    study_dir = run_in / "study"
    settings = tune.parse_settings(tune_args(space, study_dir, tiny_folder, 2)[1:])
    study_dir.mkdir()
    study = tune.open_study(settings, 0)
    tune.check_spec(study, settings)
    trial = study.ask()
    study.tell(trial, 0.5)  # one finished trial under this spec
    assert main(tune_args(space, study_dir, tiny_folder, 2, epochs=5)) == 2
    assert "the study's trials ran with another overrides" in capsys.readouterr().err


def test_a_new_default_of_a_tuned_key_resumes_the_study(tmp_path: Path, run_in: Path, tiny_folder: Path,
                                                         capsys) -> None:
    """A bundle's default lr changes no trial of a study that tunes lr; a change of an untuned key does."""
    base = yaml.safe_load(MF.read_text())
    config = tmp_path / "mf.yaml"
    space = write(tmp_path / "space.yaml", SPACE.replace(str(MF), str(config)))
    study_dir = run_in / "study"

    def finish_one_trial_with(config_text: dict) -> None:
        write(config, yaml.safe_dump(config_text))
        settings = tune.parse_settings(tune_args(space, study_dir, tiny_folder, 1)[1:])
        study_dir.mkdir(exist_ok=True)
        study = tune.open_study(settings, 0)
        tune.check_spec(study, settings)
        study.tell(study.ask(), 0.5)

    finish_one_trial_with(base)
    finish_one_trial_with({**base, "model": {**base["model"], "lr": 0.02}})  # tuned: resumed
    assert len(load(study_dir).trials) == 2
    write(config, yaml.safe_dump({**base, "model": {**base["model"], "embedding_dim": 8}}))
    assert main(tune_args(space, study_dir, tiny_folder, 3)) == 2  # untuned: refused
    assert "the study's trials ran with another config" in capsys.readouterr().err


def test_a_study_recorded_with_the_whole_config_hash_resumes(space: Path, run_in: Path, tiny_folder: Path) -> None:
    """Studies recorded before the tuned keys were left out of the hash still resume under the same config."""
    study_dir = run_in / "study"
    settings = tune.parse_settings(tune_args(space, study_dir, tiny_folder, 1)[1:])
    study_dir.mkdir()
    study = tune.open_study(settings, 0)
    study.set_user_attr(tune.SPEC_ATTR, {**settings.spec(), "config": tune.config_hash(settings.space.base)})
    study.tell(study.ask(), 0.5)
    tune.check_spec(study, settings)
    assert study.user_attrs[tune.SPEC_ATTR] == settings.spec()


@pytest.mark.slow
def test_a_killed_study_reruns_the_trial_left_running(space: Path, run_in: Path, tiny_folder: Path) -> None:
    study_dir = run_in / "study"
    args = tune_args(space, study_dir, tiny_folder, 3, "--no-plot", epochs=3)
    process = subprocess.Popen([sys.executable, "-m", "recplug.core.cli.main", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = study_dir / "trials" / "0001" / "log.txt"
    deadline = time.monotonic() + 300
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-trial: no handler runs
    process.wait()
    assert states(study_dir) == [(0, "COMPLETE"), (1, "RUNNING")]
    first = (study_dir / "trials" / "0000" / "fit" / "metrics.csv").stat().st_mtime_ns

    assert main(args) == 0
    trials = load(study_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert (study_dir / "trials" / "0000" / "fit" / "metrics.csv").stat().st_mtime_ns == first  # not run again


@pytest.mark.slow
@pytest.mark.skipif(CORES < 2, reason="--workers is at most one per core")
def test_two_workers_share_one_study(space: Path, run_in: Path, tiny_folder: Path) -> None:
    study_dir = run_in / "study"
    assert main(tune_args(space, study_dir, tiny_folder, 4, "--workers", "2", "--no-plot")) == 0
    trials = load(study_dir).trials
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert sorted(p.name for p in study_dir.glob("*.db")) == ["study.db"]
    assert len({tuple(t.params.items()) for t in trials}) == 4  # the workers did not repeat each other's draws


@pytest.mark.slow
@pytest.mark.skipif(CORES < 2, reason="--workers is at most one per core")
def test_workers_report_a_config_error_they_share_once(space: Path, run_in: Path, tiny_folder: Path) -> None:
    study_dir = run_in / "study"
    settings = tune.parse_settings(tune_args(space, study_dir, tiny_folder, 2, "--workers", "2")[1:])
    study_dir.mkdir()
    write(study_dir / "study.db", "garbage\n")  # both workers fail to open it alike
    with pytest.raises(ConfigError) as error:
        tune.run_workers(settings)
    assert str(error.value) == f"{study_dir / 'study.db'}: not an Optuna study database (file is not a database)"


# ---------------------------------------------------------------- test metrics never influence a choice
def _scramble_test_split(folder: Path, out: Path, seed: int = 1) -> Path:
    """A copy of an MMRec folder whose test interactions (x_label 2) point at other items, not held by the user."""
    shutil.copytree(folder, out)
    inter = next(out.glob("*.inter"))
    header, *lines = inter.read_text().splitlines()
    rows = [line.split("\t") for line in lines]
    num_items = int(np.load(next(out.glob("*_feat.npy"))).shape[0])
    held: dict[str, set[int]] = {}
    for user, item, *_ in rows:
        held.setdefault(user, set()).add(int(item))
    rng = np.random.default_rng(seed)
    for row in rows:
        if row[4] == "2":
            free = sorted(set(range(num_items)) - held[row[0]])
            row[1] = str(int(rng.choice(free)))
            held[row[0]].add(int(row[1]))
    inter.write_text("\n".join([header, *["\t".join(r) for r in rows]]) + "\n")
    return out


@pytest.mark.slow
def test_test_metrics_never_influence_a_choice(space: Path, run_in: Path, tiny_folder: Path) -> None:
    from recplug.core.cli.lightning import run_cli
    from recplug.core.data.resolve import load_dataset

    scrambled = _scramble_test_split(tiny_folder, run_in / "scrambled")
    original, changed = load_dataset(tiny_folder), load_dataset(scrambled)
    for split in ("train", "valid"):
        assert all((a == b).all() for a, b in zip(original.splits[split], changed.splits[split]))
    assert (original.splits["test"][1] != changed.splits["test"][1]).float().mean() > 0.9

    tests = []
    for folder in (tiny_folder, scrambled):  # the scrambled split changes the test metrics ...
        cli = run_cli(["fit", "--config", str(MF), "--data.path", str(folder), "--trainer.max_epochs", "2",
                       "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
        tests.append({k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")})
    assert tests[0] and tests[0]["test/recall@20"] != tests[1]["test/recall@20"]

    studies = []
    for name, folder in (("a", tiny_folder), ("b", scrambled)):  # ... and not one choice of the tuner
        assert main(tune_args(space, run_in / name, folder, 3, "--no-plot")) == 0
        studies.append([(t.params, t.value, t.user_attrs["best_epoch"]) for t in load(run_in / name).trials])
    assert studies[0] == studies[1]
    assert len({str(p) for p, _, _ in studies[0]}) == 3



def test_a_grid_too_large_to_enumerate_is_sampled_or_refused(tmp_path: Path, tiny_folder: Path, capsys) -> None:
    """A 125,000-point grid (three lists of 50 choices): auto takes TPE; --sampler grid is one line, not an OOM."""
    from recplug.core.cli import tune

    choices = ", ".join(f"{1e-4 * (i + 1):.6f}" for i in range(50))
    space = write(tmp_path / "big.yaml", f"config: {MF}\nparams:\n  model.lr: {{choices: [{choices}]}}\n"
                  f"  model.aux_losses[0].init_args.weight: {{choices: [{choices}]}}\n"
                  f"  model.embedding_dim: {{choices: [{', '.join(str(8 + i) for i in range(50))}]}}\n")
    assert tune.parse_settings(tune_args(space, tmp_path / "study", tiny_folder, 1)[1:]).sampler == "tpe"
    small = write(tmp_path / "small.yaml", SPACE.replace("{float: [1.0e-3, 1.0e-1], log: true}", "{choices: [0.1]}"))
    assert tune.parse_settings(tune_args(small, tmp_path / "study", tiny_folder, 1)[1:]).sampler == "grid"
    assert main(tune_args(space, tmp_path / "study2", tiny_folder, 1, "--sampler", "grid")) == 2
    assert capsys.readouterr().err == (f"error: --sampler grid: {space} has 125,000 points (the product of its "
                                       "choices), more than 100,000; use --sampler tpe or random\n")
