"""Raw interaction logs (CSV/TSV with user, item and optional rating/timestamp columns) plus feature files keyed by raw
item id: filtered, remapped and split into a dataset (:func:`process_raw`)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from recplug.core.data.dataset import DataError, InteractionData
from recplug.core.errors import MAX_SEED, ConfigError, InvalidArgument, check_number
from recplug.core.data.formats.assemble import assemble
from recplug.core.data.formats.features import check_modality, read_keyed_features
from recplug.core.data.formats.mmrec import mmrec_cold_start
from recplug.core.data.formats.text import (
    csv_records, default_separator, first_repeated, field_count_error, plain_float, quoted, read_text,
)


@dataclass(frozen=True)
class RawOptions:
    """How a raw interaction log becomes a dataset (see :func:`process_raw`).

    Attributes:
        sep: field separator; default ``","`` for ``.csv`` files, tab otherwise.
        columns: names of the log's columns when it has no header row (default: the first row is a header).
        user_col, item_col: columns holding raw user and item ids.
        rating_col, time_col: optional columns; by default ``rating`` and ``timestamp``, used when the log has
            them; a column named here must be in the log.
        min_rating: keep only interactions rated at least this (needs ``rating_col``).
        k_core: repeatedly drop users and items with fewer interactions than this (0 = no filtering).
        split: ``"random"`` (per user, MMRec's 8:1:1 with its small-user rule), ``"loo"`` (leave-one-out:
            each user's last interaction is test, the one before valid) or ``"temporal"`` (global time cut).
        ratios: train/valid/test shares for ``random`` and ``temporal`` (train and test shares above 0).
        seed: seed of the random split.
        missing_features: ``"error"`` (an item without a row in a feature file is an error) or ``"drop"``
            (drop that item's interactions before k-core filtering, reported in notes).
    """

    sep: str | None = None
    columns: tuple[str, ...] | None = None
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str | None = None
    time_col: str | None = None
    min_rating: float | None = None
    k_core: int = 0
    split: str = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    missing_features: str = "error"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the option that cannot work (:class:`InvalidArgument` for a value of
        the wrong type)."""
        self._check_types()
        if self.sep is not None and len(self.sep) != 1:
            raise ConfigError(f"sep: expected one character, got {self.sep!r}")
        rating_col, time_col = self.optional_columns()  # a defaulted column is read when the log has it
        roles = {"user_col": self.user_col, "item_col": self.item_col, "rating_col": rating_col, "time_col": time_col}
        for (role, col), (other, other_col) in itertools.combinations(roles.items(), 2):
            if col == other_col:
                named = [f"{r} (by default)" if getattr(self, r) is None else r for r in (role, other)]
                raise ConfigError(f"{named[0]} and {named[1]} both name column {col!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed: must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        if self.split not in ("random", "loo", "temporal"):
            raise ConfigError(f"split: expected 'random', 'loo' or 'temporal', got {self.split!r}")
        shares = len(self.ratios) == 3 and all(math.isfinite(r) and r >= 0 for r in self.ratios)
        if not shares or abs(sum(self.ratios) - 1.0) > 1e-6 or self.ratios[0] == 0:
            raise ConfigError(f"ratios: expected non-negative train/valid/test shares summing to 1, got {self.ratios}")
        if self.ratios[2] == 0:
            raise ConfigError(f"ratios: the test share is 0, but evaluation needs a test split, got {self.ratios}")
        if self.missing_features not in ("error", "drop"):
            raise ConfigError(f"missing_features: expected 'error' or 'drop', got {self.missing_features!r}")

    def _check_types(self) -> None:
        """Refuse a value of the wrong type, which would otherwise fail as a ``TypeError`` deep in the reader (a
        string ``columns`` would be read one character per column)."""
        if self.sep is not None and not isinstance(self.sep, str):
            raise InvalidArgument("RawOptions", "sep", self.sep, "one character, or None for the default")
        if self.columns is not None and not (
            isinstance(self.columns, (tuple, list)) and all(isinstance(c, str) for c in self.columns)
        ):
            raise InvalidArgument("RawOptions", "columns", self.columns, "a tuple of column names")
        for name in ("user_col", "item_col", "rating_col", "time_col"):
            value = getattr(self, name)
            if not isinstance(value, str) and (value is not None or name in ("user_col", "item_col")):
                raise InvalidArgument("RawOptions", name, value, "a column name")
        if self.min_rating is not None:
            check_number("RawOptions", "min_rating", self.min_rating)
        check_number("RawOptions", "k_core", self.k_core, 0, integer=True)
        if not isinstance(self.ratios, (tuple, list)) or any(
            isinstance(r, bool) or not isinstance(r, (int, float)) for r in self.ratios
        ):
            raise InvalidArgument("RawOptions", "ratios", self.ratios, "three numbers (train, valid, test shares)")

    def optional_columns(self) -> tuple[str, str]:
        """The rating and time column names: as given, else ``rating`` and ``timestamp``."""
        return self.rating_col or "rating", self.time_col or "timestamp"

    def key(self) -> str:
        """A stable JSON rendering, part of the processed-cache key."""
        return json.dumps(asdict(self), sort_keys=True)


RAW_OPTIONS_RULE = "a RawOptions (recplug.core.data.formats.raw.RawOptions(sep=',', ...))"
"""What an argument taking raw-log options must be, as its error says (a dict of them is not read)."""


@dataclass
class _RawLog:
    users: np.ndarray  # raw ids (str)
    items: np.ndarray
    lines: np.ndarray  # each interaction's line in the log
    ratings: np.ndarray | None
    times: np.ndarray | None


def _float_field(path: Path, lineno: int, field: str, text: str) -> float:
    value = plain_float(text)
    if value is None:
        raise DataError(f"{path}:{lineno}: field {field!r} must be a number, got {quoted(text)}")
    if not np.isfinite(value):
        raise DataError(f"{path}:{lineno}: field {field!r} is {quoted(text)}, expected a finite number")
    return value


_INTEGER = re.compile(r"\s*[-+]?[0-9]+\s*")
_INT64 = range(-(2**63), 2**63)


def _time_column(path: Path, field: str, lines: list[int], texts: list[str], values: list[float]) -> np.ndarray:
    """The time column: int64 when every time is written as an integer within int64 (nanosecond Unix times are
    beyond float64's exact integers, 2^53, and rounding would tie or reorder them), else float64, where an integer
    time that no float holds exactly is refused, naming its line."""
    integers = [int(text) if _INTEGER.fullmatch(text) else None for text in texts]
    if all(value is not None and value in _INT64 for value in integers):
        return np.array(integers, dtype=np.int64)
    for lineno, text, exact, value in zip(lines, texts, integers, values):
        if exact is not None and int(value) != exact:
            raise DataError(
                f"{path}:{lineno}: field {field!r} is {quoted(text)}, which a float cannot hold exactly, and the "
                "column is read as floats (not every time is an integer within int64): such times would tie or "
                "swap; write every time as an integer, or scale them down"
            )
    return np.array(values)


def _read_log(path: Path, options: RawOptions) -> _RawLog:
    """Parse a CSV/TSV log with the ``csv`` module (quoting allowed); every malformed row is an error."""
    sep = options.sep or default_separator(path)
    text = read_text(path)
    if text == "\n":
        raise DataError(f"{path}: empty log")
    records = csv_records(path, text, sep)
    header = list(options.columns) if options.columns else next(records)[2]
    where = "--columns:" if options.columns else f"{path}:1:"
    if options.columns:  # a header row read as data would become an interaction (user 'user', item 'item')
        first = next(records, None)
        if first is not None and [field.strip().lower() for field in first[2]] == [c.lower() for c in header]:
            raise DataError(f"{path}:{first[0]}: this row is a header (it repeats --columns); --columns is for a "
                            "log without one: drop it")
        records = itertools.chain([first] if first is not None else [], records)
    shown = quoted(sep.join(header))
    repeated = first_repeated(header)
    if repeated is not None:
        raise DataError(f"{where} column {repeated!r} appears twice in the header {shown}")
    named = (("user_col", options.user_col), ("item_col", options.item_col), ("rating_col", options.rating_col),
             ("time_col", options.time_col))
    for role, col in named:
        if col is not None and col not in header:
            raise DataError(f"{where} no column {col!r} ({role}) in the header {shown}")
    rating_col, time_col = options.optional_columns()
    if options.min_rating is not None and rating_col not in header:
        raise DataError(f"{where} min_rating needs column {rating_col!r}, not in the header {shown}")
    cu, ci = header.index(options.user_col), header.index(options.item_col)
    cr = header.index(rating_col) if rating_col in header else None
    ct = header.index(time_col) if time_col in header else None
    users, items, ratings, times = [], [], [], []
    lines, time_texts = [], []
    for lineno, last, row in records:
        if not row:
            continue
        if len(row) != len(header):
            raise field_count_error(path, lineno, last, len(header), len(row), sep)
        for c, field in ((cu, options.user_col), (ci, options.item_col)):
            if not row[c].strip():
                raise DataError(f"{path}:{lineno}: empty {field!r}")
        lines.append(lineno)
        users.append(row[cu].strip())
        items.append(row[ci].strip())
        if cr is not None:
            ratings.append(_float_field(path, lineno, rating_col, row[cr]))
        if ct is not None:
            times.append(_float_field(path, lineno, time_col, row[ct]))
            time_texts.append(row[ct])
    if not users:
        raise DataError(f"{path}: no interactions")
    return _RawLog(
        np.array(users), np.array(items), np.array(lines),
        np.array(ratings) if cr is not None else None,
        _time_column(path, time_col, lines, time_texts, times) if ct is not None else None,
    )


def _contiguous_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct raw ids, each entry's 0-based id)``: numeric order when every id is a decimal integer
    (of any length), else lexicographic."""
    distinct, codes = np.unique(raw, return_inverse=True)
    if all(r.isascii() and r.isdigit() for r in distinct.tolist()):
        digits = np.char.lstrip(distinct, "0")  # without leading zeros, a longer number is a larger one
        order = np.lexsort((digits, np.char.str_len(digits)))
    else:
        order = np.argsort(distinct, kind="stable")
    return distinct[order], np.argsort(order)[codes]


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
    if not isinstance(log, (str, os.PathLike)):
        raise InvalidArgument("process_raw", "log", log, "the path of a CSV/TSV log")
    log = Path(log)
    if not isinstance(options, RawOptions):
        raise InvalidArgument("process_raw", "options", options, RAW_OPTIONS_RULE)
    if features is not None and not (isinstance(features, dict) and all(
        isinstance(file, (str, os.PathLike)) for file in features.values()
    )):
        raise InvalidArgument("process_raw", "features", features, "a {modality: file} mapping, or None")
    options.check()
    for modality in features or {}:
        check_modality(modality, "feature_files")
    raw = _read_log(log, options)
    feats = {m: read_keyed_features(p, m) for m, p in (features or {}).items()}
    keep, notes = _filtered(log, raw, feats, features or {}, options)
    users_raw, items_raw = raw.users[keep], raw.items[keep]
    for field, ids in ((options.user_col, raw.users), (options.item_col, raw.items)):
        odd = np.flatnonzero(keep & ((np.char.find(ids, "\t") >= 0) | (np.char.find(ids, "\n") >= 0)))
        if odd.size:  # the id maps are tab-separated lines
            raise DataError(f"{log}:{raw.lines[odd[0]]}: field {field!r} has an id with a tab or newline: "
                            f"{quoted(str(ids[odd[0]]))}")
    times = raw.times[keep] if raw.times is not None else None
    if options.split == "temporal" and times is None:
        time_col = options.optional_columns()[1]
        raise DataError(f"{log}:1: split 'temporal' needs a time column, but {time_col!r} is not in the log")
    (user_ids, users), (item_ids, items) = _contiguous_ids(users_raw), _contiguous_ids(items_raw)
    labels, split_notes = _split_labels(users, times, options)
    notes += split_notes
    cold_keep, cold_notes = mmrec_cold_start(users, labels, user_ids.size)
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
    return assemble(
        name or log.stem, users[order], items[order], labels[order], user_ids.size, item_ids.size, matrices,
        notes, str(log), user_ids.tolist(), item_ids.tolist(),
    )


def _filtered(
    log: Path, raw: _RawLog, feats: dict[str, tuple[list[str], np.ndarray]], feature_files: dict[str, str | Path],
    options: RawOptions,
) -> tuple[np.ndarray, list[str]]:
    """``(mask of the log's interactions kept, notes)``: ratings ``>= min_rating``, items with every modality's
    features, the earliest of each (user, item) pair, then the k-core; a note for each step that drops any."""
    notes: list[str] = []
    keep = np.ones(raw.users.size, dtype=bool)
    if options.min_rating is not None:
        assert raw.ratings is not None
        low = raw.ratings < options.min_rating
        if low.any():
            notes.append(f"{log.name}: dropped {int(low.sum())} interactions rated below {options.min_rating}")
        keep &= ~low
    for modality, (ids, _) in feats.items():
        known = np.isin(raw.items, np.array(ids))
        if (~known & keep).any():
            missing = np.unique(raw.items[~known & keep])
            if options.missing_features == "error":
                raise DataError(
                    f"{feature_files[modality]}: no feature row for item {quoted(str(missing[0]))} "
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
    return keep, notes
