"""Every bundle in configs/ runs through the real CLI (fast_dev_run), builds the components it names, and
``--print_config`` output fed back with ``--config`` reproduces the same config; every search space in
configs/search/ belongs to a bundle and names only values that bundle sets, with a valid spec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recplug.core.cli.main import main, run_cli

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
BUNDLES = sorted(p for p in CONFIGS.glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))
SPACES = sorted((CONFIGS / "search").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def data_args(path: Path, tmp_path: Path, tiny_data) -> list[str]:
    """Gowalla bundles need the real Gowalla: run them on a tiny LightGCN-format folder instead."""
    if not path.name.endswith("_gowalla.yaml"):
        return []
    from recplug.core.data.formats.lightgcn import write_lightgcn

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


KEY_PART = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")
MISSING = object()


def resolve(config: Any, key: str) -> Any:
    """The value at a dotted key with ``[i]`` list indices (``model.aux_losses[1].init_args.weight``), or MISSING."""
    value = config
    for part in key.split("."):
        match = KEY_PART.match(part)
        if match is None or not isinstance(value, dict) or match.group(1) not in value:
            return MISSING
        value = value[match.group(1)]
        for index in re.findall(r"\[(\d+)\]", match.group(2)):
            if not isinstance(value, list) or int(index) >= len(value):
                return MISSING
            value = value[int(index)]
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def spec_problems(key: str, spec: Any, current: Any) -> list[str]:
    """What is wrong with one ``params`` entry, given the bundle's current value at ``key``."""
    if not isinstance(spec, dict):
        return [f"{key}: spec must be a mapping, got {spec!r}"]
    kinds = [kind for kind in ("float", "int", "choices") if kind in spec]
    if len(kinds) != 1:
        return [f"{key}: needs exactly one of float/int/choices, got {sorted(spec)}"]
    kind = kinds[0]
    extra = set(spec) - {kind, "log", "step"} if kind != "choices" else set(spec) - {"choices"}
    if extra:
        return [f"{key}: unknown fields {sorted(extra)} for a {kind} spec"]
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices):
            return [f"{key}: choices must be a non-empty list of distinct values, got {choices!r}"]
        if current not in choices:
            return [f"{key}: the bundle's value {current!r} is not among the choices {choices}"]
        return []
    bounds = spec[kind]
    number = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else is_number
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(number(b) for b in bounds)):
        return [f"{key}: {kind} needs [low, high] of {kind}s, got {bounds!r}"]
    low, high = bounds
    problems = []
    if not low < high:
        problems.append(f"{key}: low {low} must be < high {high}")
    if spec.get("log", False) and low <= 0:
        problems.append(f"{key}: log needs positive bounds, got low {low}")
    if "step" in spec and not (number(spec["step"]) and spec["step"] > 0 and not spec.get("log", False)):
        problems.append(f"{key}: step must be a positive {kind}, without log; got {spec['step']!r}")
    if not (number(current) and low <= current <= high):
        problems.append(f"{key}: the bundle's value {current!r} is outside [{low}, {high}]")
    return problems


def space_problems(space: dict[str, Any], bundle: dict[str, Any]) -> list[str]:
    """Every problem of a search space against the loaded YAML of its bundle."""
    problems = []
    if space.get("direction", "maximize") not in ("maximize", "minimize"):
        problems.append(f"direction must be maximize or minimize, got {space['direction']!r}")
    params = space.get("params")
    if not isinstance(params, dict) or not params:
        return [*problems, "params must be a non-empty mapping"]
    for key, spec in params.items():
        current = resolve(bundle, key)
        if current is MISSING:
            problems.append(f"{key}: does not resolve to a value in the bundle")
        else:
            problems.extend(spec_problems(key, spec, current))
    return problems


def test_search_spaces_are_not_bundles():
    assert SPACES, "configs/search/ holds the search spaces"
    assert not {p.resolve() for p in SPACES} & {p.resolve() for p in BUNDLES}


def test_every_bundle_has_a_search_space():
    """Except the reproduction bundles (``*_gowalla``), which fix a paper's schedule for one dataset."""
    without = {p.stem for p in BUNDLES} - {p.stem for p in SPACES}
    assert {name for name in without if not name.endswith("_gowalla")} == set()


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_search_space_matches_its_bundle(path):
    space = yaml.safe_load(path.read_text())
    bundle_path = ROOT / space.get("config", f"configs/{path.stem}.yaml")
    assert bundle_path.is_file(), f"{path.name} names {bundle_path}, which does not exist"
    assert bundle_path.stem == path.stem, "a space is named after its bundle"
    assert space_problems(space, yaml.safe_load(bundle_path.read_text())) == []


def test_space_check_reports_each_kind_of_mistake():
    bundle = {"model": {"lr": 0.001, "encoders": [{"init_args": {"num_layers": 2}}]}}
    cases = {
        "model.lr_typo": {"float": [1e-4, 1e-2]},
        "model.encoders[1].init_args.num_layers": {"int": [1, 3]},
        "model.lr": {"float": [1e-4, 1e-2], "choices": [1e-3]},
        "model.encoders[0].init_args.num_layers": {"int": [2, 2]},
    }
    problems = space_problems({"params": cases}, bundle)
    assert [p.split(":")[0] for p in problems] == list(cases)
    assert space_problems({"params": {"model.lr": {"float": [0.0, 1e-2], "log": True}}}, bundle) == [
        "model.lr: log needs positive bounds, got low 0.0"
    ]
    assert space_problems({"params": {"model.lr": {"choices": [1e-4, 1e-2]}}}, bundle) == [
        "model.lr: the bundle's value 0.001 is not among the choices [0.0001, 0.01]"
    ]
    assert space_problems({"params": {"model.encoders[0].init_args.num_layers": {"int": [1.0, 3.0]}}}, bundle)
    assert resolve(bundle, "model.encoders[0].init_args.num_layers") == 2
    assert resolve(bundle, "model.encoders[0]init_args") is MISSING
