"""recplug: a plugin-based PyTorch Lightning framework for multimodal and graph-based recommendation.

This module is the public API: a plugin, a notebook or a script imports what it needs from here
(``from recplug import hookimpl, AuxLoss, ConfigError``), and the built-in plugins from their packages
(``from recplug.plugins.graphs import UserItemGraph``). ``recplug.core`` is the implementation: its modules may
move between releases, these names do not. Names whose modules import Lightning load on first use (PEP 562),
so ``import recplug`` stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from recplug.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # components and the records they exchange
    "RecComponent": "recplug.core.model.components",
    "FusionModule": "recplug.core.model.components",
    "GraphEncoder": "recplug.core.model.components",
    "Combiner": "recplug.core.model.components",
    "AuxLoss": "recplug.core.model.components",
    "GraphView": "recplug.core.model.types",
    "BPRBatch": "recplug.core.model.types",
    "ModelOutput": "recplug.core.model.types",
    # the skeleton and its data
    "RecModule": "recplug.core.model.module",
    "RecDataModule": "recplug.core.data.datamodule",
    "InteractionData": "recplug.core.data.dataset",
    "load_dataset": "recplug.core.data.resolve",
    "RankingEvaluation": "recplug.core.eval.evaluator",
    # sampled training (model.sampling) and what an encoder needs to support it
    "Sampling": "recplug.core.model.sampled",
    "LazyAdam": "recplug.core.model.sampled",
    "NodeTables": "recplug.core.model.sampled",
    "SampledBatch": "recplug.core.model.types",
    "NodePlan": "recplug.core.model.types",
    "NeighbourSampler": "recplug.core.ops.sampling",
    # recommendations out of a trained checkpoint (notebooks; `recplug export` and `recplug serve` use it)
    "Recommender": "recplug.core.cli.recommender",
    "Ranked": "recplug.core.cli.recommender",
    # errors, and the range checks that raise them where a value enters
    "RecplugError": "recplug.core.errors",
    "ConfigError": "recplug.core.errors",
    "DataError": "recplug.core.errors",
    "PluginError": "recplug.core.errors",
    "CardinalityError": "recplug.core.errors",
    "InvalidArgument": "recplug.core.errors",
    "CheckpointError": "recplug.core.model.checkpoint",
    "check_number": "recplug.core.errors",
    "check_layers": "recplug.core.errors",
    "check_probability": "recplug.core.errors",
    "check_count": "recplug.core.errors",
    "check_flag": "recplug.core.errors",
    "check_name": "recplug.core.errors",
    "check_weights": "recplug.core.errors",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'recplug' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from recplug.core.cli.recommender import Ranked, Recommender
    from recplug.core.data.datamodule import RecDataModule
    from recplug.core.data.dataset import InteractionData
    from recplug.core.data.resolve import load_dataset
    from recplug.core.eval.evaluator import RankingEvaluation
    from recplug.core.errors import (
        CardinalityError, ConfigError, DataError, InvalidArgument, PluginError, RecplugError, check_count, check_flag,
        check_layers, check_name, check_number, check_probability, check_weights,
    )
    from recplug.core.model.checkpoint import CheckpointError
    from recplug.core.model.components import AuxLoss, Combiner, FusionModule, GraphEncoder, RecComponent
    from recplug.core.model.module import RecModule
    from recplug.core.model.sampled import LazyAdam, NodeTables, Sampling
    from recplug.core.model.types import BPRBatch, GraphView, ModelOutput, NodePlan, SampledBatch
    from recplug.core.ops.sampling import NeighbourSampler
