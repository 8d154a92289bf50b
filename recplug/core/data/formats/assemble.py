"""Label-coded columns (0/1/2 = train/valid/test) to an :class:`InteractionData`, with the checks every format shares:
contiguous 0-based ids, and notes (never drops) on repeated pairs."""

from __future__ import annotations

import numpy as np
import torch

from recplug.core.data.dataset import SPLITS, DataError, InteractionData

def contiguous_count(ids: np.ndarray, field: str, where: str) -> int:
    """Number of distinct ids, checking they are exactly ``0..max`` (the format's contract)."""
    count = int(ids.max()) + 1
    if count > ids.size:
        # more ids than rows, so one is missing: find it by sorting, never with an array as long as the max id
        unique = np.unique(ids)
        gap: int | None = int(np.flatnonzero(unique != np.arange(unique.size))[0])  # some id below max is absent
    else:
        absent = np.flatnonzero(np.bincount(ids, minlength=count) == 0)
        gap = int(absent[0]) if absent.size else None
    if gap is not None:
        raise DataError(
            f"{where}: {field} values are not contiguous: id {gap} never occurs (max {count - 1}); "
            "raw ids belong in a raw log (recplug data convert)"
        )
    return count


def duplicate_notes(splits: dict[str, tuple[torch.Tensor, torch.Tensor]], num_items: int) -> list[str]:
    """Report (never drop) repeated (user, item) pairs within a split and pairs shared by train and test."""
    notes, keys = [], {}
    for split, (users, items) in splits.items():
        keys[split] = np.sort(users.numpy() * num_items + items.numpy())
        repeats = int((keys[split][1:] == keys[split][:-1]).sum())
        if repeats:
            notes.append(f"{split}: {repeats} repeated (user, item) pairs kept as they are")
    if "test" in keys and keys["train"].size:
        train, test = keys["train"], keys["test"]
        at = np.minimum(np.searchsorted(train, test), train.size - 1)
        shared = int((train[at] == test).sum())
        if shared:
            notes.append(f"test: {shared} (user, item) pairs also occur in train (kept; they are masked at test)")
    return notes


def assemble(
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    num_users: int,
    num_items: int,
    features: dict[str, torch.Tensor],
    notes: list[str],
    source: str,
    user_ids: list[str] | None = None,
    item_ids: list[str] | None = None,
) -> InteractionData:
    """Assemble an :class:`InteractionData` from label-coded columns (0/1/2 = train/valid/test)."""
    splits = {}
    for label, split in enumerate(SPLITS):
        mask = labels == label
        if split == "valid" and not mask.any():
            continue
        splits[split] = (torch.from_numpy(users[mask].astype(np.int64)), torch.from_numpy(items[mask].astype(np.int64)))
    notes = notes + [n for n in duplicate_notes(splits, num_items) if n not in notes]
    return InteractionData(
        name=name, num_users=num_users, num_items=num_items, splits=splits, features=features,
        user_ids=user_ids, item_ids=item_ids, notes=notes, source=source,
    )
