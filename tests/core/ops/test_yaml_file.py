"""The YAML reader of recplug's files and jsonargparse's loader: YAML 1.1 octal and base-60 numbers are refused
naming the line; every other value loads as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recplug.core.cli.main import main
from recplug.core.errors import ConfigError
from recplug.core.ops.yaml_file import guard_jsonargparse_yaml, read_yaml

ROOT = Path(__file__).resolve().parents[3]

REFUSED = {
    "a: 010\n": ("line 1, column 4", "010 is an octal number in YAML 1.1 and reads as 8: write 8 for that, 10 for "
                 "the decimal number, or quote it ('010') for text"),
    "a: -0_10\n": ("line 1, column 4", "-0_10 is an octal number in YAML 1.1 and reads as -8: write -8 for that, "
                   "-10 for the decimal number, or quote it ('-0_10') for text"),
    "a:\n  b: [1, 1:04]\n": ("line 2, column 10", "1:04 is a base-60 number in YAML 1.1 and reads as 64: write 64 "
                             "for that, or quote it ('1:04') for text"),
    "a: 1:30.5\n": ("line 1, column 4", "1:30.5 is a base-60 number in YAML 1.1 and reads as 90.5: write 90.5 for "
                    "that, or quote it ('1:30.5') for text"),
    "010: a\n": ("line 1, column 1", "010 is an octal number in YAML 1.1 and reads as 8: write 8 for that, 10 for "
                 "the decimal number, or quote it ('010') for text"),
}
"""YAML text -> where and what the error says (fuzz round 5, S4: ``010`` was 8 and ``1:04`` was 64)."""

KEPT = ["a: 0x10", "a: 0o10", "a: 0b11", "a: 10", "a: -3", "a: 0", "a: 00", "a: 07", "a: 08", "a: 010.5",
        "a: 1_000", "a: '010'", "a: \"1:04\"", "a: 1.5", "a: .inf", "a: 12:30 pm", "a: [1, 2]", "a: b:c"]
"""YAML that reads as before: explicit bases, numbers whose leading zero changes nothing, quoted text."""


@pytest.mark.parametrize("text", list(REFUSED))
def test_a_yaml11_octal_or_base60_number_in_a_file_is_refused_with_its_line(text: str, tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    where, problem = REFUSED[text]
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    assert str(caught.value) == f"{path}, {where}: {problem}"


@pytest.mark.parametrize("text", [*KEPT, "a: 1e-4"])
def test_other_numbers_read_as_the_safe_loader_reads_them(text: str, tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text + "\n")
    assert read_yaml(path) == yaml.safe_load(text)


def test_jsonargparse_s_loader_refuses_them_too_and_reads_the_rest_as_before() -> None:
    from jsonargparse._loaders_dumpers import yaml_load

    guard_jsonargparse_yaml()
    guard_jsonargparse_yaml()  # once per command: registering again changes nothing
    assert {text: yaml_load(text) for text in KEPT} == {text: yaml.safe_load(text) for text in KEPT}
    assert yaml_load("a: 1e-4") == {"a": 1e-4}  # jsonargparse's own float rule, kept
    for text, (where, problem) in REFUSED.items():
        with pytest.raises(yaml.constructor.ConstructorError) as caught:
            yaml_load(text)
        assert caught.value.problem == problem and f"{where}" in str(caught.value.problem_mark)


def test_a_config_file_and_the_command_line_agree(tmp_path: Path, capsys) -> None:
    """A config file's ``max_epochs: 010`` ran 8 epochs, and ``--model.embedding_dim 1:04`` gave 64."""
    config = tmp_path / "oct.yaml"
    config.write_text("trainer:\n  max_epochs: 010\n")
    mf = str(ROOT / "configs" / "mf.yaml")
    assert main(["fit", "--config", mf, "--config", str(config), "--print_config"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {config}, line 2, column 15: 010 is an octal number in YAML 1.1 and reads as 8: write 8 for that, "
        "10 for the decimal number, or quote it ('010') for text"
    )
    assert main(["fit", "--config", mf, "--model.embedding_dim", "1:04", "--print_config"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: model.embedding_dim: expected int, got '1:04'"
