"""LightGCN's format (He et al., ``kuandeng/LightGCN``; the NGCF/GRecX datasets): ``train.txt`` / ``test.txt``
(optional ``valid.txt``), one line per user, ``uid item item ...``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recplug.core.data.dataset import SPLITS, DataError, InteractionData
from recplug.core.data.formats.assemble import assemble, contiguous_count
from recplug.core.data.formats.features import folder_features
from recplug.core.data.formats.text import check_file, parse_ints, read_bytes, whitespace_tokens

LIGHTGCN_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


@dataclass
class _UserLines:
    """One LightGCN file: the user of every line and the (user, item) pairs it lists."""

    path: Path
    line_users: np.ndarray
    line_numbers: np.ndarray
    users: np.ndarray
    items: np.ndarray


def _read_user_lines(path: Path) -> _UserLines:
    """Parse ``uid item item ...`` lines (LightGCN ``utility/load_data.py``) with numpy over the bytes.

    Unlike LightGCN's and GRecX's loaders (whose try/except silently skips a test line such as ``"13647 "``),
    a line with a user and no items is kept as that user with no items in this file.
    """
    buf = read_bytes(path)
    starts, ends, line = whitespace_tokens(buf)
    if starts.size == 0:
        raise DataError(f"{path}: no lines")
    first = np.ones(starts.size, dtype=bool)
    first[1:] = line[1:] != line[:-1]
    values = parse_ints(path, buf, starts, ends, line, lambda k: "user id" if first[k] else "item id")
    heads = np.flatnonzero(first)
    per_line = np.diff(np.append(heads, starts.size)) - 1
    return _UserLines(path, values[heads], line[heads], np.repeat(values[heads], per_line), values[~first])


def read_lightgcn(
    folder: str | Path,
    train_file: str = LIGHTGCN_FILES["train"],
    test_file: str = LIGHTGCN_FILES["test"],
    valid_file: str | None = None,
    feature_files: dict[str, str] | None = None,
) -> InteractionData:
    """Read a LightGCN dataset folder (``train.txt``, ``test.txt``; Gowalla, Yelp2018, Amazon-Book).

    Args:
        folder: the dataset folder.
        train_file, test_file: file names inside the folder.
        valid_file: a validation file in the same format; default: ``valid.txt`` when present. Without one,
            :func:`carve_validation` (``RecDataModule(valid_ratio=...)``) draws it from train.
        feature_files: ``{modality: file name}`` of ``.npy`` item features; default: every ``*_feat.npy``.

    ``num_users``/``num_items`` are ``max id + 1`` over every file (GRecX), and every id below must occur (the
    format's 0-based contiguous ids). Lines without items, users listed twice, test users without training
    items and repeated pairs are kept and reported in ``notes``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found")
    names = {"train": train_file, "test": test_file}
    if valid_file is not None or os.path.lexists(folder / LIGHTGCN_FILES["valid"]):  # a FIFO or dangling link too
        names["valid"] = valid_file or LIGHTGCN_FILES["valid"]
    parts: dict[str, _UserLines] = {}
    for split, file_name in names.items():
        check_file(folder / file_name, f"{split} file")
        parts[split] = _read_user_lines(folder / file_name)
    all_users = np.concatenate([p.line_users for p in parts.values()])
    all_items = np.concatenate([p.items for p in parts.values()])
    files = f"{folder}/{{{','.join(names.values())}}}"
    num_users = contiguous_count(all_users, "user id", files)
    if all_items.size == 0:
        raise DataError(f"{folder / train_file}: no items on any line")
    num_items = contiguous_count(all_items, "item id", files)

    notes = []
    for split, part in parts.items():
        empty = np.flatnonzero(np.bincount(part.users, minlength=num_users)[part.line_users] == 0)
        if empty.size:
            lines = ", ".join(str(int(x)) for x in part.line_numbers[empty[:4]])
            notes.append(
                f"{part.path.name}: {empty.size} lines list a user with no items (kept as users with no {split} "
                f"items; LightGCN/GRecX would drop them): line(s) {lines}{' ...' if empty.size > 4 else ''}"
            )
        repeated = part.line_users.size - np.unique(part.line_users).size
        if repeated:
            notes.append(f"{part.path.name}: {repeated} users have more than one line (their items are merged)")
    in_train = np.zeros(num_users, dtype=bool)
    in_train[parts["train"].users] = True
    for split in ("valid", "test"):
        if split in parts:
            cold = np.unique(parts[split].users[~in_train[parts[split].users]])
            if cold.size:
                notes.append(f"{split}: {cold.size} users have {split} items but no training items (kept)")

    users = np.concatenate([parts[s].users for s in SPLITS if s in parts])
    items = np.concatenate([parts[s].items for s in SPLITS if s in parts])
    labels = np.concatenate([np.full(parts[s].users.size, i) for i, s in enumerate(SPLITS) if s in parts])
    if "valid" in parts and parts["valid"].users.size == 0:
        raise DataError(f"{parts['valid'].path}: the valid split is empty")
    return assemble(
        folder.name, users, items, labels, num_users, num_items,
        folder_features(folder, num_items, feature_files), notes, str(folder),
    )


def write_lightgcn(data: InteractionData, folder: str | Path) -> Path:
    """Write ``data`` as a LightGCN folder (``train.txt``, ``test.txt`` and ``valid.txt`` if present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in data.splits:
        indptr, items = data.user_csr(split)
        present = np.flatnonzero(np.diff(indptr.numpy()) > 0)
        rows = [" ".join(map(str, [u, *items[indptr[u] : indptr[u + 1]].tolist()])) for u in present.tolist()]
        (folder / LIGHTGCN_FILES[split]).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
