"""recplug's environment variables: every on/off one reads ``0``/``false``/``no``/``off`` as off and refuses a value
that is no flag, naming it (``RECPLUG_STRICT_PLUGINS=0`` used to turn strict mode on); ``RECPLUG_LOAD_PLUGINS``
names only installed entry points, or says which it does not."""

from __future__ import annotations

import importlib.metadata
import re
import types
import warnings
from pathlib import Path

import pytest

from recplug.core.cli.boundary import debugging, report_errors
from recplug.core.errors import ConfigError
from recplug.core.model import plugins
from recplug.core.model.plugins import RecplugPluginManager, load_plugins
from recplug.core.ops.environment import FLAGS, env_flag

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " 1 "])
def test_env_flag_on(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLUG_X", value)
    assert env_flag("RECPLUG_X") is True


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "OFF", None])
def test_env_flag_off(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("RECPLUG_X", raising=False)
    else:
        monkeypatch.setenv("RECPLUG_X", value)
    assert env_flag("RECPLUG_X") is False


@pytest.mark.parametrize("name", FLAGS)
def test_a_value_that_is_no_flag_is_refused_naming_the_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ConfigError, match=f"^{name} must be 1 or 0 \\(true/false, yes/no, on/off\\), got 'maybe'$"):
        env_flag(name)


def test_every_variable_read_by_env_flag_is_a_known_flag() -> None:
    """:func:`check_flags` refuses the :data:`FLAGS` up front: a variable read by ``env_flag`` but missing there
    would be refused only where it is read (``RECPLUG_STRICT_CHECKPOINTS``: only when a checkpoint's data differs)."""
    read = set()
    for source in (ROOT / "recplug").rglob("*.py"):
        if source.name == "environment.py":  # env_flag's own module
            continue
        text = source.read_text()
        constants = dict(re.findall(r'^(\w+) = "(RECPLUG_\w+)"$', text, flags=re.M))
        for argument in re.findall(r"\benv_flag\(([^)]*)\)", text):
            read.add(constants.get(argument, argument.strip('"')))
    assert read and read <= set(FLAGS), read - set(FLAGS)


@pytest.mark.parametrize("name", FLAGS)
def test_a_bad_flag_is_refused_before_the_command(name: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Even one the command would read only on a rare path (``RECPLUG_STRICT_CHECKPOINTS`` when a checkpoint's data
    differs: ``=bogus`` used to pass silently)."""
    monkeypatch.setenv(name, "bogus")
    ran = []
    assert report_errors(lambda: ran.append(1) or 0) == 2 and not ran
    assert capsys.readouterr().err == f"error: {name} must be 1 or 0 (true/false, yes/no, on/off), got 'bogus'\n"


# ---------------------------------------------------------------------------- RECPLUG_DEBUG in the boundary
def failing() -> int:
    raise ConfigError("bad setting")


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_recplug_debug_off_words_keep_the_one_line(value: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RECPLUG_DEBUG", value)
    assert not debugging()
    assert report_errors(failing) == 2
    assert capsys.readouterr().err == "error: bad setting\n"


@pytest.mark.parametrize("value", ["yes", "true"])
def test_recplug_debug_on_words_re_raise(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLUG_DEBUG", value)
    with pytest.raises(ConfigError, match="bad setting"):
        report_errors(failing)


def test_a_bad_recplug_debug_is_refused_before_the_command(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RECPLUG_DEBUG", "maybe")
    ran = []
    assert report_errors(lambda: ran.append(1) or 0) == 2 and not ran
    assert capsys.readouterr().err == (
        "error: RECPLUG_DEBUG must be 1 or 0 (true/false, yes/no, on/off), got 'maybe'\n")
    assert not debugging()  # read elsewhere (the Lightning parser's errors): off, so errors keep their one line


# ---------------------------------------------------------------------------- the plugin variables
class EntryPoint:
    """An entry point of the ``recplug`` group naming an importable module."""

    group = "recplug"

    def __init__(self, name: str, module: types.ModuleType) -> None:
        self.name, self.value, self.module = name, module.__name__, module

    def load(self) -> types.ModuleType:
        return self.module


class Distribution:
    def __init__(self, name: str, entry_points: list[EntryPoint]) -> None:
        self.metadata, self.version, self.entry_points = {"Name": name}, "1.0", entry_points


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    """One installed distribution with two (empty) entry-point plugin modules, ``alpha`` and ``beta``."""
    dists = [Distribution("recplug-extra", [EntryPoint(name, types.ModuleType(f"recplug_test_{name}"))
                                            for name in ("alpha", "beta")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: dists)
    for name in (*FLAGS, "RECPLUG_LOAD_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    yield
    monkeypatch.undo()
    load_plugins(reload=True)  # leave the real registry behind for other tests


def status(loaded: dict[str, plugins.LoadedPlugin]) -> dict[str, str]:
    return {name: loaded[name].status for name in ("alpha", "beta") if name in loaded}


@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_autoload_off_words_load_the_entry_points(value: str, installed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", value)
    assert status(load_plugins(reload=True)) == {"alpha": "active", "beta": "active"}
    monkeypatch.setenv("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", "yes")
    assert status(load_plugins(reload=True)) == {}


def test_strict_and_trace_off_words_are_off(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "fak")
    monkeypatch.setenv("RECPLUG_STRICT_PLUGINS", "false")
    with pytest.warns(UserWarning, match="fak"):  # a warning, not strict mode's error
        load_plugins(reload=True)
    monkeypatch.setenv("RECPLUG_TRACE_PLUGINS", "0")
    assert not RecplugPluginManager().trace.root._writer
    monkeypatch.setenv("RECPLUG_TRACE_PLUGINS", "on")
    assert RecplugPluginManager().trace.root._writer


def test_an_unknown_name_in_load_plugins_is_named_with_the_installed_ones(
    installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "alpha, fak")
    with pytest.warns(UserWarning, match=r"^recplug: RECPLUG_LOAD_PLUGINS names 'fak', which no installed "
                                         r"entry-point plugin has \(installed: alpha, beta\)$"):
        loaded = load_plugins(reload=True)
    assert status(loaded) == {"alpha": "active", "beta": "disabled"}
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "")
    with pytest.warns(UserWarning, match=r"RECPLUG_LOAD_PLUGINS is empty, so no entry-point plugin is loaded"):
        assert status(load_plugins(reload=True)) == {"alpha": "disabled", "beta": "disabled"}
    monkeypatch.setenv("RECPLUG_STRICT_PLUGINS", "1")
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "fak")
    with pytest.raises(ConfigError, match=r"^RECPLUG_LOAD_PLUGINS names 'fak'.*\(installed: alpha, beta\)$"):
        load_plugins(reload=True)
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "alpha,beta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every name installed: nothing to say
        assert status(load_plugins(reload=True)) == {"alpha": "active", "beta": "active"}


def test_load_plugins_under_disabled_autoload_is_said_to_be_ignored(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "alpha")
    with pytest.warns(UserWarning, match=r"RECPLUG_LOAD_PLUGINS='alpha' is ignored: RECPLUG_DISABLE_PLUGIN_AUTOLOAD"):
        assert status(load_plugins(reload=True)) == {}


def test_a_bad_plugin_flag_is_one_line_from_the_cli(installed, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from recplug.core.cli.main import main

    monkeypatch.setenv("RECPLUG_STRICT_PLUGINS", "maybe")
    monkeypatch.setattr(plugins, "_LOADED", None)
    assert main(["plugins"]) == 2
    assert capsys.readouterr().err == (
        "error: RECPLUG_STRICT_PLUGINS must be 1 or 0 (true/false, yes/no, on/off), got 'maybe'\n")


def test_a_bad_trace_flag_is_its_own_error_not_a_built_in_plugins(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each plugin's scratch manager reads ``RECPLUG_TRACE_PLUGINS``: ``=2`` failed the first built-in plugin."""
    monkeypatch.setenv("RECPLUG_TRACE_PLUGINS", "2")
    with pytest.raises(ConfigError, match=r"^RECPLUG_TRACE_PLUGINS must be 1 or 0 .*got '2'$"):
        load_plugins(reload=True)


def test_a_misspelt_variable_is_warned_of_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RECPLUG_STRICT_PLUGIN=1`` (no S) was ignored without a word (fuzz round 5)."""
    from recplug.core.ops.environment import VARIABLES, check_flags

    monkeypatch.setenv("RECPLUG_STRICT_PLUGIN", "1")
    with pytest.warns(UserWarning, match="^RECPLUG_STRICT_PLUGIN is no variable recplug reads; did you mean "
                                         "RECPLUG_STRICT_PLUGINS\\?$"):
        check_flags()
    monkeypatch.delenv("RECPLUG_STRICT_PLUGIN")
    for name in VARIABLES:
        monkeypatch.setenv(name, "0" if name in FLAGS else "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_flags()
