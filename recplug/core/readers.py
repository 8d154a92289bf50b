"""Readers and writers for the field's dataset formats. Every reader returns an :class:`InteractionData`.

MMRec (Zhou et al.): a folder with ``<name>.inter`` (tab-separated ``userID itemID rating timestamp x_label``,
0-based contiguous ids, ``x_label`` 0/1/2 = train/valid/test) and one ``<modality>_feat.npy`` per modality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recplug.core.dataset import SPLITS, DataError, InteractionData

MMREC_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")
FEATURE_SUFFIX = "_feat.npy"


def _find_inter(folder: Path) -> Path:
    inters = sorted(folder.glob("*.inter"))
    if len(inters) != 1:
        raise DataError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in inters] or 'none'}")
    return inters[0]


def load_features(path: Path, num_items: int, modality: str) -> torch.Tensor:
    """Load one ``[num_items, d]`` feature matrix from ``.npy``, refusing wrong shapes and non-finite values."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read feature matrix ({exc})") from exc
    if array.ndim != 2 or array.shape[0] != num_items:
        raise DataError(f"{path}: feature matrix has shape {array.shape}, expected ({num_items}, d): one row per item")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: feature matrix has dtype {array.dtype}, expected numbers")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: row {int(np.argmax(bad))} of modality {modality!r} has NaN or inf values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def read_mmrec(folder: str | Path, feature_files: dict[str, str] | None = None) -> InteractionData:
    """Read an MMRec dataset folder unchanged.

    Args:
        folder: the dataset folder.
        feature_files: ``{modality: file name}``; default: every ``<modality>_feat.npy`` in the folder.

    Valid/test interactions of users or items absent from the training split are dropped, as MMRec does
    (``filter_out_cod_start_users``); the count is reported in ``notes``, never dropped silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found")
    inter = _find_inter(folder)
    with open(inter, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        missing = [c for c in ("userID", "itemID", "x_label") if c not in header]
        if missing:
            raise DataError(f"{inter}:1: header {header} lacks column(s) {missing}")
        cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
        rows = []
        for lineno, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise DataError(f"{inter}:{lineno}: expected {len(header)} tab-separated fields, got {len(fields)}")
            try:
                values = [int(fields[c]) for c in cols]
            except ValueError:
                raise DataError(
                    f"{inter}:{lineno}: userID, itemID and x_label must be integers, got "
                    f"{[fields[c] for c in cols]}"
                ) from None
            if values[0] < 0 or values[1] < 0:
                raise DataError(f"{inter}:{lineno}: negative id in {values[:2]}")
            if values[2] not in (0, 1, 2):
                raise DataError(f"{inter}:{lineno}: x_label must be 0, 1 or 2, got {values[2]}")
            rows.append(values)
    if not rows:
        raise DataError(f"{inter}: no interactions")
    table = torch.tensor(rows, dtype=torch.long)
    users, items, labels = table.unbind(1)
    for name, ids in (("userID", users), ("itemID", items)):
        count = int(ids.max()) + 1
        present = torch.bincount(ids, minlength=count) > 0
        if not present.all():
            gap = int((~present).nonzero()[0])
            raise DataError(f"{inter}: {name} values are not contiguous: id {gap} never occurs (max {count - 1})")
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1

    train = labels == 0
    seen_users = torch.zeros(num_users, dtype=torch.bool)
    seen_users[users[train]] = True
    notes: list[str] = []
    splits = {}
    for label, split in enumerate(SPLITS):
        mask = labels == label
        if split != "train":
            cold = mask & ~seen_users[users]
            if cold.any():
                notes.append(
                    f"{split}: dropped {int(cold.sum())} interactions of {int(torch.unique(users[cold]).numel())} "
                    "users absent from train (MMRec's filter_out_cod_start_users)"
                )
            mask = mask & seen_users[users]
        splits[split] = (users[mask].clone(), items[mask].clone())
    if feature_files is None:
        feature_files = {p.name[: -len(FEATURE_SUFFIX)]: p.name for p in sorted(folder.glob("*" + FEATURE_SUFFIX))}
    features = {m: load_features(folder / f, num_items, m) for m, f in feature_files.items()}
    if splits["valid"][0].numel() == 0:
        del splits["valid"]
    return InteractionData(
        name=inter.stem, num_users=num_users, num_items=num_items, splits=splits, features=features,
        notes=notes, source=str(folder),
    )


def write_mmrec(data: InteractionData, folder: str | Path) -> Path:
    """Write ``data`` as an MMRec folder (``<name>.inter`` plus ``<modality>_feat.npy``); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(MMREC_COLUMNS)]
    for label, split in enumerate(SPLITS):
        users, items = data.split(split)
        lines.extend(f"{u}\t{i}\t1\t0\t{label}" for u, i in zip(users.tolist(), items.tolist()))
    (folder / f"{data.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for modality, feats in data.features.items():
        np.save(folder / f"{modality}{FEATURE_SUFFIX}", feats.numpy())
    return folder


def read_any(path: str | Path, feature_files: dict[str, str] | None = None) -> InteractionData:
    """Read a dataset folder, detecting its format from the files present."""
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"{folder}: no such dataset folder")
    if any(folder.glob("*.inter")):
        return read_mmrec(folder, feature_files)
    raise DataError(f"{folder}: unknown dataset format (expected an MMRec *.inter file)")
