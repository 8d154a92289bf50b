"""``recplug ablate``: the variants file, epoch selection, the reports, failures, and resuming after an interrupt."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from recplug.core.cli import ablate
from recplug.core.cli.ablate import Variant, load_variants, override_args, select_epoch
from recplug.core.cli.main import main
from recplug.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the variants file
def test_variants_grid_and_common(tmp_path: Path) -> None:
    variants, axes, common = load_variants(write(tmp_path / "v.yaml", """
common: {trainer.max_epochs: 3}
variants:
  base: {}
grid:
  fusion: {concat: {model.fusion: ConcatFusion}, none: {model.fusion: null}}
  dim: {d16: {model.embedding_dim: 16}, d32: {model.embedding_dim: 32}}
"""))
    assert [v.name for v in variants] == [
        "base", "fusion=concat,dim=d16", "fusion=concat,dim=d32", "fusion=none,dim=d16", "fusion=none,dim=d32"]
    assert axes == ["fusion", "dim"] and common == {"trainer.max_epochs": 3}
    assert variants[0] == Variant("base", {})
    assert variants[3].overrides == {"model.fusion": None, "model.embedding_dim": 16}
    assert variants[3].levels == {"fusion": "none", "dim": "d16"}


def test_a_variants_file_of_more_than_a_thousand_variants_is_refused(tmp_path: Path) -> None:
    """Counted before the grid is expanded: 10^8 combinations are refused at once (they took minutes, then OOM)."""
    levels = "".join(f"    l{i}: {{}}\n" for i in range(10))
    grid = write(tmp_path / "g.yaml", "grid:\n" + "".join(f"  ax{a}:\n{levels}" for a in range(8)))
    with pytest.raises(ConfigError, match=re.escape(
            f"{grid}: 100,000,000 variants (grid 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10), more than 1,000: each trains "
            "once per seed; search a space this large with `recplug tune`")):
        load_variants(grid)
    listed = write(tmp_path / "v.yaml", "variants:\n" + "".join(f"  v{i}: {{}}\n" for i in range(1001)))
    with pytest.raises(ConfigError, match="1,001 variants, more than 1,000"):
        load_variants(listed)
    assert len(load_variants(write(listed, "variants:\n" + "".join(f"  v{i}: {{}}\n" for i in range(1000))))[0]) == 1000


def test_the_crane_ablation_file_has_eight_variants() -> None:
    variants, axes, _ = load_variants(ROOT / "configs" / "ablations" / "crane.yaml")
    assert axes == ["fusion", "infonce"] and len(variants) == 8
    fusions = {v.overrides.get("model.fusion", "RCAFusion") for v in variants}
    assert fusions == {"RCAFusion", "ConcatFusion", "SumFusion", "GatedFusion"}


VARIANT_FILES = {  # variants file -> the bundle it varies
    **{p: p.name for p in sorted((ROOT / "configs" / "tuning").glob("*.yaml"))},
    ROOT / "configs" / "tuning" / "crane.yaml": "crane_rca.yaml",
    ROOT / "configs" / "ablations" / "crane.yaml": "crane_rca.yaml",
    ROOT / "configs" / "ablations" / "crane_components.yaml": "crane_rca.yaml",
    ROOT / "configs" / "ablations" / "crane_real.yaml": "crane_rca.yaml",
    ROOT / "configs" / "ablations" / "crane_bundle.yaml": "crane.yaml",
}


@pytest.mark.parametrize("variants_file", sorted(VARIANT_FILES), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_variant_builds_through_the_real_cli(variants_file: Path, tmp_path: Path) -> None:
    """Every variant of the tuning and ablation files parses, instantiates and runs a forward pass."""
    from recplug.core.cli.lightning import run_cli

    variants, _, common = load_variants(variants_file)
    assert variants[0].overrides == {} and len(variants) >= 3  # the bundle as it is, first
    for variant in variants:
        cli = run_cli(["--config", str(ROOT / "configs" / VARIANT_FILES[variants_file]),
                       *override_args(common), *variant.args(),  # the order ablate uses: the variant wins
                       "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
        cli.datamodule.prepare_data()
        cli.datamodule.setup("fit")
        cli.model.prepare(cli.datamodule.data)
        assert cli.model().items.isfinite().all(), variant.name
        expected = {**common, **variant.overrides}
        if "model.fusion.init_args.num_recursions" in expected:
            assert cli.model.fusion.num_recursions == expected["model.fusion.init_args.num_recursions"]
        if "model.aux_losses" in expected:
            assert [(type(loss).__name__, loss.weight) for loss in cli.model.aux_losses] == [
                (spec["class_path"], spec["init_args"]["weight"]) for spec in expected["model.aux_losses"]]
        if "model.encoders" in expected:  # every argument the variant gives reached the component
            for encoder, spec in zip(cli.model.encoders, expected["model.encoders"], strict=True):
                assert type(encoder).__name__ == spec["class_path"], variant.name
                assert {k: encoder.hparams[k] for k in spec["init_args"]} == spec["init_args"], variant.name
        if isinstance(expected.get("model.fusion"), dict):
            spec = expected["model.fusion"]
            assert type(cli.model.fusion).__name__ == spec["class_path"], variant.name
            assert {k: cli.model.fusion.hparams[k] for k in spec["init_args"]} == spec["init_args"], variant.name


def test_the_crane_real_ablation_is_one_factor_at_a_time_and_modality_agnostic(tiny_folder: Path) -> None:
    """Each variant changes one component of crane_rca.yaml; the kNN weights name no modality, so the file runs on
    data whose modalities are not image and text (TikTok's visual and acoustic)."""
    from recplug.core.cli.lightning import run_cli

    path = ROOT / "configs" / "ablations" / "crane_real.yaml"
    variants, axes, common = load_variants(path)
    assert axes == [] and variants[0].name == "base"
    factors = {v.name.split("=")[0] for v in variants[1:]}
    assert factors == {"fusion", "recursions", "graph", "propagate", "profiles", "infonce", "pruning"}
    fusions = {v.overrides["model.fusion"]["class_path"] for v in variants if "model.fusion" in v.overrides}
    assert fusions == {"ConcatFusion", "SumFusion", "GatedFusion", "TokenAttentionFusion"}
    semantic = [spec for v in variants for spec in {**common, **v.overrides}["model.encoders"]
                if spec["class_path"] == "ItemItemGraph"]
    assert len(semantic) == len(variants) and all(spec["init_args"]["weights"] is None for spec in semantic)
    (tiny_folder / "image_feat.npy").rename(tiny_folder / "visual_feat.npy")
    (tiny_folder / "text_feat.npy").rename(tiny_folder / "acoustic_feat.npy")
    for name in ("base", "graph=refined", "fusion=gmu"):
        variant = next(v for v in variants if v.name == name)
        cli = run_cli(["--config", str(ROOT / "configs" / "crane_rca.yaml"), *override_args(common), *variant.args(),
                       "--data.path", str(tiny_folder), "--trainer.logger", "false"], run=False)
        cli.datamodule.setup("fit")
        cli.model.prepare(cli.datamodule.data)
        assert cli.model.encoders[1].weights == {"acoustic": 0.5, "visual": 0.5}
        assert cli.model().items.isfinite().all(), name


def test_overrides_become_cli_arguments() -> None:
    assert override_args({"model.fusion": "ConcatFusion", "model.aux_losses": [], "model.fusion.init_args.dropout": 0.1,
                          "data.feature_files": None, "model.combiner": {"class_path": "SumCombiner"}}) == [
        "--model.fusion=ConcatFusion", "--model.aux_losses=[]", "--model.fusion.init_args.dropout=0.1",
        "--data.feature_files=null", '--model.combiner={"class_path": "SumCombiner"}']


@pytest.mark.parametrize(("text", "message"), [
    ("variants: {a: {}}\nseeds: [1]\n", r"unknown key\(s\) \['seeds'\]"),
    ("grid: {infonce: {on: {}, off: {model.aux_losses: []}}}\n", r"quote it"),
    ("variants: {1: {model.lr: 0.1}}\n", r"key 1 is not a string \(YAML reads it unquoted as a number: quote it\)"),
    ("grid: {a: {x: {model.lr: 0.1}}, b: {y: {model.lr: 0.2}}}\n", r"model.lr is set by two grid axes"),
    ("variants: {a: [--model.lr=0.1]}\n", r"variants.a: expected a mapping"),
    ("common: {}\n", r"no variants"),
    ("variants: {a: {}\n", r"v.yaml, line 2, column 1: did not find expected ',' or '}'"),
    ("variants:\n  a: {model.lr: 0.1}\n  a: {model.lr: 0.2}\n", r"v.yaml, line 3, column 3: key 'a' appears twice"),
    ("variants:\n  a: {model.lr: 0.1, model.lr: 0.2}\n", r"line 2, .*key 'model.lr' appears twice"),
    ("variants: {a: {}}\nvariants: {b: {}}\n", r"line 2, .*key 'variants' appears twice"),
    ('variants: {"": {model.lr: 0.1}}\n', r"variant name '' cannot name its runs' folder"),
    ('variants: {"..": {model.lr: 0.1}}\n', r"variant name '..' cannot name its runs' folder"),
    ('variants: {"a/b": {model.lr: 0.1}, a_b: {model.lr: 0.2}}\n',
     r"variants 'a/b' and 'a_b' would share the runs folder 'a_b'"),
    ('variants: {a: {"model lr": 0.1}}\n', r"variants.a: 'model lr' is not a dotted config key"),
    ('variants: {a: {"--model.lr": 0.1}}\n', r"variants.a: '--model.lr' is not a dotted config key"),
    ('grid: {lr: {low: {"model.lr=0.1": 1}}}\n', r"grid.lr.low: 'model.lr=0.1' is not a dotted config key"),
    ('common: {"trainer max_epochs": 3}\nvariants: {a: {}}\n', r"common: 'trainer max_epochs' is not a dotted"),
    (f"variants: {{{'x' * 256}: {{}}}}\n", r"variant name 'x{40}\.\.\.' is too long to name its runs' folder \(256 "
                                          r"characters, at most 255\)"),  # it failed once training started
    (f"grid: {{{'a' * 130}: {{{'b' * 130}: {{}}}}}}\n", r"variant name 'a{40}\.\.\.' is too long"),
], ids=["unknown-key", "unquoted-on-off", "unquoted-number", "key-on-two-axes", "list-not-mapping", "empty",
        "bad-yaml", "variant-twice", "key-twice", "section-twice", "empty-name", "parent-folder-name",
        "names-sharing-a-folder", "key-with-space", "dashed-key", "key-with-value", "common-key-with-space", "name-too-long", "grid-name-too-long"])
def test_bad_variants_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_variants(write(tmp_path / "v.yaml", text))
    assert str(tmp_path / "v.yaml") in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- epoch selection
METRICS_CSV = """epoch,step,test/recall@20,train/bpr,val/recall@20,val/ndcg@20
0,9,,,0.10,0.05
0,9,,0.69,,
1,19,,,0.30,0.07
2,29,,,0.30,0.09
3,39,,,0.20,0.10
4,40,0.25,,,
"""


def test_selects_the_first_best_validation_epoch_and_the_test_row(tmp_path: Path) -> None:
    path = write(tmp_path / "metrics.csv", METRICS_CSV)
    chosen = select_epoch(path, "val/recall@20", "max")
    assert chosen == {"epoch": 1, "val": {"val/recall@20": 0.30, "val/ndcg@20": 0.07}, "test": {"test/recall@20": 0.25},
                      "epochs_validated": 4}
    assert select_epoch(path, "val/recall@20", "min")["epoch"] == 0
    with pytest.raises(ConfigError, match="val/loss was never logged"):
        select_epoch(path, "val/loss", "min")


# ---------------------------------------------------------------- end to end on MF and tiny data
@pytest.fixture
def mf_ablation(tmp_path: Path, tiny_folder: Path) -> tuple[list[str], Path]:
    variants = write(tmp_path / "variants.yaml", "variants:\n  base: {}\n  d16: {model.embedding_dim: 16}\n")
    out = tmp_path / "out"
    args = ["ablate", "--config", str(ROOT / "configs" / "mf.yaml"), "--variants", str(variants),
            "--seeds", "0", "1", "--out", str(out), "--max-epochs", "2", "--", "--data.path", str(tiny_folder)]
    return args, out


def test_interrupted_ablation_resumes_with_only_the_missing_runs(mf_ablation, monkeypatch, capsys) -> None:
    args, out = mf_ablation
    real_fit, calls = ablate.fit_one, []

    def fit_then_interrupt(run, after=None):
        calls.append((run.variant.name, run.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(run, after)

    monkeypatch.setattr(ablate, "fit_one", fit_then_interrupt)
    assert main(args) == 130
    assert "Run the same command again to resume" in capsys.readouterr().out
    assert sorted(p.parent.name for p in out.glob("runs/*/*/result.json")) == ["seed0", "seed1"]

    calls.clear()
    assert main(args) == 0
    assert calls == [("d16", 0), ("d16", 1)]  # only what was missing
    printed = capsys.readouterr().out
    assert "[1/4] variant=base seed=0: finished earlier, skipped" in printed
    assert "[3/4] variant=d16 seed=0 ..." in printed

    table = (out / "results.md").read_text()
    assert table.startswith("| variant | seeds | test/recall@20 | test/ndcg@20 | epoch |")
    assert "| base | 2 | " in table and "| d16 | 2 | " in table and " ± " in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["variant"], r["seed"]) for r in rows] == [
        ("base", "0"), ("base", "1"), ("d16", "0"), ("d16", "1"), ("base", "mean"), ("base", "std"),
        ("d16", "mean"), ("d16", "std")]
    runs = [r for r in rows if r["seed"] in ("0", "1")]
    mean = next(r for r in rows if r["variant"] == "base" and r["seed"] == "mean")
    assert float(mean["test/recall@20"]) == pytest.approx(
        sum(float(r["test/recall@20"]) for r in runs if r["variant"] == "base") / 2, rel=1e-4)

    results = {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())
               for p in out.glob("runs/*/*/result.json")}
    config_hashes = {k: r["provenance"]["config_sha256"] for k, r in results.items()}
    assert config_hashes[("base", "seed0")] == config_hashes[("base", "seed1")] != config_hashes[("d16", "seed0")]
    for (variant, seed), r in results.items():
        assert r["provenance"]["seed"] == int(seed[4:]) and r["provenance"]["recplug"]
        assert len({x["provenance"]["data_sha256"] for x in results.values()}) == 1
        assert r["command"][:2] == ["recplug", "fit"]  # how to reproduce this one run
        # test metrics are those of the selected epoch's checkpoint
        assert f"best-epoch={r['epoch']}.ckpt" in r["best_checkpoint"]


def test_changed_variant_is_rerun_and_a_failing_one_does_not_stop_the_others(mf_ablation, tmp_path, capsys) -> None:
    args, out = mf_ablation
    assert main([*args[:-2], "--trainer.limit_train_batches=2", *args[-2:]]) == 0
    capsys.readouterr()
    # a learning rate the preflight takes (> 0) and training overflows with: the run fails once it trains
    write(Path(args[4]), "variants:\n  base: {}\n  d16: {model.embedding_dim: 8}\n  bad: {model.lr: 1.0e+30}\n")
    assert main([*args[:-2], "--trainer.limit_train_batches=2", *args[-2:]]) == 1
    printed = capsys.readouterr()
    assert printed.out.count("finished earlier, skipped") == 2  # base; d16 changed, so it is rerun
    assert "[5/6] variant=bad seed=0 ... failed: ConfigError: the model's scores are not finite" in printed.out
    assert "failed: variant=bad seed=1: ConfigError: the model's scores are not finite" in printed.err
    assert "| bad | 0 | – | – | – |" in (out / "results.md").read_text()


def without_options(args: list[str], options: set[str]) -> list[str]:
    """``args`` without ``options`` and their values (a test's bad value replaces the fixture's good one)."""
    kept, dropping = [], False
    for token in args:
        if token.startswith("--"):
            dropping = token in options
        if not dropping:
            kept.append(token)
    return kept


@pytest.mark.parametrize(("variants", "options", "message"), [
    ("  bad: {model.nonexistent_key: 3}\n", [], r"variants.yaml: variant 'bad': unrecognized arguments: "
                                                r"--model.nonexistent_key=3"),
    ("  bad: {model.fusion: NoSuchFusion}\n", [], r"variants.yaml: variant 'bad': model.fusion: unknown or invalid"),
    ("  bad: {seed_everything: 3}\n", [], r"variants.yaml: variant 'bad' sets seed_everything, which recplug ablate "
                                          r"sets from --seeds"),
    ("  bad: {data.seed: 3}\n", [], r"variant 'bad' sets data.seed, which recplug ablate sets from --seeds"),
    ("  bad: {trainer.default_root_dir: x}\n", [], r"sets trainer.default_root_dir, which recplug ablate sets for "
                                                    r"each run"),
    ("  bad: {trainer.logger.init_args.save_dir: x}\n", [], r"variant 'bad' sets trainer.logger, which recplug"),
    ("  bad: {trainer.max_epochs: 3}\n", [], r"variant 'bad' sets trainer.max_epochs, which --max-epochs sets"),
    ("  bad: {model.embedding_dim: 8, config: x.yaml}\n", [], r"variant 'bad' sets config, which is recplug fit's "
                                                              r"--config option, not a setting"),
    ("", ["--", "--seed_everything=3"], r"the fit override --seed_everything sets seed_everything, which recplug "
                                        r"ablate sets from --seeds"),
    ("", ["--", "--trainer.max_epochs", "3"], r"the fit override --trainer.max_epochs sets trainer.max_epochs, "
                                              r"which --max-epochs sets"),
    ("", ["--", "--trainer.fast_dev_run=true"], r"the fit override --trainer.fast_dev_run sets trainer.fast_dev_run, "
                                               r"which turns the logger off"),  # each run failed on its metrics.csv
    ("", ["--", "--help"], r"--help cannot be passed to the runs \(after `--`\)"),
    ("", ["--", "--print_config"], r"--print_config cannot be passed to the runs"),
    ("", ["--", "--config", str(ROOT / "configs" / "lightgcn.yaml")], r"--config cannot be passed to the runs"),
    ("", ["--", "--trainer.max_steps", "many"], r"--config with the common overrides and those after `--`: "
                                                r"trainer.max_steps"),
    ("", ["--", "--eval.ks=[100000]", "--checkpoint.monitor=val/recall@100000", "--trainer.callbacks=[]"],
     r"--config with the common overrides and those after `--`: eval.ks must be in \[1, \d+\] \(the number of "
     r"items\), got 100000"),
    ("", ["--", "--trainer.limit_val_batches=0"], r"trainer.limit_val_batches is 0: no validation would run, so "
                                                  r"checkpoint.monitor 'val/recall@20' is never logged"),
    ("", ["--", "--trainer.limit_test_batches=0"], r"trainer.limit_test_batches is 0: a run would report no test"),
    ("", ["--", "--checkpoint.monitor=test/recall@20"], r"checkpoint.monitor is 'test/recall@20': training never "
                                                        r"evaluates the test split"),
    ("", ["--", "--checkpoint.save_top_k=0"], r"checkpoint.save_top_k is 0: no best-validation checkpoint would be "
                                              r"kept, so each run would test its last epoch"),
    ("", ["--seeds", "-1"], r"argument --seeds: must be in \[0, 4294967295\], got -1"),
    ("", ["--max-epochs", "-2"], r"argument --max-epochs: must be >= 1, got -2"),
    ("", ["--variants", str(ROOT / "configs")], r"argument --variants: .*configs: a folder, not a variants file"),
    ("", ["--config", str(ROOT / "configs")], r"argument --config: .*configs: a folder, not a config file"),
    ("", ["--against", "nope.yaml"], r"argument --against: nope.yaml: no such config file"),
    ("", ["--out", str(ROOT / "configs" / "mf.yaml")], r"--out .*mf.yaml: a file, not a folder"),
    ("", ["--metrics", "val/recal@20"], r"--metrics \['val/recal@20'\]: no run logs them; choose from \['test/hit@10'"),
    ("", ["--seeds", "0", "1", "0"], r"--seeds: 0 is given twice"),  # each was run once, silently
    ("", ["--only", "base", "base"], r"--only: base is given twice"),
    ("", ["--metrics", "test/recall@20", "test/recall@20"], r"--metrics: test/recall@20 is given twice"),
    ("", ["--report-only"], r"--report-only: none of the 2 runs has finished under .*out \(with these configs"),
    ("", ["--", "--trainer={limit_train_batches: 2}"], r"the fit override --trainer may set trainer.default_root_dir "
                                                        r"\(a key inside trainer\), which recplug ablate sets for each "
                                                        r"run .*; set the keys inside trainer one by one"),
], ids=["unknown-key", "unknown-plugin", "seed", "data-seed", "root-dir", "logger", "epochs-twice",
        "config-in-a-variant", "seed-override", "epochs-override", "fast-dev-run", "help", "print-config", "config",
        "override-the-cli-refuses", "k-beyond-the-catalogue", "no-validation", "no-test", "test-monitor",
        "no-best-checkpoint", "negative-seed", "negative-epochs", "variants-is-a-folder", "config-is-a-folder", "missing-against", "out-is-a-file",
        "unknown-metric", "seed-twice", "only-twice", "metric-twice", "report-only-with-nothing-finished",
        "a-section-holding-a-key-ablate-sets"])
def test_bad_input_is_refused_before_any_run(mf_ablation, capsys, variants, options, message) -> None:
    args, out = mf_ablation
    write(Path(args[4]), "variants:\n  base: {}\n" + variants)
    split, cut = args.index("--"), options.index("--") if "--" in options else len(options)
    ours = without_options(args[:split], {o for o in options[:cut] if o.startswith("--") and o != "--config"})
    assert main([*ours, *options[:cut], *args[split:], *options[cut + 1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()  # refused before any run


def test_validation_metrics_in_the_table_and_unknown_metrics_refused(mf_ablation, capsys) -> None:
    args, out = mf_ablation
    split = args.index("--")  # ablate's own options, then what goes to every fit
    ours, theirs = args[:split], [*args[split:], "--trainer.limit_train_batches=2"]
    assert main([*ours, "--metrics", "test/recall@20", "val/recall@20", "--no-plot", *theirs]) == 0
    table = (out / "results.md").read_text()
    assert table.startswith("| variant | seeds | test/recall@20 | val/recall@20 | epoch |")
    base = next(line for line in table.splitlines() if line.startswith("| base |"))
    assert "–" not in base  # the validation column is filled
    capsys.readouterr()
    assert main([*ours, "--metrics", "val/recal@20", "--no-plot", *theirs]) == 2
    assert "--metrics ['val/recal@20']: no run logs them; choose from" in capsys.readouterr().err


def test_dry_run_prints_reproducible_commands(mf_ablation, capsys) -> None:
    args, out = mf_ablation
    assert main([*args[:-3], "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("recplug fit --config ") for line in lines)
    assert "--model.embedding_dim=16" in lines[2] and "--seed_everything=1" in lines[3] and not out.exists()
    split = args.index("--")  # an override the runs would refuse is refused before anything is printed
    assert main([*args[:split], "--dry-run", *args[split:], "--trainer.max_ep", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unrecognized arguments: --trainer.max_ep" in captured.err, captured.err


def test_only_runs_the_named_variants_and_refuses_unknown_names(mf_ablation, capsys) -> None:
    args, out = mf_ablation
    split = args.index("--")
    assert main([*args[:split], "--only", "d16", "--dry-run", *args[split:]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("--model.embedding_dim=16" in line for line in lines)
    assert main([*args[:split], "--only", "d32", "--dry-run", *args[split:]]) == 2
    err = capsys.readouterr().err
    assert "--only:" in err and "no variant(s) ['d32']" in err and "['base', 'd16']" in err


def test_against_trains_the_reference_on_the_same_seeds_and_tests_every_variant_against_it(mf_ablation, capsys) -> None:
    """--against: one more row on the same seeds, and per variant the Holm-adjusted paired tests of each test user's
    first metric (mean over the seeds) against it, recomputed here from the runs' per_user.npz."""
    pytest.importorskip("scipy")
    pytest.importorskip("statsmodels")
    import numpy as np

    from recplug.core.cli.paired import PER_USER_FILE
    from recplug.core.eval.significance import holm, paired_test

    args, out = mf_ablation
    split = args.index("--")
    against = str(ROOT / "configs" / "lightgcn.yaml")
    assert main([*args[:split], "--against", against, "--no-plot", *args[split:], "--trainer.limit_train_batches=2"]) == 0
    printed = capsys.readouterr().out
    assert "recplug ablate: 3 rows x 2 seeds = 6 runs" in printed
    table = (out / "results.md").read_text()
    assert table.startswith("| variant | seeds | test/recall@20 | test/ndcg@20 | p Wilcoxon vs lightgcn (Holm) | "
                            "p t-test vs lightgcn (Holm) | epoch |")
    assert "| lightgcn | 2 | " in table

    def user_means(name: str) -> np.ndarray:
        runs = [np.load(out / "runs" / name / f"seed{s}" / PER_USER_FILE) for s in (0, 1)]
        assert (runs[0]["users"] == runs[1]["users"]).all()
        return (runs[0]["recall@20"] + runs[1]["recall@20"]) / 2

    reference = user_means("lightgcn")
    raw = [paired_test(reference, user_means(name)) for name in ("base", "d16")]
    expected = holm([t.wilcoxon_p for t in raw])
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv")) if r["seed"] == "mean"}
    for name, value in zip(("base", "d16"), expected):
        assert float(rows[name]["wilcoxon_p_holm"]) == pytest.approx(value, rel=1e-4)
    assert rows["lightgcn"]["wilcoxon_p_holm"] == ""  # the reference itself is not tested

    # --report-only with one more seed: nothing trains, the unfinished seed is left out of the same table
    assert main([*without_options(args[:split], {"--seeds"}), "--seeds", "0", "1", "2", "--against", against,
                 "--report-only", "--no-plot", *args[split:], "--trainer.limit_train_batches=2"]) == 0
    assert "6 finished earlier, 3 left out" in capsys.readouterr().out
    assert not (out / "runs" / "base" / "seed2").exists()
    assert (out / "results.md").read_text().split("\n\n")[0] == table.split("\n\n")[0]
    clash = write(out.parent / "clash.yaml", "variants:\n  lightgcn: {}\n")
    assert main([*without_options(args[:split], {"--variants"}), "--variants", str(clash), "--against", against,
                 "--dry-run", *args[split:]]) == 2
    assert "its row 'lightgcn' and the variant 'lightgcn' of" in capsys.readouterr().err
    assert main([*args[:split], "--against", against, "--metrics", "val/recall@20", *args[split:]]) == 2
    assert "--against compares test users, so the first --metrics must be a test metric" in capsys.readouterr().err
