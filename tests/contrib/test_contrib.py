"""The example plugin packages in plugins_contrib/, installed with pip exactly as a third party's would be.

Each test installs (``pip install --no-deps --no-build-isolation``, from a copy so build files never land in
the repository), drives the real ``recplug`` command in a subprocess (a fresh interpreter sees the new entry
points), and uninstalls in a ``finally``: nothing stays installed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "plugins_contrib"


# ---------------------------------------------------------------- docs/writing_plugins.md stays true
def test_writing_plugins_example_and_its_tests_work(monkeypatch, tiny_data, tiny_folder: Path) -> None:
    from recplug.core.cli.main import run_cli

    text = (ROOT / "docs" / "writing_plugins.md").read_text()
    plugin_code, test_code, conformance_code = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(plugin_code.splitlines()) <= 25  # "a complete example of about twenty lines"
    package, module = types.ModuleType("recplug_contentalign"), types.ModuleType("recplug_contentalign.plugin")
    monkeypatch.setitem(sys.modules, "recplug_contentalign", package)
    monkeypatch.setitem(sys.modules, "recplug_contentalign.plugin", module)
    exec(compile(plugin_code, "recplug_contentalign/plugin.py", "exec"), module.__dict__)
    namespace: dict[str, object] = {}
    exec(compile(test_code, "test_plugin.py", "exec"), namespace)
    namespace["test_content_align_loss_reaches_the_item_embeddings"]()
    exec(compile(conformance_code, "test_conformance.py", "exec"), namespace)
    namespace["test_my_loss_conforms"](tiny_data)

    # the short class name resolves, from a YAML list or appended on the command line
    cli = run_cli(["--config", str(ROOT / "configs" / "vbpr.yaml"), "--data.path", str(tiny_folder),
                   "--model.aux_losses+=ContentAlignLoss", "--trainer.logger=false"], run=False)
    assert [type(loss).__name__ for loss in cli.model.aux_losses] == ["L2Regularization", "ContentAlignLoss"]


# ---------------------------------------------------------------- real pip installs
def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def pip_installed(tmp_path: Path, *packages: Path) -> Iterator[None]:
    """Install copies of ``packages`` into this environment for the duration of the block."""
    copies = []
    for package in packages:
        copies.append(tmp_path / "src" / package.name)
        shutil.copytree(package, copies[-1], ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    names = [p.name for p in packages]
    try:
        pip("install", "--no-deps", "--no-build-isolation", "--quiet", *map(str, copies))
        yield
    finally:
        pip("uninstall", "--yes", "--quiet", *names)


def env(**extra: str) -> dict[str, str]:
    """This environment with plugin autoloading on and any plugin allow-list or strict flag removed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECPLUG_") or k == "RECPLUG_CACHE"}
    return {**clean, **extra}


def recplug(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recplug.core.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env=env(**extra_env))


def fit_args(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
              "init_args": {"save_dir": str(out), "name": "", "version": ""}}
    return ["fit", "--config", str(config), "--data.path", str(data), "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={out}", f"--trainer.logger={json.dumps(logger)}",
            "--trainer.enable_progress_bar=false", *extra]


def installed(name: str) -> bool:
    done = subprocess.run([sys.executable, "-m", "pip", "show", name], capture_output=True, text=True)
    return done.returncode == 0


@pytest.mark.slow
def test_lmf_and_align_install_list_train_and_uninstall(tmp_path: Path, tiny_folder: Path) -> None:
    with pip_installed(tmp_path, CONTRIB / "recplug-lmf", CONTRIB / "recplug-align"):
        listed = recplug("plugins", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "lmf  (recplug-lmf 0.1.0)" in listed.stdout and "components: LMFFusion" in listed.stdout
        assert "align  (recplug-align 0.1.0)" in listed.stdout and "components: AlignUniformLoss" in listed.stdout

        for package, bundle, selected in [
            ("recplug-lmf", "vbpr_lmf.yaml", r"class_path: recplug_lmf(\.plugin)?\.LMFFusion"),
            ("recplug-align", "mf_directau.yaml", r"class_path: recplug_align(\.plugin)?\.AlignUniformLoss"),
        ]:
            out = tmp_path / package
            fit = recplug(*fit_args(CONTRIB / package / bundle, tiny_folder, out), cwd=tmp_path)
            assert fit.returncode == 0, fit.stderr[-3000:]
            assert f"{package} 0.1.0" in fit.stderr  # the run logs the plugin versions it used
            assert re.search(selected, (out / "config.yaml").read_text())  # the short name found the plugin
            rows = list(csv.DictReader(open(out / "metrics.csv")))
            assert [float(r["test/recall@20"]) for r in rows if r.get("test/recall@20")]
        align_terms = {k for k in rows[0] if k.startswith("train/au_")}
        assert align_terms == {"train/au_align", "train/au_uniform"}  # each term logged on its own

        # each package's own test suite passes against the installed package
        for package in ("recplug-lmf", "recplug-align"):
            tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    str(CONTRIB / package / "tests")], cwd=tmp_path, capture_output=True, text=True,
                                   env=env())
            assert tests.returncode == 0, tests.stdout[-3000:]
    assert not installed("recplug-lmf") and not installed("recplug-align")


BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "recplug-broken-demo"
version = "0.0.1"

[project.entry-points.recplug]
importfail = "recplug_broken_demo.importfail"
wrongsig = "recplug_broken_demo.wrongsig"

[tool.setuptools]
packages = ["recplug_broken_demo"]
"""


@pytest.mark.slow
def test_broken_plugin_is_named_and_skipped(tmp_path: Path, tiny_folder: Path) -> None:
    package = tmp_path / "recplug-broken-demo"
    (package / "recplug_broken_demo").mkdir(parents=True)
    (package / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (package / "recplug_broken_demo" / "__init__.py").write_text("")
    (package / "recplug_broken_demo" / "importfail.py").write_text("import recplug_dependency_nobody_installed\n")
    (package / "recplug_broken_demo" / "wrongsig.py").write_text(textwrap.dedent("""
        def recplug_resample(epoch, colour):  # 'colour' is not an argument of the hook
            pass
    """))
    with pip_installed(tmp_path / "build", package):
        listed = recplug("plugins", "--all", cwd=tmp_path)
        assert listed.returncode == 0
        assert ("importfail  (recplug-broken-demo 0.0.1)  [skipped: ModuleNotFoundError: No module named "
                "'recplug_dependency_nobody_installed']") in listed.stdout
        assert "wrongsig  (recplug-broken-demo 0.0.1)  [skipped: PluginValidationError" in listed.stdout
        assert "colour" in listed.stdout
        assert "recplug.plugins.fusion.concat  (recplug 0.1.0)" in listed.stdout  # the rest still loads
        assert "plugin 'importfail' from distribution recplug-broken-demo 0.0.1 failed to load" in listed.stderr

        config = ROOT / "configs" / "mf.yaml"
        fit = recplug(*fit_args(config, tiny_folder, tmp_path / "ok"), cwd=tmp_path)
        assert fit.returncode == 0, fit.stderr[-3000:]  # everything else keeps working

        strict = recplug(*fit_args(config, tiny_folder, tmp_path / "strict"), cwd=tmp_path, RECPLUG_STRICT_PLUGINS="1")
        assert strict.returncode == 2
        last = strict.stderr.strip().splitlines()[-1]
        assert last.startswith("error: recplug: plugin 'importfail' from distribution recplug-broken-demo 0.0.1")
    assert not installed("recplug-broken-demo")


@pytest.mark.slow
def test_crane_fusion_and_infonce_ablation_with_a_contrib_fusion_resumes(tmp_path: Path) -> None:
    """CRANE's fusion in {RCA, concat, sum, LMF} x InfoNCE with/without x 2 seeds on the embedded default data
    (two one-batch epochs per run), interrupted with Ctrl-C after four runs, then resumed. The variants are
    configs/ablations/crane.yaml's with its built-in GMU arm swapped for the third-party LMF."""
    variants = yaml.safe_load((ROOT / "configs" / "ablations" / "crane.yaml").read_text())
    fusions = variants["grid"]["fusion"]
    del fusions["gmu"]
    fusions["lmf"] = {"model.fusion": "LMFFusion"}
    variants_file = tmp_path / "crane_lmf.yaml"
    variants_file.write_text(yaml.safe_dump(variants, sort_keys=False))
    out = tmp_path / "ablate"
    command = ["ablate", "--config", str(ROOT / "configs" / "crane_rca.yaml"), "--variants", str(variants_file),
               "--seeds", "0", "1", "--out", str(out), "--max-epochs", "2", "--", "--trainer.limit_train_batches=1"]
    with pip_installed(tmp_path, CONTRIB / "recplug-lmf"):
        first = subprocess.Popen([sys.executable, "-m", "recplug.core.cli.main", *command], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                                 # a background shell may have left SIGINT ignored; Ctrl-C must reach the run
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 600
        while len(list(out.glob("runs/*/*/result.json"))) < 4 and first.poll() is None:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=300)
        assert first.returncode == 130, output[-3000:]
        assert "interrupted" in output and not (out / "results.md").exists()
        done_before = len(list(out.glob("runs/*/*/result.json")))
        assert 4 <= done_before < 16

        second = recplug(*command, cwd=tmp_path)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    progress = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 16
    assert sum(line.endswith("finished earlier, skipped") for line in progress) == done_before

    table = (out / "results.md").read_text()
    for fusion in ("rca", "concat", "sum", "lmf"):
        for infonce in ("with", "without"):
            assert f"| {fusion} | {infonce} | 2 | " in table
    assert "recplug-lmf 0.1.0" in table and " ± " in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len([r for r in rows if r["seed"] in ("0", "1")]) == 16
    assert {r["fusion"] for r in rows} == {"rca", "concat", "sum", "lmf"}
    lmf = json.loads((out / "runs" / "fusion=lmf,infonce=with" / "seed1" / "result.json").read_text())
    assert "recplug-lmf 0.1.0" in lmf["provenance"]["plugins"]
    config = (out / "runs" / "fusion=lmf,infonce=with" / "seed1" / "fit" / "config.yaml").read_text()
    assert re.search(r"class_path: recplug_lmf(\.plugin)?\.LMFFusion", config)
