"""Every bundle in configs/ runs through the real CLI (fast_dev_run), builds the components it names, and
``--print_config`` output fed back with ``--config`` reproduces the same config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recplug.core.cli import main, run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BUNDLES = sorted(p for p in CONFIGS.glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def data_args(path: Path, tmp_path: Path, tiny_data) -> list[str]:
    """Gowalla bundles need the real Gowalla: run them on a tiny LightGCN-format folder instead."""
    if not path.name.endswith("_gowalla.yaml"):
        return []
    from recplug.core.readers import write_lightgcn

    return ["--data.path", str(write_lightgcn(tiny_data, tmp_path / "tiny_lightgcn"))]


def component_names(config: dict) -> dict[str, object]:
    """The class names a bundle YAML chooses for each component key."""
    model = config["model"]

    def short(entry):
        return entry["class_path"].rsplit(".", 1)[-1] if isinstance(entry, dict) else entry.rsplit(".", 1)[-1]

    names: dict[str, object] = {"encoders": [short(e) for e in model["encoders"]]}
    for key in ("fusion", "combiner"):
        if model.get(key):
            names[key] = short(model[key])
    names["aux_losses"] = [short(e) for e in model.get("aux_losses") or []]
    return names


def test_the_bundles_exist():
    names = {p.stem for p in BUNDLES}
    assert {"crane", "mf", "lightgcn", "vbpr", "freedom", "lattice", "mgcn", "ngcf", "lightgcn_gowalla"} <= names


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_bundle_fits_through_the_cli(path, tmp_path, tiny_data):
    args = ["--config", str(path), *data_args(path, tmp_path, tiny_data), "--trainer.fast_dev_run=true",
            "--trainer.default_root_dir", str(tmp_path), *QUIET]
    config = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# "), "each bundle starts with a comment naming its paper"
    cli = run_cli(args, run=False)
    expected = component_names(config)
    model = cli.model
    assert [type(e).__name__ for e in model.encoders] == expected["encoders"]
    assert [type(a).__name__ for a in model.aux_losses] == expected["aux_losses"]
    if "fusion" in expected:
        assert type(model.fusion).__name__ == expected["fusion"]
    if "combiner" in expected:
        assert type(model.combiner).__name__ == expected["combiner"]
    assert main(["fit", *args]) == 0


@pytest.mark.parametrize("name", ["crane", "freedom"])
def test_print_config_round_trips(name, tmp_path, capsys):
    def printed(config: Path) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None)
        return capsys.readouterr().out

    first = printed(CONFIGS / f"{name}.yaml")
    (tmp_path / "printed.yaml").write_text(first)
    assert printed(tmp_path / "printed.yaml") == first
    assert yaml.safe_load(first)["model"]["encoders"][0]["class_path"].endswith("UserItemGraph")
