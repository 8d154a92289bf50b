"""The ``recplug`` command: LightningCLI for fit/validate/test/predict, plus recplug's own sub-commands.

    recplug fit --config configs/crane.yaml            # train, then test the best-validation checkpoint
    recplug fit --config configs/crane.yaml --model.fusion ConcatFusion   # swap a plugin by short class name
    recplug plugins [--json]                           # what is loaded, from which distribution
    recplug data stats PATH                            # dataset statistics
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, Callable

from recplug.core.errors import RecplugError

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

    from recplug.core.plugins import load_plugins

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
    "data": _lazy("recplug.core.data_cli"),
    "features": _lazy("recplug.core.features"),
    "report": _lazy("recplug.core.report"),
    "ablate": _lazy("recplug.core.ablate"),
    "tune": _lazy("recplug.core.tune"),
}


def run_cli(args: list[str] | None, **kwargs: Any) -> Any:
    """Build the LightningCLI (``RecplugCLI``) on ``args``; see :mod:`recplug.core.lightning_cli`."""
    from recplug.core.lightning_cli import run_cli as build

    return build(args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recplug`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]](args[1:])
        run_cli(argv)  # None: LightningCLI reads sys.argv itself
    except RecplugError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
