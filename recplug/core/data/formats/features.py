"""Item feature files: ``<modality>_feat.npy`` matrices (row i = item i) and features keyed by raw item id (``.npz``
ids/features or CSV/TSV rows); every refused matrix names its file and row."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recplug.core.data.dataset import DataError, first_nonfinite_row
from recplug.core.errors import ConfigError, one_line
from recplug.core.data.formats.text import QUOTE_LIMIT, check_file, csv_records, plain_float, quoted, read_text

FEATURE_SUFFIX = "_feat.npy"
_NUMPY_MAGIC = (b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")  # an .npy; an .npz (a zip archive, or an empty one)


def check_modality(modality: str, option: str) -> None:
    """Refuse, naming ``option``, a modality name that is not a plain name: it becomes the file name
    ``<modality>_feat.npy`` in a dataset folder, so it must not be empty, start with ``.``, or hold a path
    separator or a control character; shown in stats and reports, it must not be blank or start or end with
    whitespace either."""
    if not modality or modality.startswith(".") or any(c in "/\\" or not c.isprintable() for c in modality):
        raise ConfigError(
            f"{option}: modality {quoted(modality)} is not a plain name (no '/', '\\', leading '.' or control "
            "characters; it names the file <modality>_feat.npy)"
        )
    if modality != modality.strip():  # ' ' would show as no name at all in stats and reports
        raise ConfigError(f"{option}: modality {quoted(modality)} is blank or starts or ends with whitespace")


def _check_numpy_file(path: Path) -> None:
    """Refuse a file that starts like neither an ``.npy`` nor an ``.npz`` (numpy would try to unpickle it and
    suggest ``allow_pickle``, which recplug never sets)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head and not head.startswith(_NUMPY_MAGIC):  # an empty file: numpy's own "No data left in file"
        raise DataError(f"{path}: not a numpy file: it starts like neither an .npy nor an .npz")


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
    row = first_nonfinite_row(matrix)
    if row is not None:
        problem = "values beyond float32's range (±3.4e38)" if np.isfinite(array[row]).all() else "NaN or inf values"
        raise DataError(f"{where(row)}: {problem} in modality {modality!r}")
    return matrix


NUMPY_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError)
"""What ``np.load`` raises on a truncated, corrupted or foreign file (``MemoryError``: a header claiming a shape
far larger than the file, or than this machine)."""


def _load_array(path: Path, modality: str) -> np.ndarray:
    """The array of an ``.npy`` file, or of an ``.npz`` archive that holds exactly one (never unpickling)."""
    check_file(path, f"feature file of modality {modality!r}")  # a FIFO would block np.load
    _check_numpy_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            if len(loaded.files) == 1:
                return loaded[loaded.files[0]]
            names = loaded.files
    except NUMPY_READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read feature matrix ({one_line(exc, QUOTE_LIMIT)})") from None
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


def folder_features(folder: Path, num_items: int, feature_files: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """``{modality: matrix}`` from ``feature_files`` (default: every ``<modality>_feat.npy`` in the folder)."""
    found = feature_files is None  # a file named '_feat.npy' or '.x_feat.npy' is refused, as the option would be
    if feature_files is None:
        feature_files = {p.name[: -len(FEATURE_SUFFIX)]: p.name for p in sorted(folder.glob("*" + FEATURE_SUFFIX))}
    for modality, name in feature_files.items():
        check_modality(modality, str(folder / name) if found else "feature_files")
    return {m: load_features(folder / f, num_items, m) for m, f in feature_files.items()}


def check_keyed_feature_file(path: Path, modality: str) -> None:
    """Refuse, naming the file, a keyed feature file that is missing, not a regular file, or an ``.npy``."""
    check_file(path, f"feature file of modality {modality!r}")
    if path.suffix == ".npy":
        raise DataError(
            f"{path}: features keyed by raw item id are an .npz with arrays 'ids' and 'features', or CSV/TSV rows "
            "'id, f1, ..., fd'; an .npy matrix has no ids"
        )


def _python_floats(fields: list[str]) -> bool:
    """Whether ``float()`` reads every field (more leniently than :func:`plain_float`: ``1_0`` too)."""
    try:
        for field in fields:
            float(field)
    except ValueError:
        return False
    return True


def read_keyed_features(path: str | Path, modality: str) -> tuple[list[str], np.ndarray]:
    """Item features keyed by raw item id: ``.npz`` with arrays ``ids`` and ``features``, or a CSV/TSV text file
    whose rows are ``raw_id, f1, ..., fd`` (a header row is allowed). Duplicate ids, ragged rows and the matrices
    :func:`real_matrix` refuses are errors naming the file and line (or row)."""
    path = Path(path)
    check_keyed_feature_file(path, modality)
    if path.suffix == ".npz":
        _check_numpy_file(path)
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            with archive:
                ids, matrix = archive["ids"], archive["features"]
        except (*NUMPY_READ_ERRORS, KeyError) as exc:
            raise DataError(
                f"{path}: expected an .npz with arrays 'ids' and 'features' ({one_line(exc, QUOTE_LIMIT)})"
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
    for lineno, _, fields in csv_records(path, read_text(path), sep):
        if not any(f.strip() for f in fields):
            continue
        fields[0] = fields[0].strip()
        row = [plain_float(x) for x in fields[1:]]
        if None in row:
            if lineno == 1 and not _python_floats(fields[1:]):
                continue  # header: column names, not numbers even to float()
            bad = fields[1 + row.index(None)]
            raise DataError(f"{path}:{lineno}: feature values must be numbers, got {quoted(bad)}")
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
