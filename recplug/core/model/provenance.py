"""Provenance of a result: which code, plugins, config, data and seed produced it.

Every number recplug reports (``recplug ablate`` results, checkpoints) carries this record, so a table in a
paper can be traced back to the exact run: recplug and plugin distribution versions, a sha256 of the resolved
configuration, the dataset's content hash, the seed, and the library versions.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from typing import Any, Iterable

import yaml

from recplug.core.data.dataset import InteractionData

# config keys that only say where outputs go (or which seed): left out of the config hash
LOCATION_KEYS = (
    "config", "ckpt_path", "seed_everything", "data.seed", "trainer.default_root_dir", "trainer.logger",
    "trainer.enable_progress_bar", "trainer.enable_model_summary",
)


def canonical_json(config: dict[str, Any] | str) -> str:
    """A canonical text of a config: sorted keys, compact separators; a string is parsed as YAML first.

    Two configs that differ only in key order, YAML formatting or comments give the same text. Values that are
    not JSON types (paths, enums) are written with ``str``.
    """
    if isinstance(config, str):
        config = yaml.safe_load(config)
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any] | str) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def provenance(config: dict[str, Any] | str, data: InteractionData, seed: int) -> dict[str, Any]:
    """The provenance record of one run.

    It reads only its arguments and the already-loaded plugin registry; it writes nothing.

    Args:
        config: the resolved configuration: a dict, hashed without the keys that only say where outputs go
            (:func:`hashed_config`), so equal experiments hash equally; or YAML text, hashed as it is.
        data: the dataset the run trained and evaluated on.
        seed: the run's seed.

    Returns:
        ``{"recplug", "plugins", "config_sha256", "data_sha256", "data", "seed", "torch", "pytorch_lightning",
        "python", "created"}``: ``plugins`` lists ``"distribution version"`` of every active plugin module.
    """
    import pytorch_lightning
    import torch

    from recplug import __version__
    from recplug.core.model.plugins import plugin_provenance

    return {
        "recplug": __version__,
        "plugins": plugin_provenance(),
        "config_sha256": config_hash(hashed_config(config) if isinstance(config, dict) else config),
        "data_sha256": data.content_hash(),
        "data": data.name,
        "seed": int(seed),
        "torch": str(torch.__version__),  # a TorchVersion: plain str keeps checkpoints weights_only-loadable
        "pytorch_lightning": pytorch_lightning.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without :data:`LOCATION_KEYS`, so the seeds of one variant share a config hash."""
    return without_keys(config, LOCATION_KEYS)


def without_keys(config: dict[str, Any], dotted_keys: Iterable[str]) -> dict[str, Any]:
    """A plain (JSON) copy of ``config`` without the ``dotted_keys`` (``"trainer.logger"``) it holds."""
    trimmed = json.loads(json.dumps(config, default=str))
    for dotted in dotted_keys:
        *parents, leaf = dotted.split(".")
        node = trimmed
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return trimmed
