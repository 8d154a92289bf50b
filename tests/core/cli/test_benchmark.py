"""recplug benchmark: the leaderboard's columns on a hand-made case, and real runs end to end."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from recplug.core.cli import ablate, benchmark
from recplug.core.cli.main import main
from recplug.core.cli.paired import PER_USER_FILE, per_user
from recplug.core.errors import DataError
from recplug.core.eval.significance import holm, paired_test
from test_ablate import without_options  # this folder is on sys.path (pytest's default import mode)

pytest.importorskip("scipy")
pytest.importorskip("statsmodels")

ROOT = Path(__file__).resolve().parents[3]
PROVENANCE = {"recplug": "0", "torch": "0", "pytorch_lightning": "0", "python": "3", "plugins": [], "data": "d",
              "config_sha256": "c" * 64, "data_sha256": "d" * 64}


def _row(tmp_path: Path, name: str, per_seed: list[list[float]], size: int = 64, reference: bool = False):
    results, directories = [], []
    for seed, values in enumerate(per_seed):
        directory = tmp_path / name / f"seed{seed}"
        directory.mkdir(parents=True)
        np.savez(directory / PER_USER_FILE, users=np.arange(len(values)), **{"recall@20": np.array(values)})
        results.append({"variant": name, "seed": seed, "monitor": "val/recall@20", "epoch": 3, "epochs_validated": 5,
                        "test": {"test/recall@20": float(np.mean(values))}, "seconds": 10.0, "epochs_trained": 5,
                        "max_epochs": 5 if name == "capped" else 100, "representation_size": size,
                        "provenance": PROVENANCE})
        directories.append(directory)
    entry = benchmark.Entry(name, f"{name}.yaml", reference=reference, mf=name.startswith("mf"))
    return benchmark.Row(entry, results, directories, 0)


def test_leaderboard_columns_by_hand(tmp_path):
    crane = _row(tmp_path, "crane", [[0.5, 0.4, 0.3, 0.3], [0.5, 0.4, 0.1, 0.1]])        # mean 0.325
    freedom = _row(tmp_path, "freedom", [[0.4, 0.3, 0.2, 0.1], [0.4, 0.1, 0.2, 0.1]])    # mean 0.225
    mf = _row(tmp_path, "mf", [[0.1, 0.1, 0.2, 0.0], [0.1, 0.1, 0.0, 0.2]])              # mean 0.1
    wide = _row(tmp_path, "capped", [[0.3, 0.3, 0.3, 0.3]], size=128)                    # mean 0.3, X = 128
    mf128 = _row(tmp_path, "mf-128", [[0.2, 0.2, 0.2, 0.2]], size=128, reference=True)    # mean 0.2
    records, table = benchmark.leaderboard([crane, freedom, mf, wide, mf128], "crane", ["test/recall@20"], "toy")
    by_model = {r["model"]: r for r in records}
    # the best baseline is "capped" (0.3; the reference row is not a baseline): crane +8.3%, freedom -25%
    assert by_model["crane"]["gain_over_best_baseline_%"] == pytest.approx((0.325 / 0.3 - 1) * 100)
    assert by_model["freedom"]["gain_over_best_baseline_%"] == pytest.approx(-25.0)
    # GRMF-X: over the MF of the same X: crane 0.325 / 0.1, capped 0.3 / 0.2
    assert by_model["crane"]["grmfx"] == pytest.approx(3.25)
    assert by_model["capped"]["grmfx"] == pytest.approx(1.5)
    assert by_model["mf"]["grmfx"] == pytest.approx(1.0)
    # paired tests on each user's mean over the seeds both rows finished, Holm over the four comparisons:
    # crane's two seeds against freedom's and mf's, crane's seed 0 alone against the one-seed rows
    both_seeds, seed0 = [0.5, 0.4, 0.2, 0.2], [0.5, 0.4, 0.3, 0.3]
    others = {"freedom": (both_seeds, [0.4, 0.2, 0.2, 0.1]), "mf": (both_seeds, [0.1, 0.1, 0.1, 0.1]),
              "capped": (seed0, [0.3] * 4), "mf-128": (seed0, [0.2] * 4)}
    raw = [paired_test(ours, theirs).wilcoxon_p for ours, theirs in others.values()]
    for name, expected in zip(others, holm(raw)):
        assert by_model[name]["wilcoxon_p_holm"] == pytest.approx(expected, nan_ok=True)
        assert by_model[name]["paired_users"] == 4
    assert math.isnan(by_model["crane"]["wilcoxon_p_holm"])
    assert by_model["capped"]["stopped_at_cap"] and not by_model["crane"]["stopped_at_cap"]
    wide.results[0]["stopped_early"] = True  # early stopping ended it at the cap's last epoch: not capped
    assert not wide.capped()
    assert "| **crane** | 2 |" in table and "(cap)" in table and "mf-128 (GRMF-X reference)" in table


def test_bad_arguments_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["benchmark", "--configs", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err
    assert main(["benchmark", "--configs", "configs/mf.yaml", "--proposed", "crane"]) == 2
    assert "--proposed 'crane' is none of the --configs rows ['mf']" in capsys.readouterr().err
    assert main(["benchmark", "--configs", "configs/mf.yaml", "--trials", "2", "--spaces", str(tmp_path),
                 "--out", str(tmp_path / "b")]) == 2
    assert f"{tmp_path / 'mf.yaml'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "message"), [
    (["--metrics", "test/nosuch"], r"--metrics \['test/nosuch'\]: no run logs them; choose from \['test/hit@10'"),
    (["--metrics", "val/recall@20"], r"--metrics \['val/recall@20'\]: the leaderboard ranks test metrics"),
    (["--configs", "configs/mf.yaml", "configs/mf.yaml"], r"--configs: configs/mf.yaml is given twice"),
    (["--datasets", "default", "default"], r"--datasets: default is given twice"),
    (["--datasets", "nosuchdata"], r"configs/mf.yaml on --datasets nosuchdata: nosuchdata: no such dataset"),
    (["--datasets", ""], r"--datasets: an empty name"),
    (["--datasets", "configs", str(ROOT / "configs")], r"--datasets: configs and .*configs would share the "
                                                       r"leaderboard folder"),
    (["--max-epochs", "0"], r"argument --max-epochs: must be >= 1, got 0"),
    (["--max-epochs", "-3"], r"argument --max-epochs: must be >= 1, got -3"),
    (["--seeds", "-1"], r"argument --seeds: must be in \[0, 4294967295\], got -1"),
    (["--trials", "1", "--tune-timeout", "0"], r"argument --tune-timeout: must be > 0, got 0"),
    (["--trials", "1", "--tune-timeout", "-5"], r"argument --tune-timeout: must be > 0, got -5"),
    (["--tune-timeout", "5"], r"--tune-timeout applies to tuning only; add --trials N"),
    (["--spaces", "nodir"], r"--spaces applies to tuning only; add --trials N"),
    (["--trials", "1", "--spaces", "nodir"], r"--spaces nodir: --trials needs a search space per bundle: nodir/mf"),
    (["--out", "configs/mf.yaml"], r"--out configs/mf.yaml: a file, not a folder"),
    (["--", "--help"], r"--help cannot be passed to the runs \(after `--`\)"),
    (["--", "--config", "configs/lightgcn.yaml"], r"--config cannot be passed to the runs"),
    (["--", "--data.path", "x"], r"the fit override --data.path sets data.path, which recplug benchmark sets from "
                                 r"--datasets"),
    (["--", "--seed_everything=3"], r"sets seed_everything, which recplug benchmark sets from --seeds"),
    (["--", "--trainer.max_epochs=3"], r"sets trainer.max_epochs, which --max-epochs sets"),
    (["--seeds", "0", "1", "0"], r"--seeds: 0 is given twice"),  # each was run once, silently
    (["--metrics", "test/recall@20", "test/recall@20"], r"--metrics: test/recall@20 is given twice"),
    (["--trials", "100001"], r"argument --trials: must be in \[0, 100000\], got 100001"),  # as recplug tune's
    (["--report-only"], r"--report-only: no run on default has finished under .*b/default \(with these configs"),
], ids=["unknown-metric", "val-metric", "config-twice", "dataset-twice", "unknown-dataset", "empty-dataset",
        "datasets-sharing-a-folder", "zero-epochs", "negative-epochs", "negative-seed", "zero-tune-timeout",
        "negative-tune-timeout", "tune-timeout-without-trials", "spaces-without-trials", "missing-spaces", "out-is-a-file", "help-to-runs",
        "config-to-runs", "data-path-to-runs", "seed-to-runs", "epochs-twice", "seed-twice", "metric-twice",
        "too-many-trials", "report-only-with-nothing-finished"])
def test_bad_input_is_refused_before_any_run(tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(ROOT)
    split = options.index("--") if "--" in options else len(options)
    ours = without_options(["benchmark", "--configs", "configs/mf.yaml", "--seeds", "0", "--out", str(tmp_path / "b"),
                            "--max-epochs", "1"], set(options[:split]))
    argv = [*ours, *options[:split], "--", "--trainer.limit_train_batches=1", *options[split + 1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--datasets", "nosuchdata"], r"configs/mf.yaml on --datasets nosuchdata: nosuchdata: no such dataset"),
    (["--metrics", "test/nosuch"], r"--metrics \['test/nosuch'\]: no run logs them"),
    (["--", "--trainer.max_epochs=0"], r"trainer.max_epochs is 0"),
], ids=["unknown-dataset", "unknown-metric", "zero-epochs"])
def test_a_dry_run_checks_what_the_runs_would_refuse(tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(ROOT)
    split = options.index("--") if "--" in options else len(options)
    argv = ["benchmark", "--configs", "configs/mf.yaml", "--seeds", "0", "--out", str(tmp_path / "b"), "--dry-run",
            *options[:split], "--", "--trainer.limit_train_batches=1", *options[split + 1:]]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_config_named_like_a_grmfx_reference_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    clash = tmp_path / "mf-32.yaml"
    clash.write_text(Path("configs/mf.yaml").read_text())
    assert main(["benchmark", "--configs", "configs/mf.yaml", str(clash), "--out", str(tmp_path / "b")]) == 2
    assert f"--configs {clash}: rows named mf-<X> are the GRMF-X references" in capsys.readouterr().err


@pytest.mark.parametrize("interrupt", ["status", "exception"])
def test_ctrl_c_while_tuning_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, tiny_folder, interrupt):
    from recplug.core.cli import tune

    def interrupted(argv):
        if interrupt == "exception":
            raise KeyboardInterrupt
        return 130  # tune caught it and said so

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tune, "main", interrupted)
    try:
        status = main(["benchmark", "--configs", "configs/mf.yaml", "--seeds", "0", "--out", str(tmp_path / "b"),
                       "--trials", "1", "--no-plot", "--datasets", str(tiny_folder)])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped benchmark.main (a traceback)")
    assert status == 130
    printed = capsys.readouterr()
    assert "recplug benchmark: interrupted; run the same command again to resume." in printed.out
    assert printed.err == ""


def test_an_embedding_dim_after_the_dashes_leaves_the_grmfx_references_their_sizes():
    """``-- --model.embedding_dim 32`` resizes the bundles; each MF-X reference still trains at its own X."""
    reference = benchmark.Entry("mf-128", "configs/mf.yaml", ("--model.embedding_dim=128",), True, True)
    bundle = benchmark.Entry("vbpr", "configs/vbpr.yaml")
    for extra in (["--model.embedding_dim", "32"], ["--model={embedding_dim: 32}"]):
        assert benchmark.entry_extra(reference, extra) == [*extra, "--model.embedding_dim=128"]
        assert benchmark.entry_extra(bundle, extra) == extra
    other = ["--trainer.max_epochs=3"]  # unchanged: runs finished earlier keep their spec
    assert benchmark.entry_extra(reference, other) == other


def _finished_run(tmp_path: Path) -> ablate.Run:
    """A run whose result.json is complete, with its per_user.npz."""
    run = ablate.Run(ablate.Variant("mf", {}), 0, tmp_path / "runs" / "mf" / "seed0", ["fit"], "s" * 64)
    run.directory.mkdir(parents=True)
    result = {"variant": "mf", "levels": {}, "seed": 0, "monitor": "val/recall@20", "epoch": 1,
              "val": {"val/recall@20": 0.1}, "test": {"test/recall@20": 0.1}, "seconds": 1.0,
              "provenance": PROVENANCE, "spec_sha256": run.spec_sha256}
    (run.directory / ablate.RESULT_FILE).write_text(json.dumps(result))
    np.savez_compressed(run.directory / PER_USER_FILE, users=np.arange(50), **{"recall@20": np.linspace(0, 1, 50)})
    return run


def test_a_truncated_per_user_file_reruns_its_run(tmp_path):
    """As a truncated result.json: the run counts as unfinished (with a warning naming the file) and is rerun."""
    run = _finished_run(tmp_path)
    assert ablate.finished(run) is not None
    path = run.directory / PER_USER_FILE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(UserWarning, match=rf"{path}: unreadable \(BadZipFile: .*\); the run counts as unfinished"):
        assert ablate.finished(run) is None
    with pytest.raises(DataError, match=rf"^{path}: unreadable \(BadZipFile"):
        per_user(run.directory, "test/recall@20")


@pytest.mark.slow
def test_benchmark_runs_resumes_and_trains_the_grmfx_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs and the default --mf are relative to the repository
    small = tmp_path / "small.yaml"
    config = yaml.safe_load(Path("configs/mf.yaml").read_text())
    config["model"]["embedding_dim"] = 32
    small.write_text(yaml.safe_dump(config))
    out = tmp_path / "bench"
    argv = ["benchmark", "--configs", str(small), "configs/mf.yaml", "--seeds", "0", "--out", str(out),
            "--max-epochs", "2", "--no-plot"]
    assert main(argv) == 0
    board = out / "default"
    rows = {r["model"]: r for r in csv.DictReader(open(board / "leaderboard.csv"))}
    assert set(rows) == {"small", "mf", "mf-32"}  # MF of small's size X = 32 trained as its GRMF-X reference
    assert rows["small"]["representation_size"] == "32" and rows["mf"]["representation_size"] == "64"
    assert float(rows["small"]["grmfx"]) == pytest.approx(
        float(rows["small"]["test/recall@20 mean"]) / float(rows["mf-32"]["test/recall@20 mean"]))
    assert rows["mf"]["paired_users"] == rows["mf-32"]["paired_users"] != ""
    # the per-user metrics are the test metrics of the selected checkpoint: their mean is the logged value
    import json
    for name in ("small", "mf", "mf-32"):
        run = board / "runs" / name / "seed0"
        result = json.loads((run / "result.json").read_text())
        stored = np.load(run / PER_USER_FILE)
        assert stored["recall@20"].mean() == pytest.approx(result["test"]["test/recall@20"], rel=1e-5)
        assert result["epochs_trained"] == 2
    capsys.readouterr()
    assert main(argv) == 0  # rerun: every run finished earlier
    assert capsys.readouterr().out.count("finished earlier, skipped") == 3
    # --report-only: a model not run yet is left out, nothing trains, the leaderboard is rewritten
    assert main([*argv[:3], "configs/lightgcn.yaml", *argv[3:], "--report-only"]) == 0
    assert "1 of 3 runs not finished, left out" in capsys.readouterr().out
    assert not (board / "runs" / "lightgcn").exists()
    assert {r["model"] for r in csv.DictReader(open(board / "leaderboard.csv"))} == {"small", "mf", "mf-32"}


def test_default_mf_and_spaces_sit_beside_the_first_config(tmp_path, capsys, monkeypatch):
    """From any folder, `--configs /x/configs/lightgcn.yaml` takes /x/configs/mf.yaml and /x/configs/search; a
    config folder without them is one line naming the option."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "b"
    assert main(["benchmark", "--configs", str(ROOT / "configs/lightgcn.yaml"), "--seeds", "0", "--out", str(out),
                 "--trials", "1", "--dry-run"]) == 0
    assert "recplug benchmark: default: 1 models x 1 seeds" in capsys.readouterr().out
    lone = tmp_path / "lightgcn.yaml"
    lone.write_text((ROOT / "configs/lightgcn.yaml").read_text())
    assert main(["benchmark", "--configs", str(lone), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: --mf: {tmp_path / 'mf.yaml'} (the default, beside the first --configs file) is not a file; give "
        "the MF-BPR config of the GRMF-X reference rows\n")
    space = tmp_path / "space.yaml"  # a search space given as a config: its own problem, not the missing default --mf
    space.write_text((ROOT / "configs/search/lightgcn.yaml").read_text())
    assert main(["benchmark", "--configs", str(space), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {space} on --datasets default: ") and "--mf" not in err, err
    (tmp_path / "mf.yaml").write_text((ROOT / "configs/mf.yaml").read_text())
    assert main(["benchmark", "--configs", str(lone), "--out", str(out), "--trials", "1"]) == 2
    assert capsys.readouterr().err == (
        f"error: --spaces {tmp_path / 'search'}: --trials needs a search space per bundle: "
        f"{tmp_path / 'search/lightgcn.yaml'} does not exist\n")
