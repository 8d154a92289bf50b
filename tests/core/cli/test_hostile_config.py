"""Hostile configs and command lines (issue 14): every bad number or name ends in ONE ``error:`` line naming
the config key (or the file and line), exit status 2 — never a traceback, never a run that exits 0 on NaN.

The cases run the real CLI in-process (``recplug.core.cli.main``) on a tiny MMRec folder; the property test
introspects the constructor of every built-in component and of RecModule, RecDataModule, RankingEvaluation and
TopKWriter, and feeds hostile values to each numeric and list argument through that CLI."""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import math
import os
import re
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recplug.core.cli.boundary import DEBUG_HINT, report_errors
from recplug.core.cli.main import main
from recplug.core.errors import ConfigError, PluginError

ROOT = Path(__file__).resolve().parents[3]

BUNDLE = """\
seed_everything: 0
trainer:
  max_epochs: 1
  limit_train_batches: 1
  limit_val_batches: 1
  limit_test_batches: 1
  limit_predict_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: pytorch_lightning.loggers.CSVLogger
    init_args: {save_dir: logs, name: run}
  callbacks:
    - class_path: pytorch_lightning.callbacks.EarlyStopping
      init_args: {monitor: val/recall@20, mode: max, patience: 20}
model:
  embedding_dim: 8
  fusion: ConcatFusion
  encoders:
    - {class_path: UserItemGraph, init_args: {name: behavior, num_layers: 1}}
    - {class_path: ItemItemGraph, init_args: {name: semantic, k: 5}}
  aux_losses:
    - {class_path: InfoNCELoss, init_args: {view_a: behavior, view_b: semantic}}
    - L2Regularization
data:
  batch_size: 64
"""
"""A CRANE-like bundle small enough for a one-batch fit: every slot (fusion, encoders, aux losses) is filled."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset (200 users, 150 items, image and text features) as an MMRec folder."""
    from recplug.core.data.formats.mmrec import write_mmrec
    from recplug.testing import make_tiny_data

    return write_mmrec(make_tiny_data(), tmp_path_factory.mktemp("data") / "tiny")


def run(*argv: str) -> tuple[int, list[str]]:
    """``recplug <argv>`` in-process: ``(exit status, stderr lines)``. An exception escaping ``main`` (a
    traceback for the user) fails the calling test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().splitlines()


def bundle_args(tiny: Path, folder: Path, command: str = "fit") -> list[str]:
    """``recplug <command>`` on :data:`BUNDLE` and the tiny data, writing everything under ``folder``."""
    config = folder / "bundle.yaml"
    config.write_text(BUNDLE.replace("save_dir: logs", f"save_dir: {folder / 'logs'}"))
    return [command, "--config", str(config), "--data.path", str(tiny), "--trainer.default_root_dir", str(folder)]


def one_error(code: int, err: list[str]) -> str:
    """The single ``error:`` line of a run that must have failed cleanly."""
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, (code, err[-5:])
    assert not any("Traceback" in line for line in err)
    return errors[0]


# ------------------------------------------------------------------------------------------ the cases of issue 14
CASES = {
    "embedding-dim-0": (["--model.embedding_dim=0"], "model.embedding_dim must be in [1, 65536], got 0"),
    "embedding-dim-negative": (["--model.embedding_dim=-1"], "model.embedding_dim must be in [1, 65536], got -1"),
    "empty-data-path": (["--data.path="], "data.path is empty; give a dataset folder, a raw log, a registered name or "
                                           "'default'"),
    "embedding-dim-huge": (["--model.embedding_dim=1000000000000"],
                           "model.embedding_dim must be in [1, 65536], got 1000000000000"),
    "lr-negative": (["--model.lr=-1"], "model.lr must be > 0, got -1.0"),
    "seed-negative": (["--seed_everything=-1"], "seed_everything must be true, false or in [0, 4294967295], got -1"),
    "abbreviated-option": (["--seed_ev=3"], "unrecognized arguments: --seed_ev=3"),  # would pass ablate's checks
    "lr-nan": (["--model.lr=.nan"], "model.lr must be > 0, got nan"),
    "max-epochs-negative": (["--trainer.max_epochs=-5"],
                            "trainer.max_epochs must be a non-negative integer or -1. You passed in -5."),
    "k-zero": (["--eval.ks=[0,20]"], "eval.ks: every k must be an integer >= 1, got [0, 20]"),
    "k-beyond-early-stopping": (
        ["--eval.ks=[100000]", "--checkpoint.monitor=val/recall@100000"],
        "trainer.callbacks[0].init_args.monitor is 'val/recall@20', which the evaluator never logs "
        "(eval.ks=[100000], eval.metrics=['recall', 'ndcg', 'precision', 'hit', 'mrr', 'map']); change one of them"),
    "k-beyond-the-catalogue": (
        ["--eval.ks=[100000]", "--checkpoint.monitor=val/recall@100000", "--trainer.callbacks=[]"],
        "eval.ks must be in [1, 150] (the number of items), got 100000"),
    "hnsw-degree-1": (["--eval.search={class_path: FaissHNSWSearch, init_args: {M: 1}}"],  # faiss segfaulted
                      "eval.search.init_args.M must be in [2, 100000], got 1 (FaissHNSWSearch)"),
    "ivf-probes-0": (["--eval.search={class_path: FaissIVFSearch, init_args: {nprobe: 0}}"],
                     "eval.search.init_args.nprobe must be in [1, 100000], got 0 (FaissIVFSearch)"),
    "exact-chunk-0": (["--eval.search={class_path: TorchExactSearch, init_args: {chunk_size: 0}}"],
                      "eval.search.init_args.chunk_size must be >= 1, got 0 (TorchExactSearch)"),
    "group-config-missing": (["--eval=/no/such/eval.yaml"], "eval: Unable to load config '/no/such/eval.yaml'"),
    "unknown-metric": (["--eval.metrics=[recall,auc]"],
                       "eval.metrics: unknown metric(s) ['auc']; choose from recall, ndcg, precision, hit, mrr, map"),
    "nested-type": (["--model.encoders=[IdEmbedding, {class_path: UserItemGraph, init_args: {num_layers: x}}]"],
                    "model.encoders[1].init_args.num_layers: expected int, got 'x'"),
    "nested-unknown-argument": (["--model.encoders=[IdEmbedding, {class_path: UserItemGraph, init_args: {layers: 2}}]"],
                                "model.encoders[1].init_args: UserItemGraph has no argument 'layers'"),
    "nested-range": (
        ["--model.encoders=[IdEmbedding, {class_path: UserItemGraph, init_args: {num_layers: -1}}]"],
        "model.encoders[1].init_args.num_layers must be in [0, 100], got -1 (UserItemGraph)"),
    "nested-range-at-setup": (
        ["--model.encoders=[{class_path: UserItemGraph, init_args: {name: behavior}}, "
         "{class_path: ItemItemGraph, init_args: {name: semantic, k: 1000}}]"],
        "model.encoders[1].init_args.k must be in [1, 150] (the number of items), got 1000 (ItemItemGraph)"),
    "nested-dict-value": (["--model.fusion={class_path: SumFusion, init_args: {weights: {image: .nan, text: 0.5}}}"],
                          "model.fusion.init_args.weights.image must be >= 0, got nan (SumFusion)"),
    "class-of-no-module": (["--model.fusion=nosuch.module.Fusion"],
                           "model.fusion: class_path 'nosuch.module.Fusion': no module named 'nosuch'"),
    "logger-of-no-module": (["--trainer.logger={class_path: nosuch.Logger}"],
                            "trainer.logger: class_path 'nosuch.Logger': no module named 'nosuch'"),
    "accelerator-absent": (["--trainer.accelerator=gpu"], "trainer: No supported gpu backend found!"),
    "no-devices": (["--trainer.devices=0"], "trainer.devices='0' value is not a valid input using cpu accelerator."),
    "validation-every-0-epochs": (["--trainer.check_val_every_n_epoch=0"],
                                  "trainer.check_val_every_n_epoch must be >= 1, got 0"),
    "negative-patience": (["--trainer.callbacks=[{class_path: pytorch_lightning.callbacks.EarlyStopping, init_args: "
                           "{monitor: val/recall@20, mode: max, patience: -3}}]"],
                          "trainer.callbacks[0].init_args.patience must be >= 0, got -3"),
    "unknown-mode": (["--trainer.callbacks=[{class_path: pytorch_lightning.callbacks.EarlyStopping, init_args: "
                      "{monitor: val/recall@20, mode: sideways}}]"],
                     "trainer.callbacks[0].init_args.mode must be 'min' or 'max', got 'sideways'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_setting_ends_in_one_line_naming_its_key(case: str, tiny: Path, tmp_path: Path) -> None:
    extra, expected = CASES[case]
    assert one_error(*run(*bundle_args(tiny, tmp_path), *extra)) == f"error: {expected}"


PREDICT_CASES = {
    "k-zero": (["--topk.k=0"], "topk.k must be >= 1, got 0"),
    "k-beyond-the-catalogue": (["--topk.k=151"], "topk.k must be in [1, 150] (the number of items), got 151"),
    "exclude-typo": (["--topk.exclude=[tarin]"],
                     "topk.exclude: unknown split(s) ['tarin']; choose from train, valid, test"),
    "exclude-twice": (["--topk.exclude=[test,test]"], "topk.exclude: 'test' is given twice"),
    "output-in-proc": (["--topk.output_path=/proc/recplug/top.tsv"],  # found once every user was ranked
                       "topk.output_path /proc/recplug/top.tsv: cannot be created in /proc (No such file or "
                       "directory)"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_a_bad_predict_setting_ends_in_one_line(case: str, tiny: Path, tmp_path: Path) -> None:
    extra, expected = PREDICT_CASES[case]
    assert one_error(*run(*bundle_args(tiny, tmp_path, "predict"), *extra)) == f"error: {expected}"


def test_a_class_whose_optional_package_is_missing_is_one_line(tiny: Path, tmp_path: Path) -> None:
    """A logger whose package is not installed gave a 1,000-character jsonargparse dump that named no package."""
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    line = one_error(*run(*bundle_args(tiny, tmp_path), "--trainer.logger",
                          "{class_path: pytorch_lightning.loggers.WandbLogger}"))
    assert re.fullmatch(r"error: class_path 'pytorch_lightning.loggers.WandbLogger' needs 'wandb[^']*', which is not "
                        r"installed \(pip install 'wandb[^']*'\)", line), line


def test_predict_into_a_folder_is_refused(tiny: Path, tmp_path: Path) -> None:
    line = one_error(*run(*bundle_args(tiny, tmp_path, "predict"), f"--topk.output_path={tmp_path}"))
    assert line == f"error: topk.output_path: {tmp_path} is a folder; give the file to write, e.g. " \
                   f"{tmp_path / 'predictions.tsv'}"


@pytest.mark.parametrize("key", ["trainer.default_root_dir", "trainer.logger.init_args.save_dir",
                                 "checkpoint.dirpath"])
def test_a_run_folder_behind_a_symlink_loop_is_one_line_naming_its_key(key: str, tiny: Path, tmp_path: Path) -> None:
    """It ended in an OS error with the debug hint at the first write, naming no option."""
    (tmp_path / "loop").symlink_to("loop")
    line = one_error(*run(*bundle_args(tiny, tmp_path), f"--{key}={tmp_path / 'loop' / 'run'}"))
    assert line.startswith(f"error: {key} {tmp_path / 'loop' / 'run'}: cannot be created: {tmp_path / 'loop'} is a "
                           "symbolic link to loop, which leads nowhere")


def test_a_huge_learning_rate_stops_training_naming_the_step_term_and_knobs(tiny: Path, tmp_path: Path) -> None:
    code, err = run(*bundle_args(tiny, tmp_path), "--model.lr=1e30", "--trainer.limit_train_batches=3",
                    "--model.aux_losses=[]")
    assert one_error(code, err) == (
        "error: training diverged at epoch 0, batch 1 (step 1): train/bpr is nan; lower model.lr (1e+30) or "
        "model.bpr_weight"
    )


def test_a_diverged_aux_term_names_the_aux_loss_weight(tiny: Path, tmp_path: Path) -> None:
    code, err = run(*bundle_args(tiny, tmp_path), "--model.lr=1e30", "--trainer.limit_train_batches=3",
                    "--model.bpr_weight=0", "--model.aux_losses=[L2Regularization]")
    assert one_error(code, err) == (
        "error: training diverged at epoch 0, batch 1 (step 1): train/l2 is inf; lower model.lr (1e+30) or "
        "model.aux_losses[0].init_args.weight"
    )


def test_weights_that_overflow_in_one_step_never_reach_the_metrics(tiny: Path, tmp_path: Path) -> None:
    """One optimiser step at lr 1e30 leaves finite weights (~1e30) whose scores overflow: no metric is logged."""
    code, err = run(*bundle_args(tiny, tmp_path), "--model.lr=1e30")
    assert one_error(code, err).startswith("error: the model's scores are not finite")
    assert not list(tmp_path.rglob("metrics.csv")) or not any(
        row.get("val/recall@20") for row in csv.DictReader(open(next(tmp_path.rglob("metrics.csv"))))
    )


def test_the_divergence_guard_checks_the_weights_after_the_step(tiny_data) -> None:
    """A finite loss whose step makes a weight NaN (a bad optimiser) is caught after the step."""
    from recplug.core.model.module import RecModule

    model = RecModule(tiny_data.num_users, tiny_data.num_items, embedding_dim=4)
    with torch.no_grad():
        model.item_embedding.weight[3, 1] = float("nan")
    with pytest.raises(ConfigError, match=r"^training diverged at epoch 0, batch 7 \(step 0\): parameter "
                                          r"item_embedding.weight is not finite after the optimiser step; "
                                          r"lower model.lr \(0.001\)$"):
        model.on_train_batch_end(None, None, 7)


# ------------------------------------------------------------------------------------------ config files
YAML_ERRORS = {
    "unclosed-list": ("model:\n  embedding_dim: 8\n  lr: [0.1\ndata:\n  path: x\n",
                      ", line 4, column 5: did not find expected ',' or ']' (while parsing a flow sequence at line 3)"),
    "bad-indent": ("model:\n  embedding_dim: 8\n    lr: 3\n",
                   ", line 3, column 7: mapping values are not allowed in this context"),
    "tab": ("model:\n\tembedding_dim: 8\n",
            ", line 2, column 1: found character that cannot start any token (while scanning for the next token "
            "at line 2)"),
    "list-at-top": ("- 1\n- 2\n", ": expected a mapping of config keys (model:, data:, trainer:, ...)"),
    "section-not-a-mapping": ("model: 5\n", ": model must be a mapping of model options, got 5"),
    "null-section": ("data: null\n", ": data must be a mapping of data options, got None"),
    "key-not-a-name": ("~: 8\n", ": top-level key None is not a name (a config key is text, like model:)"),
    "key-twice": ("model:\n  embedding_dim: 8\nmodel:\n  lr: 0.1\n",
                  ", line 3, column 1: key 'model' appears twice in one mapping"),
    "alias-bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")),
                   ": more than 100,000 values (an alias, *name, counted at each use); a config file this large is a "
                   "mistake or an alias bomb"),  # 9^9 values: jsonargparse took minutes to expand them
    "components-as-a-string": ("model:\n  encoders: IdEmbedding\n",
                               ": model.encoders must be a list of components (- class_path: IdEmbedding), got the "
                               "string 'IdEmbedding'"),
}
"""Config file text -> what the error says after the file's name."""


@pytest.mark.parametrize("case", list(YAML_ERRORS))
def test_a_broken_config_file_is_named_with_its_line(case: str, tmp_path: Path) -> None:
    text, expected = YAML_ERRORS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert one_error(*run("fit", "--config", str(config))) == f"error: {config}{expected}"


BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
               for previous, name in zip("abcdefgh", "bcdefghi"))
"""Eight levels of nine aliases over ``a`` (9^9 values once expanded), for ``a: &a [x, ...]`` to start."""


@pytest.mark.parametrize("where", ["group-file", "command-line"])
def test_an_alias_bomb_given_to_one_group_or_on_the_command_line_is_refused(where: str, tiny: Path,
                                                                          tmp_path: Path) -> None:
    """jsonargparse reads these itself (not through read_yaml): a group file's bomb grew to 9 GB of memory."""
    if where == "group-file":
        bomb = tmp_path / "model.yaml"
        bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB)
        extra, expected = ["--model", str(bomb)], f"error: model: Unable to load config '{bomb}' (more than 100,000"
    else:
        levels = ["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{name} [{', '.join([f'*{previous}'] * 9)}]"
                                                      for previous, name in zip("abcdef", "bcdefg")]
        extra, expected = [f"--model.encoders=[{', '.join(levels)}]"], "error: model.encoders"
    assert one_error(*run(*bundle_args(tiny, tmp_path), *extra)).startswith(expected)


def test_a_config_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    config = tmp_path / "binary.yaml"
    config.write_bytes(b"model:\x00\xff")
    assert one_error(*run("fit", "--config", str(config))) == (
        f"error: {config}: byte 0xff at offset 7 is not UTF-8; a config file is YAML text"
    )


EMPTY_MAPPINGS = {
    "top-level": ("bogus: {}\n", "bogus"),
    "in-a-section": ("trainer:\n  bogus: {}\n", "trainer.bogus"),
    "in-a-component": ("model:\n  fusion:\n    class_path: ConcatFusion\n    init_args:\n      bogus: {}\n",
                       "model.fusion.init_args.bogus"),
    "nested-empty": ("model:\n  bogus: {a: {b: {}}}\n", "model.bogus"),
    "in-a-callback": ("trainer:\n  callbacks:\n    - class_path: pytorch_lightning.callbacks.EarlyStopping\n"
                      "      init_args: {monitor: val/recall@20, mode: max, bogus: {y: {}}}\n",
                      "trainer.callbacks[0].init_args.bogus"),
    "in-a-list-item": ("model:\n  encoders:\n    - {class_path: UserItemGraph, init_args: {name: behavior, x: {}}}\n",
                       "model.encoders[0].init_args.x"),
}
"""A second config file whose unknown key holds ``{}`` -> the key the error names."""


@pytest.mark.parametrize("case", list(EMPTY_MAPPINGS))
def test_an_unknown_key_holding_an_empty_mapping_is_refused(case: str, tiny: Path, tmp_path: Path) -> None:
    """jsonargparse drops ``bogus: {}`` without a word where it refuses ``bogus: 1``; recplug refuses both."""
    text, key = EMPTY_MAPPINGS[case]
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    assert one_error(*run(*bundle_args(tiny, tmp_path), "--config", str(extra))) == (
        f"error: {extra}: unknown key {key} (holding only empty mappings, it would have been ignored)")


GIVEN_EMPTY_MAPPINGS = {
    "section-value": (["--trainer", "{bogus: {}}"], "--trainer {bogus: {}}", "trainer.bogus"),
    "section-value-with-equals": (["--model={lr: 0.01, bogus: {a: {}}}"], "--model {lr: 0.01, bogus: {a: {}}}",
                                  "model.bogus"),
    "list-value": (["--model.encoders", "[{class_path: IdEmbedding, init_args: {x: {}}}]"],
                   "--model.encoders [{class_path: IdEmbedding, init_args: {x: {}}}]", "model.encoders[0].init_args.x"),
    "value-longer-than-a-path": (["--model", "{bogus: {}," + " " * 300 + "lr: 0.01}"],
                                 "--model {bogus: {}," + " " * 300 + "lr: 0.01}", "model.bogus"),
}
"""Command-line options whose value holds an unknown key with ``{}`` -> (the option and value named, the key)."""


@pytest.mark.parametrize("case", list(GIVEN_EMPTY_MAPPINGS))
def test_an_unknown_empty_mapping_given_on_the_command_line_is_refused(case: str, tiny: Path, tmp_path: Path) -> None:
    options, named, key = GIVEN_EMPTY_MAPPINGS[case]
    assert one_error(*run(*bundle_args(tiny, tmp_path), *options)) == (
        f"error: {named}: unknown key {key} (holding only empty mappings, it would have been ignored)")


@pytest.mark.parametrize("options", [["--model", "{}"], ["--data={}"], ["--model.encoders", "[{}]"],
                                     ["--trainer.callbacks", "[{}]"], ["--trainer.callbacks+={}"]],
                         ids=["model", "data", "encoders", "callbacks", "appended-callback"])
def test_an_empty_mapping_given_on_the_command_line_is_refused(options: list[str], tiny: Path, tmp_path: Path) -> None:
    """``--model.encoders '[{}]'`` was merged into mf.yaml's encoder and changed nothing, without a word."""
    shown = " ".join(options[0].split("=", 1)) if len(options) == 1 else " ".join(options)
    mf = ["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--data.path", str(tiny),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger=false"]
    assert one_error(*run(*mf, *options)) == (
        f"error: {shown}: sets nothing (an empty mapping, merged into the value); give the settings to change, or "
        "leave the option out")


def test_an_unknown_empty_mapping_in_a_file_given_to_a_group_is_refused(tiny: Path, tmp_path: Path) -> None:
    group = tmp_path / "model.yaml"
    group.write_text("lr: 0.01\nbogus: {}\n")
    assert one_error(*run(*bundle_args(tiny, tmp_path), "--model", str(group))) == (
        f"error: --model {group}: unknown key model.bogus (holding only empty mappings, it would have been ignored)")
    group.write_text("lr: 0.01\n")
    assert run(*bundle_args(tiny, tmp_path), "--model", str(group))[0] == 0


def test_a_known_key_holding_an_empty_mapping_is_taken(tiny: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  fusion:\n    class_path: SumFusion\n    init_args: {}\n")
    assert run(*bundle_args(tiny, tmp_path), "--config", str(extra))[0] == 0


# ------------------------------------------------------------------------------------------ the error boundary
def test_a_library_error_is_one_line_naming_where_it_was_raised(capsys) -> None:
    from lightning_fabric.utilities.seed import seed_everything

    assert report_errors(lambda: seed_everything(-1)) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: -1 is not in bounds, numpy accepts from 0 to 4294967295 (ValueError in lightning_fabric.utilities.seed)",
        DEBUG_HINT,
    ]


def test_recplug_debug_re_raises_with_the_traceback(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    from jsonargparse import ArgumentError

    from lightning_fabric.utilities.seed import seed_everything

    monkeypatch.setenv("RECPLUG_DEBUG", "1")
    with pytest.raises(ValueError, match="is not in bounds"):
        report_errors(lambda: seed_everything(-1))
    with pytest.raises(ConfigError, match=r"model.embedding_dim must be in \[1, 65536\]"):
        main(bundle_args(tiny, tmp_path) + ["--model.embedding_dim=0"])
    with pytest.raises(ArgumentError, match="data.batch_size"):
        main(bundle_args(tiny, tmp_path) + ["--data.batch_size=x"])


def test_a_bug_keeps_its_traceback() -> None:
    def buggy() -> int:
        return {}["missing"]

    with pytest.raises(KeyError):
        report_errors(buggy)
    with pytest.raises(NotImplementedError):  # a RuntimeError subclass that means unfinished code, not a setting
        report_errors(lambda: (_ for _ in ()).throw(NotImplementedError("todo")))


# ------------------------------------------------------------------------------------------ plugins
class ExitingEntryPoint:
    """An entry point whose module calls ``sys.exit(3)`` when imported."""

    name, value, group = "exits", "recplug_exits_at_import", "recplug"

    def load(self) -> Any:
        sys.exit(3)


class ExitingDist:
    metadata = {"Name": "recplug-exits"}
    version = "0.1.0"
    entry_points = [ExitingEntryPoint()]


@pytest.fixture
def exiting_plugin(monkeypatch) -> Any:
    import importlib.metadata

    from recplug.core.model.plugins import load_plugins

    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [ExitingDist()])
    for name in ("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", "RECPLUG_LOAD_PLUGINS", "RECPLUG_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    yield load_plugins
    monkeypatch.undo()
    load_plugins(reload=True)  # leave the real registry behind for other tests


def test_a_plugin_that_exits_at_import_is_reported_and_skipped(exiting_plugin, capsys) -> None:
    with pytest.warns(UserWarning, match=r"plugin 'exits' from distribution recplug-exits 0.1.0 failed to load: "
                                         r"SystemExit: it called sys.exit\(3\) at import \(skipped"):
        loaded = exiting_plugin(reload=True)
    assert loaded["exits"].status == "skipped"
    assert main(["plugins", "--all"]) == 0  # every command still runs
    listed = capsys.readouterr().out
    assert "exits  (recplug-exits 0.1.0)  [skipped: SystemExit: it called sys.exit(3) at import]" in listed


def test_strict_plugins_turn_an_exiting_plugin_into_an_error(exiting_plugin, monkeypatch) -> None:
    from recplug.core.model import plugins

    with pytest.raises(PluginError, match=r"recplug-exits 0.1.0 failed to load: SystemExit"):
        exiting_plugin(strict=True, reload=True)
    monkeypatch.setattr(plugins, "_LOADED", None)  # the next command loads the plugins again, under the env switch
    monkeypatch.setenv("RECPLUG_STRICT_PLUGINS", "1")
    assert one_error(*run("plugins")) == (
        "error: recplug: plugin 'exits' from distribution recplug-exits 0.1.0 failed to load: "
        "SystemExit: it called sys.exit(3) at import"
    )


# ------------------------------------------------------------------------------------------ property test
def configurable_classes() -> dict[str, type]:
    """``{config slot: class}``: the four classes the CLI places at a fixed key, and every built-in component."""
    from recplug.core.model.components import RecComponent
    from recplug.core.data.datamodule import RecDataModule
    from recplug.core.eval.evaluator import RankingEvaluation, TopKWriter
    from recplug.core.model.module import RecModule
    from recplug.core.model.plugins import BUILTIN_PLUGINS, load_plugins

    load_plugins()
    found: dict[str, type] = {"model": RecModule, "data": RecDataModule, "eval": RankingEvaluation, "topk": TopKWriter}
    for module in BUILTIN_PLUGINS:
        for cls in vars(sys.modules[module]).values():
            if (inspect.isclass(cls) and issubclass(cls, RecComponent) and cls.__module__ == module
                    and not inspect.isabstract(cls)):
                found[cls.__name__] = cls
    return found


LINKED = {"num_users", "num_items", "feature_dims"}  # filled from the data, not by users
HOSTILE = {
    int: ["0", "-1", "-2147483649", "10000000000000", "1.5", "x", "null", ".nan"],
    float: ["0", "-1", "1e30", "-1e-30", ".nan", ".inf", "-.inf", "x", "null"],
    list: ["[]", "[0]", "[-3, 20]", "[10000000000000]", "[x]", "[[]]", "5"],
    dict: ["{}", "{image: .nan}", "{image: -1, text: 2}", "{nope: 1}", "[1]"],
}
"""Hostile YAML values by the argument's type: zeros, negatives, huge, NaN/inf, empty lists, wrong types."""


def hostile_kind(hint: Any) -> type | None:
    """``int``, ``float``, ``list`` (of numbers or names) or ``dict`` (of numbers) for an argument users give such
    values to, optional or not; ``None`` for the others (bool, str, Literal, components, file names)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(options) != 1:
            return None
        hint = options[0]
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin is list:
        return list if args and args[0] in (int, float, str) else None
    if origin is dict:
        return dict if args and args[1] is float else None
    return origin if origin in (int, float) else None


def hostile_arguments() -> list[tuple[str, str, type]]:
    """``(slot, argument, kind)`` of every numeric, list or dict-of-number argument of :func:`configurable_classes`."""
    found = []
    for slot, cls in configurable_classes().items():
        hints = typing.get_type_hints(cls.__init__)
        for name in inspect.signature(cls.__init__).parameters:
            kind = hostile_kind(hints[name]) if name in hints and name not in LINKED else None
            if kind is not None:
                found.append((slot, name, kind))
    return found


ARGUMENTS = hostile_arguments()


def test_the_property_test_reaches_every_numeric_argument() -> None:
    """A guard on the introspection: these must all be among the arguments fed hostile values."""
    names = {f"{slot}.{name}" for slot, name, _ in ARGUMENTS}
    assert {"model.embedding_dim", "model.lr", "data.batch_size", "data.valid_ratio", "eval.ks", "eval.metrics",
            "topk.k", "topk.exclude", "UserItemGraph.num_layers", "UserItemGraph.edge_drop", "ItemItemGraph.k",
            "ItemItemGraph.weights", "RCAFusion.joint_dim", "InfoNCELoss.temperature", "UltraGCNLoss.w3",
            "ConcatFusion.dropout", "SumFusion.weights", "NGCFGraph.message_dropout"} <= names


def component_args(slot: str, argument: str, raw: str) -> list[str]:
    """CLI arguments placing the component ``slot`` (a class name) with ``argument: raw`` into :data:`BUNDLE`."""
    cls = configurable_classes()[slot]
    entry = f"{{class_path: {slot}, init_args: {{{argument}: {raw}}}}}"
    from recplug.core.model.components import AuxLoss, FusionModule, GraphEncoder

    if issubclass(cls, FusionModule):
        return [f"--model.fusion={entry}"]
    if issubclass(cls, GraphEncoder):
        behavior = "{class_path: UserItemGraph, init_args: {name: behavior, num_layers: 1}}"
        semantic = "{class_path: ItemItemGraph, init_args: {name: semantic, k: 5}}"
        if slot == "NGCFGraph":  # its view concatenates the layers: alone, without InfoNCE against a narrower view
            return [f"--model.encoders=[{entry}]", "--model.aux_losses=[L2Regularization]"]
        if slot == "UserItemGraph":
            entry = entry.replace("init_args: {", "init_args: {name: behavior, ")
            return [f"--model.encoders=[{entry}, {semantic}]"]
        if slot == "ItemItemGraph":
            return [f"--model.encoders=[{behavior}, {entry.replace('init_args: {', 'init_args: {name: semantic, ')}]"]
        return [f"--model.encoders=[{behavior}, {semantic}, {entry}]"]
    if issubclass(cls, AuxLoss):  # beside InfoNCE, or instead of it (two would log the same term)
        infonce = "{class_path: InfoNCELoss, init_args: {view_a: behavior, view_b: semantic}}"
        return [f"--model.aux_losses=[{entry}]" if slot == "InfoNCELoss" else
                f"--model.aux_losses=[{infonce}, {entry}]"]
    return [f"--model.combiner={entry}"]


def all_finite_metrics(folder: Path) -> bool:
    """Every value logged in the run's ``metrics.csv`` is a finite number."""
    rows = [row for path in folder.rglob("metrics.csv") for row in csv.DictReader(open(path))]
    values = [float(v) for row in rows for v in row.values() if v not in ("", None)]
    return bool(values) and all(math.isfinite(v) for v in values)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_train_or_end_in_one_line(tiny: Path, data: st.DataObject) -> None:
    slot, argument, kind = data.draw(st.sampled_from(ARGUMENTS), label="argument")
    raw = data.draw(st.sampled_from(HOSTILE[kind]), label="value")
    command = "predict" if slot == "topk" else "fit"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        extra = [f"--{slot}.{argument}={raw}"] if slot in ("model", "data", "eval", "topk") else \
            component_args(slot, argument, raw)
        code, err = run(*bundle_args(tiny, folder, command), f"--topk.output_path={folder / 'top.tsv'}", *extra)
        if code == 0:  # it trained (or predicted): then nothing it logged or wrote is NaN
            if command == "fit":
                assert all_finite_metrics(folder), err[-5:]
            else:
                rows = list(csv.DictReader(open(folder / "top.tsv"), delimiter="\t"))
                assert rows and all(math.isfinite(float(s)) for r in rows for s in r["scores"].split(",") if s)
        else:
            one_error(code, err)


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert one_error(*run("fit", "--config", str(fifo))) == f"error: {fifo}: not a regular file, so not a config file"


def test_an_error_line_is_capped(capsys) -> None:
    from recplug.core.cli.boundary import ERROR_LIMIT, print_error

    assert print_error("x" * (10 * ERROR_LIMIT)) == 2
    assert len(capsys.readouterr().err) < ERROR_LIMIT + 20


def test_a_scheduler_without_an_optimizer_section_schedules_the_models_own(tiny: Path, tmp_path: Path) -> None:
    """Lightning ignored ``--lr_scheduler`` without ``--optimizer``; sampled mode's docs say to drop the latter."""
    code, err = run(*bundle_args(tiny, tmp_path), "--trainer.max_epochs=3", "--trainer.callbacks+=LearningRateMonitor",
                    "--trainer.callbacks.logging_interval=epoch", "--lr_scheduler=torch.optim.lr_scheduler.StepLR",
                    "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.1", "--model.lr=0.01")
    assert code == 0, err[-5:]
    with open(next((tmp_path / "logs").rglob("metrics.csv"))) as handle:
        rates = [float(row["lr-Adam"]) for row in csv.DictReader(handle) if row.get("lr-Adam")]
    assert rates == pytest.approx([0.01, 0.001, 0.0001])


def test_a_scheduler_that_makes_the_learning_rate_negative_stops_the_run(tiny: Path, tmp_path: Path) -> None:
    """StepLR with gamma -5 trained at lr -0.05, then 0.25, and exited 0."""
    line = one_error(*run(*bundle_args(tiny, tmp_path), "--trainer.max_epochs=3", "--model.lr=0.01",
                          "--lr_scheduler=torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size=1",
                          "--lr_scheduler.gamma=-5"))
    assert line == ("error: the learning rate is -0.05 at epoch 1, batch 0; it must be a finite number >= 0: check the "
                    "optimiser's lr and the lr_scheduler section (e.g. its gamma)")
