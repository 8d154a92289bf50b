"""Readers and writers for the field's dataset formats. Every reader returns an :class:`InteractionData`.

* MMRec (Zhou et al., ``enoche/MMRec``): a folder with ``<name>.inter`` (tab-separated
  ``userID itemID rating timestamp x_label``, 0-based contiguous ids, ``x_label`` 0/1/2 = train/valid/test) and
  one ``<modality>_feat.npy`` per modality (row ``i`` = item ``i``).
* LightGCN (He et al., ``kuandeng/LightGCN``; the NGCF/GRecX datasets): ``train.txt`` / ``test.txt`` with one
  line per user, ``uid item item ...``, 0-based contiguous ids; an optional validation file in the same format.
* Raw interaction logs (CSV/TSV with user, item and optional rating/timestamp columns) plus per-modality
  feature files keyed by raw item id: filtered, remapped and split here (see :func:`process_raw`).

Integer files are tokenised with numpy over the raw bytes (no per-token Python), so Gowalla's 810k training
pairs load in well under a second; a bad token is reported as ``file:line: ...``, never skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recplug.core.data.dataset import SPLITS, DataError, InteractionData
from recplug.core.errors import ConfigError

MMREC_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")
FEATURE_SUFFIX = "_feat.npy"
NOTES_FILE = "notes.txt"
MAP_FILES = {"user": "user_map.tsv", "item": "item_map.tsv"}
LIGHTGCN_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
FORMATS = ("auto", "mmrec", "lightgcn", "raw")

_NEWLINE = 10
_BLANK = np.isin(np.arange(256), [32, 9, 11, 12, 13, 10])  # space \t \v \f \r \n, as a byte lookup table
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_MAX_DIGITS = 18  # keeps every id exactly representable in int64
QUOTE_LIMIT = 80
"""Most characters of a file's content (or of a library's message) that an error message repeats."""


# ---------------------------------------------------------------------------------------------- messages
def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of ``text`` for an error message: at most ``limit`` characters, saying how long it was."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def one_line(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A library's error message on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------- tokenising
def _file_bytes(path: Path) -> bytes:
    """The file's bytes with every line end (``\\n``, ``\\r\\n`` or a lone ``\\r``) written as ``\\n``, a UTF-8
    byte-order mark dropped, and a final newline added when missing: the one line splitting of every reader."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data if data.endswith(b"\n") else data + b"\n"


def _read_bytes(path: Path) -> np.ndarray:
    """:func:`_file_bytes` as ``uint8``, for the numpy tokenisers."""
    return np.frombuffer(_file_bytes(path), dtype=np.uint8)


def _read_text(path: Path) -> str:
    """:func:`_file_bytes` decoded as UTF-8; a NUL byte or one that is not UTF-8 is an error naming its line."""
    data = _file_bytes(path)
    nul = data.find(b"\0")
    if nul >= 0:  # never text; numpy's string arrays would also drop a trailing one silently
        line = _line_of(np.frombuffer(data, dtype=np.uint8), nul) + 1
        raise DataError(f"{path}:{line}: NUL byte; a text file was expected")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of(np.frombuffer(data, dtype=np.uint8), exc.start) + 1
        raise DataError(f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8") from None


def _read_lines(path: Path) -> list[str]:
    """The lines of :func:`_read_text`, without their line ends."""
    return _read_text(path).split("\n")[:-1]


def _whitespace_tokens(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)`` of every maximal run of non-blank bytes; ``line`` is 1-based."""
    solid = ~_BLANK[buf]
    edges = np.diff(solid.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    line = np.searchsorted(np.flatnonzero(buf == _NEWLINE), starts) + 1
    return starts, ends, line


def _delimited_fields(buf: np.ndarray, sep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)`` of every ``sep``-separated field, empty fields included."""
    delims = np.flatnonzero((buf == sep) | (buf == _NEWLINE))
    if delims.size == 0:
        return delims, delims, delims
    starts = np.concatenate(([0], delims[:-1] + 1))
    ends = delims
    at_newline = buf[ends] == _NEWLINE
    line = np.cumsum(at_newline) - at_newline + 1
    return starts, ends, line


def _token(buf: np.ndarray, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", "replace")


def _parse_ints(
    path: Path, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, line: np.ndarray, what: Callable[[int], str]
) -> np.ndarray:
    """Parse the given tokens as non-negative decimal integers, vectorised over tokens (one pass per digit).

    Raises :class:`DataError` ``file:line: ...`` at the first token that is empty, signed, not a decimal
    integer or longer than 18 digits; ``what(k)`` names token ``k`` (e.g. ``"item id"``).
    """
    n = starts.size
    lengths = ends - starts
    ok = (lengths > 0) & (lengths <= _MAX_DIGITS)
    values = np.zeros(n, dtype=np.int64)
    for place in range(int(lengths[ok].max(initial=0))):  # one pass per digit position, right to left
        inside = ok & (lengths > place)
        digit = buf[np.where(inside, ends - 1 - place, 0)].astype(np.int64) - 48
        ok &= ~inside | ((digit >= 0) & (digit <= 9))
        values += np.where(inside, digit, 0) * _POW10[place]
    if not ok.all():
        k = int(np.argmin(ok))
        text = _token(buf, int(starts[k]), int(ends[k]))
        if len(text) <= QUOTE_LIMIT and re.fullmatch(r"-\d+", text):
            problem = f"negative {what(k)} {text}"
        else:
            problem = f"{what(k)} must be a non-negative integer, got {quoted(text)}"
        raise DataError(f"{path}:{int(line[k])}: {problem}")
    return values


# ---------------------------------------------------------------------------------------------- features
def real_matrix(path: Path, array: np.ndarray, modality: str, where: Callable[[int], str]) -> np.ndarray:
    """``array`` as a C-contiguous ``float32`` matrix with at least one column, or :class:`DataError` naming
    ``path``: not 2-D, no columns, complex (its imaginary part would be lost) or non-numeric values, NaN/inf, or
    values beyond ``float32``'s range. ``where(r)`` locates row ``r`` in the message (e.g. ``"f.npy: row 3"``)."""
    if array.ndim != 2:
        raise DataError(f"{path}: feature matrix has shape {array.shape}, expected (items, d)")
    if array.shape[1] == 0:
        raise DataError(f"{path}: feature matrix of modality {modality!r} has 0 columns")
    if array.dtype.kind == "c":
        raise DataError(
            f"{path}: feature matrix has complex dtype {array.dtype}; recplug takes real features "
            "(save np.abs(x), or the real and imaginary parts as separate columns)"
        )
    if array.dtype.kind not in "iuf":
        raise DataError(f"{path}: feature matrix has dtype {array.dtype}, expected numbers")
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        problem = "values beyond float32's range (±3.4e38)" if np.isfinite(array[row]).all() else "NaN or inf values"
        raise DataError(f"{where(row)}: {problem} in modality {modality!r}")
    return matrix


_NUMPY_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError)
"""What ``np.load`` raises on a truncated, corrupted or foreign file (``MemoryError``: a header claiming a shape
far larger than the file, or than this machine)."""


def _load_array(path: Path, modality: str) -> np.ndarray:
    """The array of an ``.npy`` file, or of an ``.npz`` archive that holds exactly one (never unpickling)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            if len(loaded.files) == 1:
                return loaded[loaded.files[0]]
            names = loaded.files
    except FileNotFoundError:
        raise DataError(f"{path}: feature file of modality {modality!r} not found") from None
    except _NUMPY_READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read feature matrix ({one_line(str(exc))})") from None
    raise DataError(
        f"{path}: an .npz with arrays {quoted(str(names))}; modality {modality!r} takes one matrix "
        "(an .npy, or an .npz holding one array)"
    )


def load_features(path: Path, num_items: int, modality: str) -> torch.Tensor:
    """Load one ``[num_items, d]`` feature matrix (``.npy``, or an ``.npz`` holding one array); see
    :func:`real_matrix` for what is refused."""
    array = _load_array(path, modality)
    if array.ndim != 2 or array.shape[0] != num_items:
        raise DataError(f"{path}: feature matrix has shape {array.shape}, expected ({num_items}, d): one row per item")
    return torch.from_numpy(real_matrix(path, array, modality, lambda row: f"{path}: row {row}"))


def _folder_features(folder: Path, num_items: int, feature_files: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """``{modality: matrix}`` from ``feature_files`` (default: every ``<modality>_feat.npy`` in the folder)."""
    if feature_files is None:
        feature_files = {p.name[: -len(FEATURE_SUFFIX)]: p.name for p in sorted(folder.glob("*" + FEATURE_SUFFIX))}
    return {m: load_features(folder / f, num_items, m) for m, f in feature_files.items()}


# ---------------------------------------------------------------------------------------------- shared checks
def _contiguity(ids: np.ndarray, field: str, where: str) -> int:
    """Number of distinct ids, checking they are exactly ``0..max`` (the format's contract)."""
    count = int(ids.max()) + 1
    if count > ids.size:
        # more ids than rows, so one is missing: find it by sorting, never with an array as long as the max id
        unique = np.unique(ids)
        missing = np.flatnonzero(unique != np.arange(unique.size))
        gap: int | None = int(missing[0]) if missing.size else unique.size
    else:
        absent = np.flatnonzero(np.bincount(ids, minlength=count) == 0)
        gap = int(absent[0]) if absent.size else None
    if gap is not None:
        raise DataError(
            f"{where}: {field} values are not contiguous: id {gap} never occurs (max {count - 1}); "
            "raw ids belong in a raw log (recplug data convert)"
        )
    return count


def _duplicate_notes(splits: dict[str, tuple[torch.Tensor, torch.Tensor]], num_items: int) -> list[str]:
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


def _mmrec_cold_start(
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


def _build(
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
    notes = notes + [n for n in _duplicate_notes(splits, num_items) if n not in notes]
    return InteractionData(
        name=name, num_users=num_users, num_items=num_items, splits=splits, features=features,
        user_ids=user_ids, item_ids=item_ids, notes=notes, source=source,
    )


def _read_side_files(
    folder: Path, num_users: int, num_items: int
) -> tuple[list[str] | None, list[str] | None, list[str]]:
    """Raw-id maps and processing notes that recplug writes beside a processed MMRec folder, when present."""
    maps: dict[str, list[str] | None] = {}
    for kind, count in (("user", num_users), ("item", num_items)):
        path = folder / MAP_FILES[kind]
        if not path.exists():
            maps[kind] = None
            continue
        rows = _read_lines(path)[1:]
        raw = [row.split("\t")[0] for row in rows]
        wrong = next((i for i, (row, r) in enumerate(zip(rows, raw)) if row != f"{r}\t{i}"), None)
        if wrong is not None:
            raise DataError(f"{path}:{wrong + 2}: expected 'raw_id<TAB>{wrong}', got {quoted(rows[wrong])}")
        if len(rows) != count:
            raise DataError(f"{path}: expected {count} rows 'raw_id<TAB>id' after the header, got {len(rows)}")
        maps[kind] = raw
    notes_path = folder / NOTES_FILE
    notes = _read_lines(notes_path) if notes_path.exists() else []
    return maps["user"], maps["item"], notes


def _table(path: Path, buf: np.ndarray, offset: int, sep: int, ncols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)``, each ``[rows, ncols]``, of the ``sep``-separated table in ``buf[offset:]``.

    Blank lines are skipped. Fast path: when the separator count is ``rows * (ncols - 1)`` and every row's
    first and last separators fall inside its own line, each line holds exactly its own separators. Otherwise
    the field-by-field pass finds the first malformed line and raises.
    """
    body = buf[offset:]
    newlines = np.flatnonzero(body == _NEWLINE)
    line_starts = np.concatenate(([0], newlines[:-1] + 1))
    filled = newlines > line_starts
    seps = np.flatnonzero(body == sep)
    rows = int(filled.sum())
    if ncols > 1 and rows and seps.size == rows * (ncols - 1):
        seps = seps.reshape(rows, ncols - 1)
        first, last = line_starts[filled], newlines[filled]
        if (seps[:, 0] >= first).all() and (seps[:, -1] < last).all():
            starts = np.concatenate([first[:, None], seps + 1], axis=1) + offset
            ends = np.concatenate([seps, last[:, None]], axis=1) + offset
            line = np.broadcast_to((np.flatnonzero(filled) + 1 + _line_of(buf, offset))[:, None], starts.shape)
            return starts, ends, line
    starts, ends, line = _delimited_fields(body, sep)
    if starts.size == 0:
        raise DataError(f"{path}: no interactions")
    starts, ends, line = starts + offset, ends + offset, line + _line_of(buf, offset)
    counts = np.bincount(line, minlength=line[-1] + 1)
    has_empty_field = np.zeros(counts.size, dtype=bool)
    has_empty_field[line[ends == starts]] = True
    blank = (counts == 1) & has_empty_field
    bad = (counts != ncols) & ~blank & (np.arange(counts.size) > _line_of(buf, offset))
    if bad.any():
        lineno = int(np.argmax(bad))
        raise DataError(f"{path}:{lineno}: expected {ncols} {chr(sep)!r}-separated fields, got {int(counts[lineno])}")
    keep = ~blank[line]
    if not keep.any():
        raise DataError(f"{path}: no interactions")
    return tuple(a[keep].reshape(-1, ncols) for a in (starts, ends, line))  # type: ignore[return-value]


def _line_of(buf: np.ndarray, offset: int) -> int:
    """Number of newlines before ``offset``: the file line number of ``buf[offset:]``'s first line, minus one."""
    return int(np.count_nonzero(buf[:offset] == _NEWLINE))


# ---------------------------------------------------------------------------------------------- MMRec
def _find_inter(folder: Path, inter_file: str | None) -> Path:
    if inter_file is not None:
        path = folder / inter_file
        if not path.is_file():
            raise DataError(f"{path}: interaction file not found")
        return path
    inters = sorted(folder.glob("*.inter"))
    if len(inters) != 1:
        raise DataError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in inters] or 'none'}")
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

    Ids must be 0-based and contiguous. Valid/test interactions of users absent from train are dropped, as
    MMRec does (``filter_out_cod_start_users: True``); the count is reported in ``notes``. Blank lines are
    skipped (as pandas does); any other malformed line is an error naming the file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found")
    inter = _find_inter(folder, inter_file)
    buf = _read_bytes(inter)
    header_end = int(np.argmax(buf == _NEWLINE))
    header = _token(buf, 0, header_end).split(sep)
    wanted = (user_field, item_field, label_field)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{inter}:1: header {quoted(sep.join(header))} lacks column(s) {missing}")
    if len(sep.encode()) != 1:
        raise ConfigError(f"sep: MMRec's field separator must be one byte, got {sep!r}")
    starts, ends, line = _table(inter, buf, header_end + 1, sep.encode()[0], len(header))
    columns = []
    for field in wanted:
        c = header.index(field)
        columns.append(_parse_ints(inter, buf, starts[:, c], ends[:, c], line[:, c], lambda k, f=field: f))
    users, items, labels = columns
    if labels.max() > 2:
        k = int(np.argmax(labels > 2))
        raise DataError(f"{inter}:{int(line[k, 0])}: {label_field} must be 0, 1 or 2, got {labels[k]}")
    num_users = _contiguity(users, user_field, str(inter))
    num_items = _contiguity(items, item_field, str(inter))
    keep, notes = _mmrec_cold_start(users, labels, num_users)
    features = _folder_features(folder, num_items, feature_files)
    user_ids, item_ids, side_notes = _read_side_files(folder, num_users, num_items)
    return _build(
        inter.stem, users[keep], items[keep], labels[keep], num_users, num_items, features, side_notes + notes,
        str(folder), user_ids, item_ids,
    )


def write_mmrec(data: InteractionData, folder: str | Path) -> Path:
    """Write ``data`` as an MMRec folder (``<name>.inter`` plus ``<modality>_feat.npy``); returns the folder.

    Raw-id maps (``user_map.tsv``, ``item_map.tsv``) and ``notes.txt`` are written beside it when ``data``
    has them, and read back by :func:`read_mmrec`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(MMREC_COLUMNS)]
    for label, split in enumerate(SPLITS):
        users, items = data.split(split)
        lines.extend(f"{u}\t{i}\t1\t0\t{label}" for u, i in zip(users.tolist(), items.tolist()))
    (folder / f"{data.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for modality, feats in data.features.items():
        np.save(folder / f"{modality}{FEATURE_SUFFIX}", feats.numpy())
    for kind, raw in (("user", data.user_ids), ("item", data.item_ids)):
        if raw is not None:
            rows = [f"raw_id\t{kind}_id", *(f"{r}\t{i}" for i, r in enumerate(raw))]
            (folder / MAP_FILES[kind]).write_text("\n".join(rows) + "\n", encoding="utf-8")
    if data.notes:
        (folder / NOTES_FILE).write_text("\n".join(data.notes) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- LightGCN
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
    buf = _read_bytes(path)
    starts, ends, line = _whitespace_tokens(buf)
    if starts.size == 0:
        raise DataError(f"{path}: no lines")
    first = np.ones(starts.size, dtype=bool)
    first[1:] = line[1:] != line[:-1]
    values = _parse_ints(path, buf, starts, ends, line, lambda k: "user id" if first[k] else "item id")
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
    if valid_file is not None or (folder / LIGHTGCN_FILES["valid"]).is_file():
        names["valid"] = valid_file or LIGHTGCN_FILES["valid"]
    parts: dict[str, _UserLines] = {}
    for split, file_name in names.items():
        if not (folder / file_name).is_file():
            raise DataError(f"{folder / file_name}: {split} file not found")
        parts[split] = _read_user_lines(folder / file_name)
    all_users = np.concatenate([p.line_users for p in parts.values()])
    all_items = np.concatenate([p.items for p in parts.values()])
    files = f"{folder}/{{{','.join(names.values())}}}"
    num_users = _contiguity(all_users, "user id", files)
    if all_items.size == 0:
        raise DataError(f"{folder / train_file}: no items on any line")
    num_items = _contiguity(all_items, "item id", files)

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
    return _build(
        folder.name, users, items, labels, num_users, num_items,
        _folder_features(folder, num_items, feature_files), notes, str(folder),
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


# ---------------------------------------------------------------------------------------------- validation carving
def carve_validation(data: InteractionData, ratio: float, seed: int = 0) -> InteractionData:
    """Move a seeded random share of each user's training interactions into a new ``valid`` split.

    Each user with ``n >= 2`` training interactions gives ``max(1, round(ratio * n))`` of them, keeping at least
    one in train (MMRec's rule that small users still get one held-out item). For datasets shipped without
    validation (LightGCN/GRecX), so that epochs and hyper-parameters are chosen without looking at test.
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"valid_ratio: must be in (0, 1), got {ratio}")
    if "valid" in data.splits:
        raise ConfigError(f"valid_ratio: {data.source or data.name} already has a validation split; set it to 0")
    users, items = (t.numpy() for t in data.splits["train"])
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))  # by user, random within a user
    counts = np.bincount(users, minlength=data.num_users)
    take = np.where(counts >= 2, np.clip(np.floor(ratio * counts + 0.5), 1, np.maximum(counts - 1, 1)), 0)
    starts = np.cumsum(counts) - counts
    rank = np.arange(users.size) - starts[users[order]]
    to_valid = np.zeros(users.size, dtype=bool)
    to_valid[order] = rank < take[users[order]]
    splits = dict(data.splits)
    splits["train"] = (torch.from_numpy(users[~to_valid]), torch.from_numpy(items[~to_valid]))
    splits["valid"] = (torch.from_numpy(users[to_valid]), torch.from_numpy(items[to_valid]))
    note = (
        f"valid: carved {int(to_valid.sum())} interactions of {int((take > 0).sum())} users from train "
        f"(ratio {ratio}, seed {seed})"
    )
    return InteractionData(
        name=data.name, num_users=data.num_users, num_items=data.num_items,
        splits={s: splits[s] for s in SPLITS if s in splits}, features=data.features,
        user_ids=data.user_ids, item_ids=data.item_ids, notes=[*data.notes, note], source=data.source,
    )


# ---------------------------------------------------------------------------------------------- raw logs
@dataclass(frozen=True)
class RawOptions:
    """How a raw interaction log becomes a dataset (see :func:`process_raw`).

    Attributes:
        sep: field separator; default ``","`` for ``.csv`` files, tab otherwise.
        columns: names of the log's columns when it has no header row (default: the first row is a header).
        user_col, item_col: columns holding raw user and item ids.
        rating_col, time_col: optional columns, used when the log has them.
        min_rating: keep only interactions rated at least this (needs ``rating_col``).
        k_core: repeatedly drop users and items with fewer interactions than this (0 = no filtering).
        split: ``"random"`` (per user, MMRec's 8:1:1 with its small-user rule), ``"loo"`` (leave-one-out:
            each user's last interaction is test, the one before valid) or ``"temporal"`` (global time cut).
        ratios: train/valid/test shares for ``random`` and ``temporal``.
        seed: seed of the random split.
        missing_features: ``"error"`` (an item without a row in a feature file is an error) or ``"drop"``
            (drop that item's interactions before k-core filtering, reported in notes).
    """

    sep: str | None = None
    columns: tuple[str, ...] | None = None
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str = "rating"
    time_col: str = "timestamp"
    min_rating: float | None = None
    k_core: int = 0
    split: str = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    missing_features: str = "error"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the option that cannot work."""
        if self.split not in ("random", "loo", "temporal"):
            raise ConfigError(f"split: expected 'random', 'loo' or 'temporal', got {self.split!r}")
        if len(self.ratios) != 3 or min(self.ratios) < 0 or abs(sum(self.ratios) - 1.0) > 1e-6 or self.ratios[0] == 0:
            raise ConfigError(f"ratios: expected non-negative train/valid/test shares summing to 1, got {self.ratios}")
        if self.missing_features not in ("error", "drop"):
            raise ConfigError(f"missing_features: expected 'error' or 'drop', got {self.missing_features!r}")
        if self.k_core < 0:
            raise ConfigError(f"k_core: must be >= 0, got {self.k_core}")

    def key(self) -> str:
        """A stable JSON rendering, part of the processed-cache key."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class _RawLog:
    users: np.ndarray  # raw ids (str)
    items: np.ndarray
    ratings: np.ndarray | None
    times: np.ndarray | None


def _float_field(path: Path, lineno: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: field {field!r} must be a number, got {quoted(text)}") from None
    if not np.isfinite(value):
        raise DataError(f"{path}:{lineno}: field {field!r} is {quoted(text)}, expected a finite number")
    return value


def _read_log(path: Path, options: RawOptions) -> _RawLog:
    """Parse a CSV/TSV log with the ``csv`` module (quoting allowed); every malformed row is an error."""
    sep = options.sep or ("," if path.suffix.lower() == ".csv" else "\t")
    text = _read_text(path)
    if text == "\n":
        raise DataError(f"{path}: empty log")
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=sep)
    try:
        header = list(options.columns) if options.columns else next(reader)
        shown = quoted(sep.join(header))
        for role, col in (("user_col", options.user_col), ("item_col", options.item_col)):
            if col not in header:
                raise DataError(f"{path}:1: no column {col!r} ({role}) in the header {shown}")
        if options.min_rating is not None and options.rating_col not in header:
            raise DataError(f"{path}:1: min_rating needs column {options.rating_col!r}, not in the header {shown}")
        cu, ci = header.index(options.user_col), header.index(options.item_col)
        cr = header.index(options.rating_col) if options.rating_col in header else None
        ct = header.index(options.time_col) if options.time_col in header else None
        users, items, ratings, times = [], [], [], []
        for row in reader:
            lineno = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{lineno}: expected {len(header)} {sep!r}-separated fields, got {len(row)}")
            for c, field in ((cu, options.user_col), (ci, options.item_col)):
                if not row[c].strip():
                    raise DataError(f"{path}:{lineno}: empty {field!r}")
            users.append(row[cu].strip())
            items.append(row[ci].strip())
            if cr is not None:
                ratings.append(_float_field(path, lineno, options.rating_col, row[cr]))
            if ct is not None:
                times.append(_float_field(path, lineno, options.time_col, row[ct]))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {one_line(str(exc))}") from None
    if not users:
        raise DataError(f"{path}: no interactions")
    return _RawLog(
        np.array(users), np.array(items),
        np.array(ratings) if cr is not None else None, np.array(times) if ct is not None else None,
    )


def read_keyed_features(path: str | Path, modality: str) -> tuple[list[str], np.ndarray]:
    """Item features keyed by raw item id: ``.npz`` with arrays ``ids`` and ``features``, or a CSV/TSV text file
    whose rows are ``raw_id, f1, ..., fd`` (a header row is allowed). Duplicate ids, ragged rows and the matrices
    :func:`real_matrix` refuses are errors naming the file and line (or row)."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            with archive:
                ids, matrix = archive["ids"], archive["features"]
        except (*_NUMPY_READ_ERRORS, KeyError) as exc:
            raise DataError(
                f"{path}: expected an .npz with arrays 'ids' and 'features' ({one_line(str(exc))})"
            ) from None
        if matrix.ndim != 2 or ids.shape != (matrix.shape[0],):
            raise DataError(f"{path}: 'ids' has shape {ids.shape} but 'features' has shape {matrix.shape}")
        raw = [str(x) for x in ids.tolist()]
        matrix = real_matrix(path, matrix, modality, lambda row: f"{path}: row {row} (id {quoted(raw[row])})")
        rows = {r: k for k, r in enumerate(raw)}
        if len(rows) != len(raw):
            dup = next(r for k, r in enumerate(raw) if rows[r] != k)
            raise DataError(f"{path}: item id {quoted(dup)} has more than one feature row")
        return raw, matrix
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    raw, values, line_of_row = [], [], []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        fields[0] = fields[0].strip()
        try:
            row = [float(x) for x in fields[1:]]
        except ValueError:
            if lineno == 1:
                continue  # header
            raise DataError(f"{path}:{lineno}: feature values must be numbers") from None
        if not row:
            raise DataError(f"{path}:{lineno}: no feature values after the id {quoted(fields[0])} (separator {sep!r})")
        if values and len(row) != len(values[0]):
            raise DataError(f"{path}:{lineno}: expected {len(values[0])} feature values after the id, got {len(row)}")
        if fields[0] in seen:
            raise DataError(
                f"{path}:{lineno}: item id {quoted(fields[0])} has a second feature row (line {seen[fields[0]]})"
            )
        seen[fields[0]] = lineno
        raw.append(fields[0])
        values.append(row)
        line_of_row.append(lineno)
    if not raw:
        raise DataError(f"{path}: no feature rows")

    def where(row: int) -> str:
        return f"{path}:{line_of_row[row]} (item {quoted(raw[row])})"

    return raw, real_matrix(path, np.asarray(values, dtype=np.float64), modality, where)


def _natural_order(raw: np.ndarray) -> np.ndarray:
    """Sort order of raw ids: numeric when every id is a decimal integer (of any length), else lexicographic."""
    if all(r.isascii() and r.isdigit() for r in raw.tolist()):
        digits = np.char.lstrip(raw, "0")  # without leading zeros, a longer number is a larger one
        return np.lexsort((digits, np.char.str_len(digits)))
    return np.argsort(raw, kind="stable")


def _k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Keep mask after repeatedly dropping users and items with fewer than ``k`` interactions."""
    keep = np.ones(users.size, dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        drop = keep & ((user_counts[users] < k) | (item_counts[items] < k))
        if not drop.any():
            return keep
        keep &= ~drop


def _split_labels(users: np.ndarray, times: np.ndarray | None, options: RawOptions) -> tuple[np.ndarray, list[str]]:
    """Labels 0/1/2 per interaction (rows in file order) and notes on users the rule treats specially."""
    n, (_, r_valid, r_test) = users.size, options.ratios
    rng = np.random.default_rng(options.seed)
    sequence = np.arange(n) if times is None else np.argsort(times, kind="stable")
    if options.split == "temporal":
        # global time cut: the earliest share is train, then valid, then test
        labels = np.empty(n, dtype=np.int64)
        cut_train, cut_valid = int(n * options.ratios[0]), int(n * (options.ratios[0] + r_valid))
        labels[sequence] = np.repeat([0, 1, 2], [cut_train, cut_valid - cut_train, n - cut_valid])
        return labels, []
    if options.split == "random":
        # MMRec preprocessing/1splitting.ipynb: shuffle, group by user, the last shares are valid then test
        sequence = rng.permutation(n)
    order = sequence[np.argsort(users[sequence], kind="stable")]  # by user; shuffled or by time within a user
    counts = np.bincount(users)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[users[order]]
    size = counts[users[order]]
    if options.split == "loo":
        n_valid = (size >= 3).astype(np.int64)
        n_test = (size >= 2).astype(np.int64)
        notes = [] if times is not None else ["loo: no time column, so file order is taken as time order"]
        if (counts == 1).any():
            notes.append(f"loo: {int((counts == 1).sum())} users with one interaction keep it in train")
    else:
        # int(n * 0.2) held out, half of it (floored) valid: MMRec's arithmetic, float rounding included
        held = np.floor(size * (r_valid + r_test)).astype(np.int64)
        n_valid = np.floor(held * (r_valid / (r_valid + r_test))).astype(np.int64)
        n_test = held - n_valid
        small = size < 10  # MMRec: fewer than 10 interactions -> n-2 / 1 / 1
        n_valid = np.where(small, ((size >= 3) & (r_valid > 0)).astype(np.int64), n_valid)
        n_test = np.where(small, (size >= 2).astype(np.int64), n_test)
        notes = []
        if (counts < 10).any():
            notes.append(f"random: {int((counts < 10).sum())} users with < 10 interactions split n-2/1/1 (MMRec)")
        if (counts < 3).any():
            notes.append(f"random: {int((counts < 3).sum())} users with 1-2 interactions have no valid item")
    n_train = size - n_valid - n_test
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    return labels, notes


def process_raw(
    log: str | Path,
    features: dict[str, str | Path] | None = None,
    options: RawOptions = RawOptions(),
    name: str | None = None,
) -> InteractionData:
    """Turn a raw interaction log (and item features keyed by raw item id) into a dataset.

    Steps, each reported in ``notes`` when it changes anything: keep ratings ``>= min_rating``; drop items
    without features (``missing_features="drop"``; an error by default); drop repeated (user, item) pairs
    (keeping the earliest); k-core filtering; remap raw ids to 0-based contiguous ids (sorted raw ids, numeric
    when all are integers; ``user_ids``/``item_ids`` keep the map); split; for a temporal split, MMRec's rule
    for valid/test users absent from train.
    """
    log = Path(log)
    options.check()
    raw = _read_log(log, options)
    notes: list[str] = []
    keep = np.ones(raw.users.size, dtype=bool)
    if options.min_rating is not None:
        assert raw.ratings is not None
        low = raw.ratings < options.min_rating
        if low.any():
            notes.append(f"{log.name}: dropped {int(low.sum())} interactions rated below {options.min_rating}")
        keep &= ~low
    feats = {m: read_keyed_features(p, m) for m, p in (features or {}).items()}
    for modality, (ids, _) in feats.items():
        known = np.isin(raw.items, np.array(ids))
        if (~known & keep).any():
            missing = np.unique(raw.items[~known & keep])
            if options.missing_features == "error":
                raise DataError(
                    f"{(features or {})[modality]}: no feature row for item {quoted(str(missing[0]))} "
                    f"({missing.size} items of {log.name} lack {modality!r} features; or use missing_features='drop')"
                )
            dropped = int((~known & keep).sum())
            notes.append(f"{modality}: dropped {dropped} interactions of {missing.size} items without features")
            keep &= known
    user_codes = np.unique(raw.users, return_inverse=True)[1]
    item_codes = np.unique(raw.items, return_inverse=True)[1]
    time_order = np.arange(raw.users.size) if raw.times is None else np.argsort(raw.times, kind="stable")
    pair = user_codes.astype(np.int64) * (item_codes.max() + 1) + item_codes
    first_seen = np.zeros(raw.users.size, dtype=bool)
    candidates = time_order[keep[time_order]]
    first_seen[candidates[np.unique(pair[candidates], return_index=True)[1]]] = True
    if (keep & ~first_seen).any():
        repeats = int((keep & ~first_seen).sum())
        notes.append(f"{log.name}: dropped {repeats} repeated (user, item) pairs, keeping the earliest")
    keep &= first_seen
    if not keep.any():
        raise DataError(f"{log}: no interactions left after filtering")
    if options.k_core > 1:
        core = np.zeros_like(keep)
        core[keep] = _k_core(user_codes[keep], item_codes[keep], options.k_core)
        dropped = keep & ~core
        if dropped.any():
            notes.append(
                f"{options.k_core}-core: dropped {int(dropped.sum())} interactions, "
                f"{np.setdiff1d(user_codes[keep], user_codes[core]).size} users, "
                f"{np.setdiff1d(item_codes[keep], item_codes[core]).size} items"
            )
        keep = core
        if not keep.any():
            raise DataError(f"{log}: no interactions survive {options.k_core}-core filtering")
    users_raw, items_raw = raw.users[keep], raw.items[keep]
    for field, ids in ((options.user_col, users_raw), (options.item_col, items_raw)):
        odd = [r for r in np.unique(ids).tolist() if "\t" in r or "\n" in r]
        if odd:
            raise DataError(f"{log}: field {field!r} has an id with a tab or newline: {quoted(odd[0])}")
    times = raw.times[keep] if raw.times is not None else None
    if options.split == "temporal" and times is None:
        raise DataError(f"{log}:1: split 'temporal' needs a time column, but {options.time_col!r} is not in the log")
    user_ids, users = np.unique(users_raw, return_inverse=True)
    item_ids, items = np.unique(items_raw, return_inverse=True)
    user_order, item_order = _natural_order(user_ids), _natural_order(item_ids)
    users, items = np.argsort(user_order)[users], np.argsort(item_order)[items]
    user_ids, item_ids = user_ids[user_order], item_ids[item_order]
    labels, split_notes = _split_labels(users, times, options)
    notes += split_notes
    cold_keep, cold_notes = _mmrec_cold_start(users, labels, user_ids.size)
    notes += cold_notes
    matrices = {}
    for modality, (ids, matrix) in feats.items():
        row_of = {r: k for k, r in enumerate(ids)}
        matrices[modality] = torch.from_numpy(matrix[[row_of[r] for r in item_ids.tolist()]])
        unused = len(ids) - item_ids.size
        if unused:
            notes.append(f"{modality}: {unused} feature rows belong to items not in the processed data (unused)")
    order = np.lexsort((np.arange(users.size), users, labels))  # MMRec files list each split user by user
    order = order[cold_keep[order]]
    if not (labels[order] == 2).any():
        raise DataError(f"{log}: the test split is empty after splitting ({options.split}, ratios {options.ratios})")
    return _build(
        name or log.stem, users[order], items[order], labels[order], user_ids.size, item_ids.size, matrices,
        notes, str(log), user_ids.tolist(), item_ids.tolist(),
    )


# ---------------------------------------------------------------------------------------------- dispatch
def detect_format(path: str | Path) -> str:
    """``"mmrec"`` (a folder with ``*.inter``), ``"lightgcn"`` (a folder with ``train.txt``) or ``"raw"`` (a file)."""
    path = Path(path)
    if path.is_file():
        return "raw"
    if path.is_dir():
        if any(path.glob("*.inter")):
            return "mmrec"
        if (path / LIGHTGCN_FILES["train"]).is_file():
            return "lightgcn"
        raise DataError(f"{path}: unknown dataset format (expected an MMRec *.inter file or LightGCN train.txt)")
    raise DataError(f"{path}: no such dataset folder or file")


def read_any(
    path: str | Path,
    feature_files: dict[str, str] | None = None,
    format: str = "auto",
    cache_dir: str | Path | None = None,
) -> InteractionData:
    """Read a dataset folder (MMRec or LightGCN) or raw log, detecting its format from the files present.

    Raw logs are processed with :class:`RawOptions` defaults through the content-hash cache in ``cache_dir``
    (:func:`recplug.core.data.registry.load_raw`; ``feature_files`` are then relative to the log's folder);
    ``recplug data convert`` offers the other options.
    """
    if format not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    kind = detect_format(path) if format == "auto" else format
    if kind == "mmrec":
        return read_mmrec(path, feature_files)
    if kind == "lightgcn":
        return read_lightgcn(path, feature_files=feature_files)
    from recplug.core.data.registry import load_raw

    return load_raw(path, {m: Path(path).parent / f for m, f in (feature_files or {}).items()}, cache_dir=cache_dir)
