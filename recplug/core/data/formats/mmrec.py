"""MMRec's format (Zhou et al., ``enoche/MMRec``): a folder with ``<name>.inter`` (tab-separated ``userID itemID rating
timestamp x_label``, 0-based contiguous ids, ``x_label`` 0/1/2 = train/valid/test) and one ``<modality>_feat.npy``
per modality; read unchanged, written back."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from recplug.core.data.dataset import SPLITS, DataError, InteractionData
from recplug.core.errors import ConfigError
from recplug.core.data.formats.assemble import assemble, contiguous_count
from recplug.core.data.formats.features import FEATURE_SUFFIX, check_modality, folder_features
from recplug.core.data.formats.text import (
    NEWLINE, check_file, first_repeated, parse_ints, quoted, read_bytes, read_lines, separated_table, token,
)

MMREC_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")
NOTES_FILE = "notes.txt"
MAP_FILES = {"user": "user_map.tsv", "item": "item_map.tsv"}
_INTEGER = re.compile(r"-?[0-9]+")


def mmrec_cold_start(
    users: np.ndarray, labels: np.ndarray, num_users: int
) -> tuple[np.ndarray, list[str]]:
    """MMRec's ``filter_out_cod_start_users``: valid/test interactions of users absent from train are dropped.

    Returns the keep mask and one note per split that lost interactions (the count is always reported).
    """
    in_train = np.zeros(num_users, dtype=bool)
    in_train[users[labels == 0]] = True
    keep = np.ones(users.size, dtype=bool)
    notes = []
    for label in (1, 2):
        cold = (labels == label) & ~in_train[users]
        if cold.any():
            notes.append(
                f"{SPLITS[label]}: dropped {int(cold.sum())} interactions of {np.unique(users[cold]).size} users "
                "absent from train (MMRec's filter_out_cod_start_users)"
            )
            keep &= ~cold
    return keep, notes


def read_id_map(path: str | Path, what: str = "id map", indexed: bool = False) -> list[tuple[int, str, int]]:
    """The rows ``(line number, raw id, index)`` of a ``raw_id<TAB>index`` file (``user_map.tsv``, ``item_map.tsv``,
    or a map a user gives ``recplug features --item-map``), in file order.

    The one set of rules: line ends as every text reader's (:func:`read_lines`); blank lines skipped; a first line
    whose index is not an integer is a header; fields are stripped. Raises :class:`DataError` naming the file and
    line on a line without exactly two fields, an empty raw id, an index that is not a non-negative integer, or a
    raw id or index listed twice; ``what`` names the file in the other messages (not found, empty). With ``indexed``
    (the maps recplug writes beside a dataset), the rows must be the indices ``0, 1, ...`` in order.
    """
    path = Path(path)
    check_file(path, what)
    rows: list[tuple[int, str, int]] = []
    raw_line: dict[str, int] = {}
    index_line: dict[int, int] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected 'raw_id<TAB>index', got {len(fields)} field(s)")
        raw, value = fields
        if not _INTEGER.fullmatch(value):
            if lineno == 1:
                continue  # header
            raise DataError(f"{path}:{lineno}: index must be an integer, got {quoted(value)}")
        index = int(value)
        if index < 0:
            raise DataError(f"{path}:{lineno}: negative index {index}")
        if indexed and index != len(rows):
            raise DataError(f"{path}:{lineno}: expected 'raw_id<TAB>{len(rows)}', got {quoted(line)}")
        if not raw:
            raise DataError(f"{path}:{lineno}: empty raw id")
        if raw in raw_line:
            raise DataError(f"{path}:{lineno}: raw id {quoted(raw)} already mapped on line {raw_line[raw]}")
        if index in index_line:
            raise DataError(f"{path}:{lineno}: index {index} already used on line {index_line[index]}")
        raw_line[raw], index_line[index] = lineno, lineno
        rows.append((lineno, raw, index))
    if not rows:
        raise DataError(f"{path}: {what} is empty")
    return rows


def _read_side_files(folder: Path) -> tuple[list[str] | None, list[str] | None, list[str]]:
    """Raw-id maps (row ``i``: ``<raw id of i><TAB>i``) and processing notes that recplug writes beside a processed
    MMRec folder, when present."""
    maps: dict[str, list[str] | None] = {}
    for kind, file_name in MAP_FILES.items():
        path = folder / file_name
        present = os.path.lexists(path)  # a dangling link is refused by name, not taken for no map
        maps[kind] = [raw for _, raw, _ in read_id_map(path, f"{kind} map", indexed=True)] if present else None
    notes_path = folder / NOTES_FILE
    notes: list[str] = []
    if os.path.lexists(notes_path):
        check_file(notes_path, "notes file")
        notes = read_lines(notes_path)
    return maps["user"], maps["item"], notes


def _id_count(
    ids: np.ndarray, lines: np.ndarray, field: str, inter: Path, kind: str, raw_ids: list[str] | None
) -> int:
    """Number of ``kind`` (user or item) ids: the rows of the id map beside the folder, which also lists ids left
    without interactions (every id of ``inter`` must be one of them); without a map, the contiguous ids of
    ``inter``."""
    if raw_ids is None:
        return contiguous_count(ids, field, str(inter))
    k = int(np.argmax(ids))
    if ids[k] >= len(raw_ids):
        raise DataError(
            f"{inter}:{int(lines[k])}: {field} {int(ids[k])} is not in {MAP_FILES[kind]}, which maps ids 0 to "
            f"{len(raw_ids) - 1}"
        )
    return len(raw_ids)


def _find_inter(folder: Path, inter_file: str | None) -> Path:
    if inter_file is not None:
        path = folder / inter_file
        check_file(path, "interaction file")
        return path
    inters = sorted(folder.glob("*.inter"))
    if len(inters) != 1:
        raise DataError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in inters] or 'none'}")
    check_file(inters[0], "interaction file")  # a dangling link or a folder named x.inter
    return inters[0]


def read_mmrec(
    folder: str | Path,
    feature_files: dict[str, str] | None = None,
    inter_file: str | None = None,
    user_field: str = "userID",
    item_field: str = "itemID",
    label_field: str = "x_label",
    sep: str = "\t",
) -> InteractionData:
    """Read an MMRec dataset folder unchanged (MMRec ``utils/dataset.py``: ``RecDataset``).

    Args:
        folder: the dataset folder.
        feature_files: ``{modality: file name}``; default: every ``<modality>_feat.npy`` in the folder
            (MMRec's ``vision_feature_file``/``text_feature_file``, for any number of modalities).
        inter_file: the interaction file (MMRec's ``inter_file_name``); default: the folder's only ``*.inter``.
        user_field, item_field, label_field: column names (MMRec's ``USER_ID_FIELD``, ``ITEM_ID_FIELD``,
            ``inter_splitting_label``); other columns (rating, timestamp) are ignored, as MMRec does.
        sep: field separator (MMRec's ``field_separator``).

    Ids must be 0-based and contiguous, unless an id map recplug wrote (``user_map.tsv``, ``item_map.tsv``) lists
    them: then every id it lists counts, with or without interactions. Valid/test interactions of users absent
    from train are dropped, as MMRec does (``filter_out_cod_start_users: True``); the count is reported in
    ``notes``. Blank lines are skipped (as pandas does); any other malformed line is an error naming the file and
    line.
    """
    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"{folder}: a file, not a dataset folder (format mmrec reads the folder holding the .inter)")
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found")
    inter = _find_inter(folder, inter_file)
    buf = read_bytes(inter)
    header_end = int(np.argmax(buf == NEWLINE))
    header = token(buf, 0, header_end).split(sep)
    wanted = (user_field, item_field, label_field)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{inter}:1: header {quoted(sep.join(header))} lacks column(s) {missing}")
    repeated = first_repeated(header)
    if repeated is not None:
        raise DataError(f"{inter}:1: column {repeated!r} appears twice in the header {quoted(sep.join(header))}")
    if len(sep.encode()) != 1:
        raise ConfigError(f"sep: MMRec's field separator must be one byte, got {sep!r}")
    starts, ends, line = separated_table(inter, buf, header_end + 1, sep.encode()[0], len(header))
    columns = []
    for field in wanted:
        c = header.index(field)
        columns.append(parse_ints(inter, buf, starts[:, c], ends[:, c], line[:, c], lambda k, f=field: f))
    users, items, labels = columns
    if labels.max() > 2:
        k = int(np.argmax(labels > 2))
        raise DataError(f"{inter}:{int(line[k, 0])}: {label_field} must be 0, 1 or 2, got {labels[k]}")
    user_ids, item_ids, side_notes = _read_side_files(folder)
    num_users = _id_count(users, line[:, 0], user_field, inter, "user", user_ids)
    num_items = _id_count(items, line[:, 0], item_field, inter, "item", item_ids)
    keep, notes = mmrec_cold_start(users, labels, num_users)
    features = folder_features(folder, num_items, feature_files)
    return assemble(
        inter.stem, users[keep], items[keep], labels[keep], num_users, num_items, features, side_notes + notes,
        str(folder), user_ids, item_ids,
    )


def write_mmrec(data: InteractionData, folder: str | Path) -> Path:
    """Write ``data`` as an MMRec folder (``<name>.inter`` plus ``<modality>_feat.npy``); returns the folder.

    Raw-id maps (``user_map.tsv``, ``item_map.tsv``) and ``notes.txt`` are written beside it when ``data``
    has them, and read back by :func:`read_mmrec`. A user or item without any interaction has no line in the
    ``.inter``; so that it is read back, a map is then written even without raw ids (each id mapped to itself).
    """
    for modality in data.features:
        check_modality(modality, "features")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(MMREC_COLUMNS)]
    present: dict[str, list[np.ndarray]] = {"user": [], "item": []}
    for label, split in enumerate(SPLITS):
        users, items = data.split(split)
        present["user"].append(users.numpy())
        present["item"].append(items.numpy())
        lines.extend(f"{u}\t{i}\t1\t0\t{label}" for u, i in zip(users.tolist(), items.tolist()))
    (folder / f"{data.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for modality, feats in data.features.items():
        np.save(folder / f"{modality}{FEATURE_SUFFIX}", feats.numpy())
    for kind, raw, count in (("user", data.user_ids, data.num_users), ("item", data.item_ids, data.num_items)):
        if raw is None and np.unique(np.concatenate(present[kind])).size < count:
            raw = [str(i) for i in range(count)]
        if raw is not None:
            rows = [f"raw_id\t{kind}_id", *(f"{r}\t{i}" for i, r in enumerate(raw))]
            (folder / MAP_FILES[kind]).write_text("\n".join(rows) + "\n", encoding="utf-8")
    if data.notes:
        (folder / NOTES_FILE).write_text("\n".join(data.notes) + "\n", encoding="utf-8")
    return folder
