"""The embedded default dataset: reproducible from its generator, and realistic where it matters."""

from __future__ import annotations

import numpy as np
import torch

from recplug.core.data.formats.mmrec import read_mmrec
from recplug.datasets import default_path
from recplug.datasets.synthetic import generate


def test_shipped_files_equal_the_generator_output() -> None:
    shipped = read_mmrec(default_path())
    fresh = generate()
    assert shipped.content_hash() == fresh.content_hash(), "run: python -m recplug.datasets.synthetic"


def test_popularity_skew_and_varied_activity() -> None:
    data = read_mmrec(default_path())
    users, items = data.split("train")
    item_counts = torch.bincount(items, minlength=data.num_items).sort(descending=True).values
    head = item_counts[: data.num_items // 10].sum() / item_counts.sum()
    assert head > 0.3, f"top 10% of items hold only {head:.0%} of interactions"
    user_counts = torch.bincount(users, minlength=data.num_users)
    assert user_counts.max() >= 10 * user_counts.min()


def test_every_modality_predicts_who_likes_an_item() -> None:
    """Items consumed by the same user are more alike in each modality than random item pairs."""
    data = read_mmrec(default_path())
    indptr, items = data.user_csr("train")
    rng = np.random.default_rng(0)
    pairs = []
    for u in rng.choice(data.num_users, 500, replace=False):
        row = items[indptr[u] : indptr[u + 1]].numpy()
        a, b = rng.choice(row, 2, replace=False)
        pairs.append((a, b))
    left, right = torch.tensor(pairs).T
    random_left, random_right = torch.randint(data.num_items, (2, 2000), generator=torch.Generator().manual_seed(0))
    for modality, feats in data.features.items():
        f = torch.nn.functional.normalize(feats - feats.mean(0), dim=1)
        together = (f[left] * f[right]).sum(1).mean()
        apart = (f[random_left] * f[random_right]).sum(1).mean()
        assert together > apart + 0.1, f"{modality}: co-consumed {together:.3f} vs random {apart:.3f}"


def test_split_follows_mmrec_rules() -> None:
    data = read_mmrec(default_path())
    assert set(data.splits) == {"train", "valid", "test"}
    for split in ("valid", "test"):
        users = data.split(split)[0]
        # every user has exactly one valid/test item when small, ~10% otherwise; all users appear
        assert torch.unique(users).numel() == data.num_users
