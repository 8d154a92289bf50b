"""The ``recplug`` command: LightningCLI for fit/validate/test/predict, plus recplug's own sub-commands.

    recplug fit --config configs/crane.yaml            # train, then test the best-validation checkpoint
    recplug fit --config configs/crane.yaml --model.fusion ConcatFusion   # swap a plugin by short class name
    recplug plugins [--json]                           # what is loaded, from which distribution
    recplug data stats PATH                            # dataset statistics

Every command runs inside one error boundary (:func:`report_errors`): recplug's own errors, and the errors
libraries raise on bad settings or resources (YAML, Lightning's misconfigurations, torch/numpy ``ValueError`` and
``RuntimeError``, files), end in one ``error:`` line and exit status 2; ``RECPLUG_DEBUG=1`` re-raises them with
the traceback. Other exceptions (``TypeError``, ``KeyError``, ...) are bugs and keep their traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, Callable

from recplug.core.errors import RecplugError, one_line

DEBUG_HINT = "(set RECPLUG_DEBUG=1 for the traceback)"
BUG_TYPES: tuple[type[BaseException], ...] = (NotImplementedError, RecursionError)
"""``RuntimeError`` subclasses that mean a bug, not a bad setting: never translated."""
LIBRARY_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("yaml", "YAMLError"),
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
)
"""``(module, class)`` of library errors translated when that library is loaded (never imported for the check)."""


def debugging() -> bool:
    """``RECPLUG_DEBUG`` is set (and not ``0``): errors are re-raised with their traceback."""
    return os.environ.get("RECPLUG_DEBUG", "") not in ("", "0")


def print_error(message: object, hint: bool = False) -> int:
    """Write ``error: <message>`` (and the RECPLUG_DEBUG hint) to stderr; return the exit status 2."""
    sys.stderr.write(f"error: {one_line(message)}\n" + (f"{DEBUG_HINT}\n" if hint else ""))
    return 2


def library_error(exc: BaseException) -> str | None:
    """One line for an error a library raised on a bad setting or resource, naming where it was raised;
    ``None`` for what looks like a bug (recplug's own user errors are :class:`RecplugError`)."""
    library = tuple(
        getattr(sys.modules[module], name) for module, name in LIBRARY_ERROR_TYPES if module in sys.modules
    )
    settings = (ValueError, RuntimeError, OSError, MemoryError, OverflowError)
    if isinstance(exc, BUG_TYPES) or not isinstance(exc, settings + library):
        return None
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    origin = frame.tb_frame.f_globals.get("__name__", "?") if frame is not None else "?"
    return f"{one_line(exc) or type(exc).__name__} ({type(exc).__name__} in {origin})"


def report_errors(command: Callable[[], int]) -> int:
    """Run ``command``; a :class:`RecplugError` or a library's error on bad settings becomes one ``error:`` line
    and exit status 2 (with ``RECPLUG_DEBUG=1``, it is re-raised with its traceback)."""
    try:
        return command()
    except RecplugError as exc:
        if debugging():
            raise
        return print_error(exc)
    except Exception as exc:
        line = library_error(exc)
        if line is None or debugging():
            raise
        return print_error(line, hint=True)

EXTRA_COMMANDS = {
    "plugins": "list loaded plugins: name, distribution, version, hooks, components",
    "data": "dataset tools: `recplug data stats PATH`",
    "features": "encode item content into <modality>_feat.npy: `recplug features text --items T ...`",
    "report": "training curves and metrics table of a run: `recplug report RUN_DIR [--out DIR]`",
    "ablate": "run variants x seeds, report mean ± std: `recplug ablate --config C --variants V --seeds 0 1`",
    "tune": "tune hyper-parameters on validation (Optuna): `recplug tune --config C --space S --trials N`",
}


def _plugins_command(argv: list[str]) -> int:
    import argparse

    from recplug.core.model.plugins import load_plugins

    parser = argparse.ArgumentParser(prog="recplug plugins", description=EXTRA_COMMANDS["plugins"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--all", action="store_true", help="include skipped and disabled plugins")
    args = parser.parse_args(argv)
    records = [p for p in load_plugins().values() if args.all or p.status == "active"]
    if args.json:
        print(json.dumps([p.as_dict() for p in records], indent=2))
        return 0
    for p in records:
        status = "" if p.status == "active" else f"  [{p.status}{': ' + p.error if p.error else ''}]"
        print(f"{p.name}  ({p.distribution} {p.version}){status}")
        if p.hooks:
            print(f"    hooks:      {', '.join(p.hooks)}")
        if p.components:
            print(f"    components: {', '.join(p.components)}")
    return 0


def _lazy(module: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` of a sub-command module, imported only when that sub-command runs."""
    return lambda argv: importlib.import_module(module).main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "plugins": _plugins_command,
    "data": _lazy("recplug.core.cli.data"),
    "features": _lazy("recplug.core.cli.features"),
    "report": _lazy("recplug.core.cli.report"),
    "ablate": _lazy("recplug.core.cli.ablate"),
    "tune": _lazy("recplug.core.cli.tune"),
}


def run_cli(args: list[str] | None, **kwargs: Any) -> Any:
    """Build the LightningCLI (``RecplugCLI``) on ``args``; see :mod:`recplug.core.cli.lightning`."""
    from recplug.core.cli.lightning import run_cli as build

    return build(args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recplug`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]](args[1:])
        run_cli(argv)  # None: LightningCLI reads sys.argv itself
        return 0

    return report_errors(command)


if __name__ == "__main__":
    sys.exit(main())
