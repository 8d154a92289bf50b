"""The one path resolver: :func:`load_dataset` turns a ``data.path`` (``"default"``, a dataset folder or raw log in any
format, or a registered name) into an :class:`InteractionData`."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recplug.core.data import registry
from recplug.core.data.dataset import SPLITS, DataError, InteractionData
from recplug.core.data.download import sha256sum
from recplug.core.data.formats.features import check_keyed_feature_file, check_modality
from recplug.core.data.formats.lightgcn import LIGHTGCN_FILES, read_lightgcn
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec
from recplug.core.data.formats.raw import RAW_OPTIONS_RULE, RawOptions, process_raw
from recplug.core.data.formats.text import QUOTE_LIMIT, check_file, quoted
from recplug.core.errors import MAX_SEED, ConfigError, InvalidArgument, check_number, one_line
from recplug.core.ops.io import atomic_write

FORMATS = ("auto", "mmrec", "lightgcn", "raw")

DATASET_PATH = "a dataset folder, a raw log, a registered name or 'default'"
"""What a dataset ``path`` may be, as error messages say it."""


def check_load_arguments(
    owner: str, path: object, feature_files: object, format: object, valid_ratio: float, split_seed: int,
    cache_dir: object, cold_items: float, cold_seed: int,
) -> None:
    """Refuse an argument :func:`load_dataset` cannot use, naming it ``<owner>.<argument>`` (``owner`` is
    ``"data"`` for :class:`~recplug.core.data.datamodule.RecDataModule`, ``"load_dataset"`` for the function)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(owner, "path", path, DATASET_PATH)
    if not str(path).strip():
        raise ConfigError(f"{owner}.path is empty; give {DATASET_PATH}")
    if "\0" in str(path):  # shown in a one-line error, it would read as a space
        raise ConfigError(f"{owner}.path {quoted(str(path))} holds a NUL character, which no file or dataset name has")
    if feature_files is not None and not (isinstance(feature_files, dict) and all(
        isinstance(modality, str) and modality and isinstance(name, (str, os.PathLike)) and str(name).strip()
        for modality, name in feature_files.items()
    )):
        raise InvalidArgument(owner, "feature_files", feature_files, "a {modality: file name} mapping")
    for modality in feature_files or {}:  # a name like ../x would write its matrix outside the dataset's folder
        check_modality(modality, f"{owner}.feature_files")
    if format not in FORMATS:
        raise InvalidArgument(owner, "format", format, f"one of {', '.join(FORMATS)}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidArgument(owner, "cache_dir", cache_dir, "a folder")
    check_number(owner, "valid_ratio", valid_ratio, 0, 1, high_open=True)
    check_number(owner, "cold_items", cold_items, 0, 1, high_open=True)
    for argument, seed in (("split_seed", split_seed), ("cold_seed", cold_seed)):
        check_number(owner, argument, seed, 0, MAX_SEED, integer=True)


def carve_validation(data: InteractionData, ratio: float, seed: int = 0, where: str | None = None) -> InteractionData:
    """Move a seeded random share of each user's training interactions into a new ``valid`` split.

    Each user with ``n >= 2`` training interactions gives ``max(1, round(ratio * n))`` of them, keeping at least
    one in train (MMRec's rule that small users still get one held-out item). For datasets shipped without
    validation (LightGCN/GRecX), so that epochs and hyper-parameters are chosen without looking at test.
    ``where`` names the dataset in errors (default: its source), e.g. the raw log rather than its processed copy.
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"valid_ratio: must be in (0, 1), got {ratio}")
    if "valid" in data.splits:
        raise ConfigError(f"valid_ratio: {where or data.source or data.name} already has a validation split; set it "
                          "to 0")
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
    return _resplit(data, splits, note)


def hold_out_items(data: InteractionData, fraction: float, seed: int = 0) -> InteractionData:
    """The item cold-start split: a seeded ``fraction`` of the items loses every training interaction.

    ``round(fraction * N)`` items (at least one, at most ``N - 1``), drawn by ``numpy.random.default_rng(seed)``,
    become :attr:`~InteractionData.cold_items`. Each cold item's training interactions move out of ``train``, in a
    seeded shuffle: half of them (rounded down) to ``valid`` and the rest to ``test``, so that validation selects
    epochs on cold items too; all of them to ``test`` when the data has no validation split. Their validation and
    test interactions stay where they are, and every item keeps its features. Users whose only training items were
    cold are left without training interactions (counted in the note; evaluation leaves them out).
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"cold_items: must be in (0, 1), got {fraction}")
    where = data.source or data.name
    if data.cold_items is not None:
        raise ConfigError(f"cold_items: {where} already holds out cold items")
    count = min(max(1, round(fraction * data.num_items)), data.num_items - 1)
    if count < 1:
        raise ConfigError(f"cold_items: {where} has a single item, so none can be held out")
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.permutation(data.num_items)[:count])
    is_cold = np.zeros(data.num_items, dtype=bool)
    is_cold[cold] = True
    users, items = (t.numpy() for t in data.splits["train"])
    moved = np.flatnonzero(is_cold[items])
    moved = moved[np.lexsort((rng.random(moved.size), items[moved]))]  # by item, random within an item
    per_item = np.bincount(items[moved], minlength=data.num_items)
    rank = np.arange(moved.size) - (np.cumsum(per_item) - per_item)[items[moved]]
    to_valid = rank < per_item[items[moved]] // 2 if "valid" in data.splits else np.zeros(moved.size, dtype=bool)
    splits = dict(data.splits)
    keep = ~is_cold[items]
    splits["train"] = (torch.from_numpy(users[keep]), torch.from_numpy(items[keep]))
    for split, chosen in (("valid", moved[to_valid]), ("test", moved[~to_valid])):
        if chosen.size:
            old_users, old_items = data.split(split)
            splits[split] = (torch.cat([old_users, torch.from_numpy(users[chosen])]),
                             torch.cat([old_items, torch.from_numpy(items[chosen])]))
    before = int((np.bincount(users, minlength=data.num_users) == 0).sum())
    after = int((np.bincount(users[keep], minlength=data.num_users) == 0).sum())
    note = (
        f"cold items: {count} of {data.num_items} items held out (fraction {fraction}, seed {seed}); their "
        f"{moved.size} training interactions moved to valid ({int(to_valid.sum())}) and test "
        f"({int((~to_valid).sum())}); {after - before} more users without training interactions"
    )
    return _resplit(data, splits, note, cold_items=torch.from_numpy(cold.astype(np.int64)))


def detect_format(path: str | Path) -> str:
    """``"mmrec"`` (a folder with ``*.inter``), ``"lightgcn"`` (a folder with ``train.txt``) or ``"raw"`` (a file)."""
    path = Path(path)
    if path.is_file():
        return "raw"
    if path.is_dir():
        if any(path.glob("*.inter")):
            return "mmrec"
        if os.path.lexists(path / LIGHTGCN_FILES["train"]):  # read_lightgcn names a dangling link, a FIFO
            return "lightgcn"
        raise DataError(f"{path}: unknown dataset format (expected an MMRec *.inter file or LightGCN train.txt)")
    if os.path.lexists(path):
        check_file(path, "dataset")  # says what it is: a link that leads nowhere, a FIFO
    raise DataError(f"{path}: no such dataset folder or file")


def load_dataset(
    path: str | Path,
    feature_files: dict[str, str] | None = None,
    format: str = "auto",
    valid_ratio: float = 0.0,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
    *,
    cold_items: float = 0.0,
    cold_seed: int = 0,
    raw_options: RawOptions | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> InteractionData:
    """Resolve ``path`` to a dataset: ``"default"`` (the embedded dataset), an existing folder or raw log
    (``format="auto"`` detects MMRec, LightGCN or raw), else a registered name (downloaded into the cache).

    ``feature_files`` is ``{modality: file name}`` in the dataset folder (default: every ``*_feat.npy``); for a
    raw log, feature files keyed by raw item id, relative to the log's folder. A raw log is processed with
    ``raw_options`` (default :class:`RawOptions`) once per content and read from the processed cache afterwards.
    With ``valid_ratio > 0`` a validation split is carved from train (:func:`carve_validation`); then, with
    ``cold_items > 0``, that share of the items is held out of training (:func:`hold_out_items`, seed ``cold_seed``).
    """
    check_load_arguments("load_dataset", path, feature_files, format, valid_ratio, split_seed, cache_dir, cold_items,
                         cold_seed)
    if raw_options is not None and not isinstance(raw_options, RawOptions):
        raise InvalidArgument("load_dataset", "raw_options", raw_options, RAW_OPTIONS_RULE)
    if mirror is not None and not isinstance(mirror, (str, os.PathLike)):
        raise InvalidArgument("load_dataset", "mirror", mirror, "a folder or URL of dataset files")
    if str(path) == registry.DEFAULT_DATASET:
        from recplug.datasets import default_path

        _refuse_raw_options(raw_options, path, "the embedded MMRec dataset")
        data = read_mmrec(default_path(), feature_files)
    elif os.path.lexists(path) or (format != "auto" and str(path) not in registry.REGISTRY):  # a dangling link too
        kind = detect_format(path) if format == "auto" else format
        if kind in ("mmrec", "lightgcn"):
            _refuse_raw_options(raw_options, path, f"a dataset folder ({kind})")
        if kind == "mmrec":
            data = read_mmrec(path, feature_files)
        elif kind == "lightgcn":
            data = read_lightgcn(path, feature_files=feature_files)
        else:
            features = {m: Path(path).parent / f for m, f in (feature_files or {}).items()}
            data = _processed_raw(Path(path), features, raw_options or RawOptions(), cache_dir)
    elif str(path) in registry.REGISTRY or not any(sep in str(path) for sep in ("/", os.sep)):
        spec = registry.get_spec(str(path))
        if format not in ("auto", spec.format):
            raise DataError(f"{path}: a registered dataset in {spec.format} format, not {format}; leave format auto")
        _refuse_raw_options(raw_options, path, "a registered dataset")
        data = _registered(spec, cache_dir, mirror, progress, feature_files)
    else:
        raise DataError(f"{path}: no such dataset folder")
    if valid_ratio > 0:
        data = carve_validation(data, valid_ratio, split_seed, str(path))
    if cold_items > 0:
        data = hold_out_items(data, cold_items, cold_seed)
    return data


def _refuse_raw_options(raw_options: RawOptions | None, path: str | Path, what: str) -> None:
    """Refuse ``raw_options`` given for ``path``, which is ``what`` and not a raw log (they would do nothing)."""
    if raw_options is not None:
        raise ConfigError(f"load_dataset.raw_options: options of a raw log, but {path} is {what}; they do not apply")


def _registered(
    spec: registry.DatasetSpec,
    cache_dir: str | Path | None,
    mirror: str | None,
    progress: bool,
    feature_files: dict[str, str] | None,
) -> InteractionData:
    """Download (or reuse) a registered dataset, prepare and parse it once and reuse the processed cache afterwards.

    ``feature_files`` (``{modality: file name}`` in the dataset folder) chooses the modalities, as for a folder of
    one's own; such a selection is read from the folder each time rather than cached.
    """
    folder = registry.dataset_folder(spec.name, cache_dir, mirror, progress)
    read = registry.READERS[spec.format]
    if feature_files is not None:
        data = read(folder, feature_files=feature_files)
        data.name, data.source = spec.name, str(folder)
        registry.check_stats(spec, data)
        return data
    parts = [spec.format, *(f.sha256 for f in spec.files), *(json.dumps(step) for step in spec.prepare)]
    path = registry.processed_path(registry.cache_root(cache_dir), spec.name, parts).with_suffix(".pt")
    if path.is_file():
        try:
            cached = InteractionData.from_state(torch.load(path, weights_only=True))
            registry.check_stats(spec, cached)  # a stale or edited copy is no copy of this dataset
            return cached
        except Exception as exc:  # a cache: whatever is wrong with the file, it is rebuilt from the source
            message = one_line(str(exc) or type(exc).__name__, QUOTE_LIMIT)
            warnings.warn(f"{path}: corrupted processed-dataset cache ({message}); rebuilding it", stacklevel=2)
            path.unlink(missing_ok=True)
    data = read(folder)
    data.name, data.source = spec.name, str(folder)
    registry.check_stats(spec, data)
    with atomic_write(path, "wb") as handle:
        torch.save(data.to_state(), handle)
    return data


def _processed_raw(
    log: Path, features: dict[str, Path], options: RawOptions, cache_dir: str | Path | None
) -> InteractionData:
    """Process a raw log with :func:`process_raw` once per content (log, feature files, options) and read the
    processed MMRec folder (with ``user_map.tsv``/``item_map.tsv`` beside it) from the cache afterwards."""
    if log.is_dir():
        raise DataError(f"{log}: a folder, not a log file (format raw reads a CSV/TSV log)")
    check_file(log, "log file")
    for modality, file in features.items():
        check_keyed_feature_file(file, modality)
    options.check()
    try:
        parts = [options.key(), sha256sum(log), *(f"{m}={sha256sum(p)}" for m, p in sorted(features.items()))]
    except OSError as exc:
        raise DataError(f"{exc.filename}: cannot read ({exc.strerror or exc})") from None
    folder = registry.processed_path(registry.cache_root(cache_dir), log.stem, parts)
    registry.complete_folder(folder, lambda tmp: write_mmrec(process_raw(log, features, options), tmp))
    return read_mmrec(folder)


def _resplit(
    data: InteractionData, splits: dict[str, tuple[Tensor, Tensor]], note: str, **changes: Any
) -> InteractionData:
    """``data`` with new ``splits`` (in :data:`SPLITS` order), ``note`` appended and other ``changes``; the
    dataclass re-validates it."""
    ordered = {s: splits[s] for s in SPLITS if s in splits}
    return dataclasses.replace(data, splits=ordered, notes=[*data.notes, note], **changes)
