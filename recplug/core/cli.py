"""The ``recplug`` command: LightningCLI for fit/validate/test/predict, plus recplug's own sub-commands.

    recplug fit --config configs/crane.yaml            # train, then test the best-validation checkpoint
    recplug fit --config configs/crane.yaml --model.fusion ConcatFusion   # swap a plugin by short class name
    recplug plugins [--json]                           # what is loaded, from which distribution
    recplug data stats PATH                            # dataset statistics
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from recplug.core import features, report
from recplug.core.errors import RecplugError

EXTRA_COMMANDS = {
    "plugins": "list loaded plugins: name, distribution, version, hooks, components",
    "data": "dataset tools: `recplug data stats PATH`",
    "features": "encode item content into <modality>_feat.npy: `recplug features text --items T ...`",
    "report": "training curves and metrics table of a run: `recplug report RUN_DIR [--out DIR]`",
}


COMPONENT_KEYS = {
    "model.fusion": "FusionModule",
    "model.encoders": "GraphEncoder",
    "model.combiner": "Combiner",
    "model.aux_losses": "AuxLoss",
}


def component_choices(base_name: str) -> list[str]:
    """Short names of every loaded, concrete subclass of a component base class."""
    import inspect

    from recplug.core import components

    found, stack = set(), [getattr(components, base_name)]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):
            found.add(cls.__name__)
    return sorted(found)


def summarize_parser_error(message: str) -> str:
    """One line out of jsonargparse's (often nested, multi-line) message, naming the key and the choices."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    summary = lines[0] if lines else "invalid arguments"
    match = re.search(r'Parser key "([^"]+)"', summary)
    key = match.group(1) if match else ""
    base = next((b for k, b in COMPONENT_KEYS.items() if key == k or key.startswith(k + ".")), None)
    if base is not None:
        value = re.search(r"Given value: (.+)", message)
        shown = f" {value.group(1).strip()!r}" if value else ""
        return f"{key}: unknown or invalid plugin class{shown}; choose one of: {', '.join(component_choices(base))}"
    return summary


class RecplugArgumentParser(LightningArgumentParser):
    """Reports a bad config as one ``error:`` line naming the key (and the valid choices), then exits 2."""

    def error(self, message: str, ex: Exception | None = None) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {summarize_parser_error(message)}\n")
        sys.exit(2)


class RecplugCLI(LightningCLI):
    """LightningCLI with the data->model links, the ranking evaluator and best-checkpoint testing."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from recplug.core.evaluation import RankingEvaluator

        parser.link_arguments("data.num_users", "model.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.num_items", apply_on="instantiate")
        parser.link_arguments("data.feature_dims", "model.feature_dims", apply_on="instantiate")
        parser.add_lightning_class_args(RankingEvaluator, "eval")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/recall@20",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
            }
        )

    def before_fit(self) -> None:
        from recplug.core.plugins import plugin_provenance

        print("plugins: " + ", ".join(plugin_provenance()), file=sys.stderr)

    def after_fit(self) -> None:
        """Report test metrics at the best-validation epoch (the field's protocol)."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True)


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


def _data_command(argv: list[str]) -> int:
    from recplug.core.data_cli import main as data_main

    return data_main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "plugins": _plugins_command,
    "data": _data_command,
    "features": features.main,
    "report": report.main,
}


def run_cli(args: list[str] | None, **kwargs: Any) -> RecplugCLI:
    """Build the LightningCLI on ``args`` (plugins are loaded first, so short class names resolve)."""
    from recplug.core.datamodule import RecDataModule
    from recplug.core.module import RecModule
    from recplug.core.plugins import load_plugins

    load_plugins()
    return RecplugCLI(
        RecModule,
        RecDataModule,
        parser_class=RecplugArgumentParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            "max_epochs": 100,
            "num_sanity_val_steps": 0,
        },
        parser_kwargs={
            "description": "recplug: plugin-based recommendation. Also: "
            + "; ".join(f"recplug {k}: {v}" for k, v in EXTRA_COMMANDS.items())
        },
        args=args,
        **kwargs,
    )


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
