"""Provenance records: stable config hashes, the data's content hash, versions and the seed."""

from __future__ import annotations

import dataclasses

import torch

from recplug import __version__
from recplug.core.data.dataset import InteractionData
from recplug.core.model.provenance import canonical_json, config_hash, provenance

CONFIG = {"model": {"embedding_dim": 64, "fusion": {"class_path": "ConcatFusion"}}, "data": {"path": "default"}}
SAME_AS_YAML = """
# comments and key order do not matter
data: {path: default}
model:
  fusion:
    class_path: ConcatFusion
  embedding_dim: 64
"""


def test_config_hash_ignores_order_and_formatting_but_not_values() -> None:
    assert config_hash(CONFIG) == config_hash(SAME_AS_YAML) == config_hash(dict(reversed(list(CONFIG.items()))))
    assert len(config_hash(CONFIG)) == 64
    changed = {**CONFIG, "model": {**CONFIG["model"], "embedding_dim": 32}}
    assert config_hash(changed) != config_hash(CONFIG)
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_record_names_code_plugins_config_data_and_seed(tiny_data: InteractionData) -> None:
    record = provenance(CONFIG, tiny_data, seed=3)
    assert record["recplug"] == __version__
    assert f"recplug {__version__}" in record["plugins"]
    assert record["config_sha256"] == config_hash(CONFIG)
    assert record["data_sha256"] == tiny_data.content_hash() and record["seed"] == 3
    assert record["torch"] == torch.__version__ and {"pytorch_lightning", "python", "created"} <= set(record)


def test_data_hash_changes_with_the_data(tiny_data: InteractionData) -> None:
    users, items = tiny_data.splits["test"]
    edited = dataclasses.replace(tiny_data, splits={**tiny_data.splits, "test": (users, items.flip(0))})
    assert provenance(CONFIG, edited, 0)["data_sha256"] != provenance(CONFIG, tiny_data, 0)["data_sha256"]
