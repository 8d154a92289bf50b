"""The `recplug` command: fit end to end, plugin swaps, plugin listing, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from recplug.core.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit(config: str, tmp_path: Path, *extra: str) -> int:
    return main(["fit", "--config", str(ROOT / "configs" / config), "--trainer.default_root_dir", str(tmp_path),
                 *QUIET, *extra])


def test_mf_fast_dev_run(tmp_path) -> None:
    assert fit("mf.yaml", tmp_path, "--trainer.fast_dev_run=true", "--trainer.logger=false") == 0


def test_crane_rca_with_its_fusion_swapped_on_the_command_line(tmp_path) -> None:
    from recplug.core.cli.main import run_cli

    args = ["--config", str(ROOT / "configs" / "crane_rca.yaml"), "--model.fusion", "ConcatFusion",
            "--trainer.fast_dev_run=true", "--trainer.logger=false", *QUIET]
    cli = run_cli(args, run=False)
    assert type(cli.model.fusion).__name__ == "ConcatFusion"
    assert cli.model.pm.providers("recplug_fuse") == ["model.fusion"]
    assert fit("crane_rca.yaml", tmp_path, "--model.fusion", "ConcatFusion", "--trainer.fast_dev_run=true",
               "--trainer.logger=false") == 0


def test_fit_writes_checkpoint_and_metrics_log_then_tests_the_best_checkpoint(tmp_path) -> None:
    logger = json.dumps({"class_path": "pytorch_lightning.loggers.CSVLogger",
                         "init_args": {"save_dir": str(tmp_path), "name": "mf"}})
    assert fit("mf.yaml", tmp_path, "--trainer.max_epochs=2", "--trainer.limit_train_batches=3",
               f"--trainer.logger={logger}") == 0
    run = tmp_path / "mf" / "version_0"
    assert list((run / "checkpoints").glob("best-epoch=*.ckpt")) and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "config.yaml").exists()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    val = [float(r["val/recall@20"]) for r in rows if r.get("val/recall@20")]
    test = [float(r["test/recall@20"]) for r in rows if r.get("test/recall@20")]
    assert len(val) == 2 and len(test) == 1
    assert 0.0 <= test[0] <= 1.0


def test_plugins_command_lists_builtins(capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "recplug.plugins.fusion.concat  (recplug 0.1.0)" in out
    assert "components: ConcatFusion" in out and "recplug_fuse" in out
    assert main(["plugins", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} >= {"recplug.plugins.combine", "recplug.plugins.fusion.sum"}
    assert all({"distribution", "version", "hooks", "components"} <= set(r) for r in records)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.fusion", "NoSuchFusion"], "model.fusion: unknown or invalid plugin class 'NoSuchFusion'; "
                                             "choose one of: "),
        (["--model.no_such_key", "3"], "unrecognized arguments: --model.no_such_key 3"),
        (["--data.positives", "items"], "data.positives: expected one of 'interactions', 'users', got 'items'"),
        (["--data.batch_size", "abc"], "data.batch_size: expected int, got 'abc'"),
        (["--config", "/nonexistent/config.yaml"], 'Parser key "config": File does not exist: '
                                                   "'/nonexistent/config.yaml'"),
    ],
    ids=["unknown-plugin-class", "unknown-config-key", "bad-choice", "bad-type", "missing-config-file"],
)
def test_bad_config_gives_one_line_error(args, expected, capsys) -> None:
    assert main(["fit", "--config", str(ROOT / "configs" / "mf.yaml"), *args, "--trainer.fast_dev_run=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("command", ["plugins", "data", "features", "report", "ablate", "tune"])
def test_every_sub_command_reports_a_usage_error_in_one_line(command: str, capsys) -> None:
    assert main([command, "--no-such-option"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: recplug {command}: "), err


def test_an_unknown_command_lists_every_command(capsys) -> None:
    assert main(["fitt", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: unknown command 'fitt'; choose one of fit, validate, test, predict, plugins, data, features, "
                   "report, ablate, export, serve, tune, benchmark\n")
    assert main([]) == 2  # jsonargparse named its four sub-commands only
    assert capsys.readouterr().err == (
        "error: no command given; choose one of fit, validate, test, predict, plugins, data, features, report, "
        "ablate, export, serve, tune, benchmark (recplug --help describes them)\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (["export", "--ckpt_path", "x.ckpt", "--out", ""], "error: --out is empty; give a path"),
    (["predict", "--topk.output_path", ""], "error: topk.output_path is empty; give the file to write, e.g. "
                                            "predictions.tsv"),
    (["data", "convert", "log.csv", ""], "error: output folder is empty; give a path"),
    (["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.logger.init_args.save_dir", ""],
     "error: trainer.logger.init_args.save_dir is empty; give a path"),
    (["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.default_root_dir", ""],
     "error: trainer.default_root_dir is empty; give a path"),
])
def test_an_empty_output_path_is_refused_not_read_as_the_current_folder(argv, expected, capsys, tmp_path,
                                                                        monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected


def test_help_lists_each_of_recplugs_own_commands_on_its_line(capsys) -> None:
    from recplug.core.cli.commands import COMMANDS

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, command in COMMANDS.items():
        assert f"  {name:<10} {command.summary}" in lines


@pytest.mark.parametrize("argv", [["plugins", "--all"], ["data", "stats", "default"]], ids=["plugins", "data-stats"])
def test_output_into_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """`recplug data stats X | head -1`: no error line once the reader has gone, and a shell's 128 + SIGPIPE."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "recplug.core.cli.main", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # before the command writes: it imports for a second first
    err = process.stderr.read().decode()
    assert process.wait() == 141 and err == ""


@pytest.mark.parametrize(("argv", "option"), [
    (["export", "--ckpt_path", "x.ckpt", "--config", "a.yaml", "--config", "b.yaml", "--out", "e"], "--config"),
    (["benchmark", "--configs", "a.yaml", "--seeds", "0", "--seeds=1"], "--seeds"),
    (["data", "stats", "default", "--cold-items", "0.1", "--cold-items", "0.2"], "--cold-items"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_sub_commands_refuse_an_option_given_twice(argv: list[str], option: str, capsys) -> None:
    """argparse keeps the last value without a word; `recplug fit` stacks repeated --config files instead."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: given 2 times (the last would win silently)" in err, err


MF = str(ROOT / "configs" / "mf.yaml")


@pytest.mark.parametrize(
    ("argv", "abbreviated"),
    [
        (["export", "--ckpt_path", "x.ckpt", "--out", "e1", "--ind", "flat"], "--ind flat"),
        (["serve", "--ckpt_path", "x.ckpt", "--por", "80"], "--por 80"),
        (["report", "RUN", "--ou", "r1"], "--ou r1"),
        (["tune", "--config", MF, "--space", MF, "--trials", "1", "--tim", "5"], "--tim 5"),
        (["ablate", "--config", MF, "--variants", MF, "--dry"], "--dry"),
        (["benchmark", "--configs", MF, "--dry"], "--dry"),
        (["data", "stats", "default", "--for", "raw"], "--for raw"),
        (["features", "text", "--items", "x.tsv", "--id-column", "id", "--text-columns", "t", "--dataset", "d",
          "--ou", "o.npy"], "--ou o.npy"),
        (["plugins", "--js"], "--js"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_sub_commands_refuse_abbreviated_options(argv: list[str], abbreviated: str, capsys) -> None:
    """As ``recplug fit`` does: a prefix would silently mean another option once one with that prefix is added."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"unrecognized arguments: {abbreviated}" in err, err


def test_an_arithmetic_error_is_one_line_when_a_library_raises_it(capsys) -> None:
    """``StepLR(step_size=0)`` divides by zero inside torch: a setting, so one line; the same error raised in
    recplug's own code is a bug and keeps its traceback."""
    import torch

    from recplug.core.cli.boundary import DEBUG_HINT, report_errors

    def step_with_step_size_0() -> int:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=0)
        optimizer.step()
        scheduler.step()
        return 0

    assert report_errors(step_with_step_size_0) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: integer modulo by zero (ZeroDivisionError in torch.optim.lr_scheduler)", DEBUG_HINT]
    own: dict[str, object] = {"__name__": "recplug.core.model.example"}
    exec("def average(total, count):\n    return total / count\n", own)
    with pytest.raises(ZeroDivisionError):
        report_errors(lambda: own["average"](1, 0))


def test_bad_data_path_gives_one_line_error(capsys, tmp_path) -> None:
    code = fit("mf.yaml", tmp_path, "--data.path", str(tmp_path / "missing"), "--trainer.fast_dev_run=true")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {tmp_path / 'missing'}: no such dataset folder"


def test_wiring_error_names_the_config_key(capsys, tmp_path) -> None:
    code = fit("mf.yaml", tmp_path, "--model.encoders=[]", "--trainer.fast_dev_run=true")
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: no graph encoder is configured: set model.encoders (e.g. [IdEmbedding])"
    )


def test_predict_writes_top_k_for_every_user_without_seen_items(tmp_path) -> None:
    from recplug.core.data.resolve import load_dataset

    assert fit("mf.yaml", tmp_path, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
               "--trainer.logger=false") == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out = tmp_path / "top.tsv"
    assert main(["predict", "--config", str(ROOT / "configs" / "mf.yaml"), "--ckpt_path", str(ckpt),
                 "--topk.output_path", str(out), "--topk.k", "5", "--trainer.logger=false",
                 "--trainer.default_root_dir", str(tmp_path), *QUIET]) == 0
    rows = list(csv.DictReader(open(out), delimiter="\t"))
    data = load_dataset("default")
    assert [int(r["user"]) for r in rows] == list(range(data.num_users))
    indptr, seen = data.user_csr(("train", "valid"))
    for row in rows[:200]:
        user, items = int(row["user"]), [int(i) for i in row["items"].split(",")]
        assert len(items) == 5 and not set(items) & set(seen[indptr[user]:indptr[user + 1]].tolist())


def test_predict_and_test_without_a_config_use_the_one_the_checkpoint_records(tmp_path, capsys, monkeypatch) -> None:
    assert fit("lightgcn.yaml", tmp_path, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
               "--trainer.logger=false") == 0
    monkeypatch.chdir(tmp_path)  # the recorded root folder is not taken: these commands write here
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out = tmp_path / "top.tsv"
    capsys.readouterr()
    assert main(["predict", f"--ckpt_path={ckpt}", "--topk.output_path", str(out), "--topk.k", "3",
                 "--trainer.logger=false", *QUIET]) == 0
    assert (f"note: no --config: recplug predict uses the model, data (data.path default) and evaluation settings "
            f"recorded in {ckpt}; not its trainer") in capsys.readouterr().err
    assert len(open(out).readline().split("\t")) == 3
    assert main(["test", "--ckpt_path", str(ckpt), "--trainer.logger=false", *QUIET]) == 0
    assert "note: model." not in capsys.readouterr().err  # no setting differs from the checkpoint's
    # given twice, the last one is the checkpoint, for its config as for its weights (the first gave the config)
    assert main(["test", "--ckpt_path", str(tmp_path / "gone.ckpt"), "--ckpt_path", str(ckpt),
                 "--trainer.logger=false", *QUIET]) == 0
    assert main(["test", "--ckpt_path", str(ckpt), "--config", str(ROOT / "configs" / "mf.yaml"),
                 "--trainer.logger=false", *QUIET]) == 2  # a --config given is the one used
    assert "trained with model.encoders ['UserItemGraph']" in capsys.readouterr().err


def test_evaluating_without_a_checkpoint_says_the_weights_are_untrained(tmp_path, capsys) -> None:
    assert main(["validate", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.logger=false",
                 "--trainer.default_root_dir", str(tmp_path), *QUIET]) == 0
    assert "note: no --ckpt_path: recplug validate uses the model's initial weights, untrained" in (
        capsys.readouterr().err)


def test_a_recorded_config_never_chooses_where_a_command_writes(tmp_path, monkeypatch) -> None:
    """A crafted checkpoint's recorded config named the top-k file (overwritten), the log and root folders and the
    cache; without --config, predict and test write to the defaults in the current folder."""
    import torch

    assert fit("mf.yaml", tmp_path, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
               "--trainer.logger=false") == 0
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    elsewhere, precious = tmp_path / "elsewhere", tmp_path / "precious.txt"
    precious.write_text("keep me")
    elsewhere.mkdir()
    config = checkpoint["recplug"]["config"]
    config["topk"]["output_path"] = str(precious)
    config["trainer"]["default_root_dir"] = str(elsewhere / "root")
    config["trainer"]["logger"] = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(elsewhere / "logs")}}
    config["data"]["cache_dir"] = str(elsewhere / "cache")
    config["trainer"]["profiler"] = {"class_path": "pytorch_lightning.profilers.SimpleProfiler",  # fuzz round 5
                                     "init_args": {"dirpath": str(elsewhere / "profiler"), "filename": "owned"}}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["predict", "--ckpt_path", str(crafted), *QUIET]) == 0
    assert main(["test", "--ckpt_path", str(crafted), *QUIET]) == 0
    assert main(["validate", "--ckpt_path", str(crafted), *QUIET]) == 0
    assert precious.read_text() == "keep me" and not list(elsewhere.iterdir())
    assert (work / "predictions.tsv").is_file()


def test_checkpoints_carry_provenance(tmp_path) -> None:
    import torch

    from recplug.core.data.resolve import load_dataset

    assert fit("mf.yaml", tmp_path, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
               "--trainer.logger=false", "--seed_everything=4") == 0
    record = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)["recplug"]
    assert record["seed"] == 4 and record["recplug"] == "0.1.0"
    assert record["data_sha256"] == load_dataset("default").content_hash()
    assert len(record["config_sha256"]) == 64 and "recplug 0.1.0" in record["plugins"]


def test_keeping_no_best_checkpoint_is_refused(capsys, tmp_path) -> None:
    """save_top_k 0 would make the post-fit test read the last epoch, not the best-validation one."""
    assert fit("mf.yaml", tmp_path, "--checkpoint.save_top_k=0", "--trainer.fast_dev_run=true") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: checkpoint.save_top_k is 0: no best-validation checkpoint would be kept, so the test after fit would "
        "read the last epoch's weights; keep it >= 1 (or -1 for all)")


@pytest.mark.parametrize(("options", "message"), [
    (["--trainer.max_epochs=0"], "trainer.max_epochs is 0: fit would train nothing and test the initial, untrained "
                                 "weights"),
    (["--trainer.limit_train_batches=0"], "trainer.limit_train_batches is 0: fit would train nothing and test the "
                                          "initial, untrained weights"),
    (["--trainer.max_steps=0"], "trainer.max_steps is 0: fit would train nothing and test the initial, untrained "
                                "weights"),
    (["--trainer.max_time=00:00:00:00"], "trainer.max_time is 0: fit would train nothing and test the initial, "
                                         "untrained weights"),
    (["--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=5"],
     "trainer.check_val_every_n_epoch is 5 but trainer.max_epochs 1: no validation would run, so no "
     "best-validation checkpoint would be kept for the test"),
])
def test_a_fit_that_would_train_or_validate_nothing_is_refused(options, message, capsys, tmp_path) -> None:
    """It exited 0 and reported the test metrics of untrained or last-epoch weights (fuzz round 5)."""
    assert fit("mf.yaml", tmp_path, *options) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"


@pytest.mark.parametrize(("options", "message"), [
    (["--checkpoint.monitor=test/recall@20"], "checkpoint.monitor is 'test/recall@20': training never evaluates the "
                                              "test split, and choosing an epoch on it would select on test; monitor a "
                                              "val/ metric"),
    (["--trainer.limit_val_batches=0"], "trainer.limit_val_batches is 0: no validation would run, so "
                                        "checkpoint.monitor 'val/recall@20' is never logged"),
], ids=["test-monitor", "no-validation"])
def test_fit_refuses_to_choose_an_epoch_it_cannot_validate(capsys, tmp_path, options, message) -> None:
    assert fit("mf.yaml", tmp_path, *options, "--trainer.fast_dev_run=true") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"


def test_a_monitor_the_evaluator_never_logs_is_refused(capsys, tmp_path) -> None:
    code = fit("mf.yaml", tmp_path, "--eval.ks=[10]", "--trainer.fast_dev_run=true")
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: checkpoint.monitor is 'val/recall@20', which the evaluator never logs (eval.ks=[10], "
        "eval.metrics=['recall', 'ndcg', 'precision', 'hit', 'mrr', 'map']); change one of them"
    )
