"""Shared fixtures: a tiny multimodal dataset, an isolated cache, and a fresh plugin registry per test."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from recplug.core.dataset import InteractionData
from recplug.datasets.synthetic import generate

# caches (kNN graphs, downloads) never touch the user's home during tests
os.environ.setdefault("RECPLUG_CACHE", tempfile.mkdtemp(prefix="recplug-test-cache-"))


@pytest.fixture(scope="session")
def tiny_data() -> InteractionData:
    """A small synthetic multimodal dataset (200 users, 150 items, image and text features)."""
    return generate(num_users=200, num_items=150, num_topics=6, image_dim=12, text_dim=8, seed=7)


@pytest.fixture
def tiny_folder(tiny_data: InteractionData, tmp_path):
    """``tiny_data`` written as an MMRec folder."""
    from recplug.core.readers import write_mmrec

    return write_mmrec(tiny_data, tmp_path / "tiny")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
