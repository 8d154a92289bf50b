"""LightningCLI for ``recplug fit|validate|test|predict``: data->model links, the ranking evaluator, best-checkpoint
testing and one-line config errors. Imported only for those sub-commands (Lightning is slow to import)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from recplug.core.cli import EXTRA_COMMANDS
from recplug.core.errors import ConfigError


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
    expected = re.search(r"Expected an? (.+?)\. Got value: (.+)", message)
    if key and expected:  # e.g. 'Parser key "data.positives":' with the reason on the next line
        wanted, given = expected.groups()
        choices = re.fullmatch(r"typing\.Literal\[(.+)\]", wanted)
        wanted = f"one of {choices.group(1)}" if choices else re.sub(r"<class '(\w+)'>", r"\1", wanted)
        return f"{key}: expected {wanted}, got {given.strip()!r}"
    return summary


class RecplugArgumentParser(LightningArgumentParser):
    """Reports a bad config as one ``error:`` line naming the key (and the valid choices), then exits 2."""

    def error(self, message: str, ex: Exception | None = None) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {summarize_parser_error(message)}\n")
        sys.exit(2)


class RecplugCLI(LightningCLI):
    """LightningCLI with the data->model links, the ranking evaluator and best-checkpoint testing."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from recplug.core.evaluation import RankingEvaluator, TopKWriter

        parser.link_arguments("data.num_users", "model.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.num_items", apply_on="instantiate")
        parser.link_arguments("data.feature_dims", "model.feature_dims", apply_on="instantiate")
        parser.add_lightning_class_args(RankingEvaluator, "eval")
        parser.add_lightning_class_args(TopKWriter, "topk")  # acts only in `recplug predict`
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/recall@20",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
            }
        )

    def _parse_ckpt_path(self) -> None:
        """Open ``ckpt_path`` through recplug's checkpoint opener before Lightning's own pre-check (which reads
        local files only, with a traceback for a broken one): a URL is downloaded into a temporary file, a broken,
        foreign or unsafe file is refused in one line, and ``weights_only: false`` is refused."""
        from recplug.core.checkpoint import TRAINER_KEYWORDS, local_checkpoint, open_checkpoint, refuse_unsafe_loading

        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is not None:
            refuse_unsafe_loading(config.get("weights_only"))
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and str(ckpt_path) not in TRAINER_KEYWORDS:
                config["ckpt_path"] = str(local_checkpoint(ckpt_path))
                open_checkpoint(config["ckpt_path"])  # Lightning's pre-check below loads it again, unguarded
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with checkpoint loading routed through :class:`WeightsOnlyCheckpointIO`."""
        from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

        from recplug.core.checkpoint import WeightsOnlyCheckpointIO

        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is not TorchCheckpointIO:
            raise ConfigError(
                f"trainer.plugins: a custom CheckpointIO ({type(trainer.strategy.checkpoint_io).__name__}) is not "
                "supported: recplug opens checkpoints weights-only (docs/security.md)"
            )
        trainer.strategy.checkpoint_io = WeightsOnlyCheckpointIO()
        return trainer

    def before_instantiate_classes(self) -> None:
        """Refuse a checkpoint monitor the evaluator never logs; and resuming (``fit --ckpt_path
        .../checkpoints/last.ckpt``) keeps checkpointing in that folder, so the restored best-validation tracking
        stays valid."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        monitor = config.get("checkpoint.monitor")
        logged = {f"{stage}/{m}@{k}" for stage in ("val", "test") for m in config["eval.metrics"]
                  for k in config["eval.ks"]}
        if monitor and monitor.split("/")[0] in ("val", "test") and monitor not in logged:
            raise ConfigError(
                f"checkpoint.monitor is {monitor!r}, which the evaluator never logs "
                f"(eval.ks={config['eval.ks']}, eval.metrics={config['eval.metrics']}); change one of them"
            )
        ckpt_path = config.get("ckpt_path") if self.subcommand == "fit" else None
        if ckpt_path and not config.get("checkpoint.dirpath") and Path(ckpt_path).parent.name == "checkpoints":
            config["checkpoint.dirpath"] = str(Path(ckpt_path).parent)

    def before_fit(self) -> None:
        from recplug.core.provenance import hashed_config, provenance

        config = self.config[self.subcommand].as_dict()
        record = provenance(hashed_config(config), self.datamodule.data, config.get("seed_everything") or 0)
        self.model.run_provenance = record  # saved in every checkpoint
        print("plugins: " + ", ".join(record["plugins"]), file=sys.stderr)

    def after_fit(self) -> None:
        """Report test metrics at the best-validation epoch (the field's protocol)."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True)


# Lightning advice that does not apply: batches are slices of in-memory tensors (no worker processes needed),
# and the BPR iterable's __len__ is exact per process (it shards itself).
HARMLESS_WARNINGS = (
    r".*does not have many workers.*",
    r".*`IterableDataset` has `__len__` defined.*",
    r".*smaller than the logging interval.*",
)


def run_cli(args: list[str] | None, **kwargs: Any) -> RecplugCLI:
    """Build the LightningCLI on ``args`` (plugins are loaded first, so short class names resolve)."""
    from recplug.core.datamodule import RecDataModule
    from recplug.core.module import RecModule
    from recplug.core.plugins import load_plugins

    load_plugins()
    for harmless in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=harmless)
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
            # same seed -> same weights, metrics and top-K on CPU; on GPU, ops without a deterministic kernel warn
            "deterministic": "warn",
        },
        parser_kwargs={
            "description": "recplug: plugin-based recommendation. Also: "
            + "; ".join(f"recplug {k}: {v}" for k, v in EXTRA_COMMANDS.items())
        },
        args=args,
        **kwargs,
    )
