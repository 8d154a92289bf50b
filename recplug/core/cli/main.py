"""The ``recplug`` command: LightningCLI for fit/validate/test/predict, plus recplug's own sub-commands.

    recplug fit --config configs/crane.yaml            # train, then test the best-validation checkpoint
    recplug fit --config configs/crane_rca.yaml --model.fusion ConcatFusion   # swap a plugin by short class name
    recplug plugins [--json]                           # what is loaded, from which distribution
    recplug data stats PATH                            # dataset statistics

Every command runs inside one error boundary (:func:`recplug.core.cli.boundary.report_errors`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from recplug.core.cli.boundary import report_errors
from recplug.core.cli.commands import COMMANDS
from recplug.core.errors import ConfigError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def run_cli(args: list[str] | None, **kwargs: Any) -> Any:
    """Build the LightningCLI (``RecplugCLI``) on ``args``; see :mod:`recplug.core.cli.lightning`."""
    from recplug.core.cli.lightning import run_cli as build

    return build(args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recplug`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        if not args:  # jsonargparse would name its four sub-commands only
            raise ConfigError(f"no command given; choose one of {', '.join([*LIGHTNING_COMMANDS, *COMMANDS])} "
                              "(recplug --help describes them)")
        if args[0] in COMMANDS:  # imported only now: each command's own imports stay out of --help
            return importlib.import_module(COMMANDS[args[0]].module).main(args[1:])
        if not args[0].startswith("-") and args[0] not in LIGHTNING_COMMANDS:  # jsonargparse names 4
            choices = ", ".join([*LIGHTNING_COMMANDS, *COMMANDS])
            raise ConfigError(f"unknown command {args[0]!r}; choose one of {choices}")
        from recplug.core.cli.lightning import with_recorded_config

        given = with_recorded_config(args)
        run_cli(argv if given == args else given)  # None: LightningCLI reads sys.argv itself
        return 0

    return report_errors(command)


if __name__ == "__main__":
    sys.exit(main())
