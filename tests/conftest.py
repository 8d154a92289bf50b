"""Shared fixtures: recplug's own test helpers (``recplug.testing``: ``tiny_data``, ``tiny_folder``, a temporary
cache), plus a fixed torch seed per test."""

from __future__ import annotations

import pytest
import torch

from recplug.testing import recplug_temporary_cache, tiny_data, tiny_folder  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
