"""Generator of recplug's embedded default dataset (a synthetic multimodal catalogue).

Regenerate the shipped files with ``python -m recplug.datasets.synthetic`` (deterministic: a test checks that
the output equals the shipped files).

The generative story, chosen so that item content carries real, partial signal:

* Items have a latent taste vector ``z_i`` (``latent_dim`` dims) drawn around one of ``num_topics`` topic
  centres, and a popularity bias following a Zipf-like law (a few head items, a long tail).
* Two modalities observe ``z_i`` differently: ``image`` sees the first 2/3 of the latent dims through a random
  non-linear map, ``text`` the last 2/3 through another, each with its own noise. Neither alone recovers the
  taste; together they do (which is what cross-modal fusion should exploit).
* Users have a taste vector mixing one or two topic centres, and an activity drawn from a log-normal (so most
  users have few interactions and a few have many; at least 5 each, like the 5-core Amazon sets).
* Interactions are drawn without replacement from ``softmax(z_u · z_i / temperature + popularity_i)``.
* The split is MMRec-like (:func:`per_user_split`): per user, shuffled; users with fewer than 10 interactions
  get n-2/1/1 train/valid/test, the others about 80/10/10 (``round(0.1 n)`` valid and test).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recplug.core.data.dataset import InteractionData


def per_user_split(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-user labels 0/1/2 (train/valid/test) for interactions grouped by user, at random: 1 valid and 1 test
    below 10 interactions, else ``round(0.1 n)`` each. Close to MMRec's rule, not equal to it (MMRec floors 20%
    and floors half of that for valid: ``recplug data convert --split random``); kept as the embedded default
    dataset was generated with it."""
    labels = []
    for n in counts:
        if n < 10:
            n_valid = n_test = 1
        else:
            n_valid = n_test = int(round(0.1 * n))
        user_labels = np.array([0] * (n - n_valid - n_test) + [1] * n_valid + [2] * n_test)
        labels.append(user_labels[rng.permutation(n)])
    return np.concatenate(labels)


def generate(
    num_users: int = 4000,
    num_items: int = 2500,
    num_topics: int = 24,
    latent_dim: int = 24,
    image_dim: int = 128,
    text_dim: int = 96,
    mean_interactions: float = 14.0,
    temperature: float = 0.2,
    popularity_strength: float = 4.5,
    feature_noise: float = 0.6,
    seed: int = 2026,
) -> InteractionData:
    """Draw the dataset described in the module docstring."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_topics, latent_dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    item_topic = rng.integers(num_topics, size=num_items)
    z_items = centres[item_topic] + 0.45 * rng.normal(size=(num_items, latent_dim)) / np.sqrt(latent_dim)
    popularity = -popularity_strength * np.log(rng.permutation(num_items) + 1.0) / np.log(num_items)

    user_topics = rng.integers(num_topics, size=(num_users, 2))
    mix = rng.uniform(0.5, 1.0, size=(num_users, 1))
    z_users = mix * centres[user_topics[:, 0]] + (1 - mix) * centres[user_topics[:, 1]]
    z_users += 0.3 * rng.normal(size=(num_users, latent_dim)) / np.sqrt(latent_dim)
    activity = np.clip(np.round(rng.lognormal(np.log(mean_interactions) - 0.5, 0.8, size=num_users)), 5, 200)

    logits = z_users @ z_items.T / temperature + popularity[None, :]
    rows, cols = [], []
    for u in range(num_users):
        # Gumbel top-k = sampling without replacement proportionally to softmax(logits)
        keys = logits[u] + rng.gumbel(size=num_items)
        # sorted: argpartition's order is not specified, and differs between CPUs (numpy's SIMD partition)
        chosen = np.sort(np.argpartition(-keys, int(activity[u]))[: int(activity[u])])
        rows.append(np.full(chosen.size, u))
        cols.append(rng.permutation(chosen))
    users, items = np.concatenate(rows), np.concatenate(cols)
    labels = per_user_split(activity.astype(int), rng)

    # every item must occur somewhere so ids stay contiguous; unseen items are given to a random user's train
    unseen = np.setdiff1d(np.arange(num_items), items)
    if unseen.size:
        users = np.concatenate([users, rng.integers(num_users, size=unseen.size)])
        items = np.concatenate([items, unseen])
        labels = np.concatenate([labels, np.zeros(unseen.size, dtype=int)])

    def observe(dims: slice, out_dim: int) -> np.ndarray:
        part = z_items[:, dims]
        hidden = np.tanh(part @ rng.normal(size=(part.shape[1], 2 * out_dim)) / np.sqrt(part.shape[1]) * 2.0)
        feats = hidden @ rng.normal(size=(2 * out_dim, out_dim)) / np.sqrt(2 * out_dim)
        feats += feature_noise * rng.normal(size=feats.shape) * feats.std()
        return feats.astype(np.float32)

    third = latent_dim // 3
    features = {
        "image": torch.from_numpy(observe(slice(0, 2 * third), image_dim)),
        "text": torch.from_numpy(observe(slice(third, latent_dim), text_dim)),
    }
    splits = {}
    for label, split in enumerate(("train", "valid", "test")):
        mask = labels == label
        splits[split] = (torch.from_numpy(users[mask]).long(), torch.from_numpy(items[mask]).long())
    return InteractionData(
        name="default", num_users=num_users, num_items=num_items, splits=splits, features=features,
        source="recplug.datasets.synthetic",
    )


def main(argv: list[str] | None = None) -> None:
    from recplug.core.data.formats.mmrec import write_mmrec
    from recplug.datasets import default_path

    parser = argparse.ArgumentParser(description="Regenerate recplug's embedded default dataset.")
    parser.add_argument("--out", type=Path, default=default_path())
    args = parser.parse_args(argv)
    write_mmrec(generate(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
