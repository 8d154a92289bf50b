"""Named datasets: where they come from, their checksums and expected statistics, and the cache.

Layout of the cache (``$RECPLUG_CACHE``, default ``~/.cache/recplug``)::

    datasets/<name>/<file>            verified downloads (sha256 checked on every use)
    processed/<name>-<key>.pt         a registered dataset after parsing; key = sha256 of its files' sha256s,
                                      the reader and recplug's processed-format version
    processed/<log stem>-<key>/       a raw log after filtering/remapping/splitting, in MMRec format with
                                      user_map.tsv/item_map.tsv; key = sha256 of the log, its feature files
                                      and the RawOptions

Offline use: set ``RECPLUG_DATA_MIRROR`` (or pass ``mirror=``) to a folder or URL laid out as
``<mirror>/<name>/<file>``; files come from there instead of the upstream URL and are checked against the same
sha256 sums. In this repository's workspace, ``RECPLUG_DATA_MIRROR=../shared/data`` serves Gowalla.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from recplug.core import readers
from recplug.core.dataset import DataError, InteractionData
from recplug.core.download import as_url, download, sha256sum

MIRROR_ENV = "RECPLUG_DATA_MIRROR"
CACHE_ENV = "RECPLUG_CACHE"
PROCESSED_VERSION = "1"  # bump when a reader's output changes, so stale processed caches are not reused
COMPLETE_MARKER = ".complete"
DEFAULT_DATASET = "default"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$RECPLUG_CACHE``, else ``~/.cache/recplug``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recplug")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, upstream URL, sha256 and size in bytes."""

    name: str
    url: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: registry name (``RecDataModule(path=name)``, ``recplug data stats name``).
        format: ``"lightgcn"`` or ``"mmrec"``: the reader applied to the downloaded folder.
        files: the files making up the folder.
        stats: expected ``users``, ``items`` and ``<split>_interactions``; a mismatch is an error.
        description: one line: what it is and where it comes from.
    """

    name: str
    format: str
    files: tuple[RemoteFile, ...]
    stats: dict[str, int] = field(default_factory=dict)
    description: str = ""


REGISTRY: dict[str, DatasetSpec] = {}
_READERS: dict[str, Callable[[Path], InteractionData]] = {
    "lightgcn": readers.read_lightgcn,
    "mmrec": readers.read_mmrec,
}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry; a second dataset under the same name is refused."""
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if spec.format not in _READERS:
        raise ValueError(f"dataset {spec.name!r}: unknown format {spec.format!r} (one of {sorted(_READERS)})")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; :class:`DataError` listing the known names otherwise."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise DataError(f"{name}: no such dataset folder or file, nor a registered dataset (registered: {known})")
    return REGISTRY[name]


_LIGHTGCN_DATA = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data"

# kuandeng/LightGCN Data/gowalla, byte-identical to GRecX's light_gcn_gowalla.zip (sums: shared/data/gowalla/SHA256SUMS)
register(
    DatasetSpec(
        name="gowalla",
        format="lightgcn",
        files=(
            RemoteFile("train.txt", f"{_LIGHTGCN_DATA}/gowalla/train.txt",
                       "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62", 4633414),
            RemoteFile("test.txt", f"{_LIGHTGCN_DATA}/gowalla/test.txt",
                       "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3", 1372559),
            RemoteFile("user_list.txt", f"{_LIGHTGCN_DATA}/gowalla/user_list.txt",
                       "5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1", 351203),
            RemoteFile("item_list.txt", f"{_LIGHTGCN_DATA}/gowalla/item_list.txt",
                       "6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139", 506926),
        ),
        stats={"users": 29858, "items": 40981, "train_interactions": 810128, "test_interactions": 217242},
        description="Gowalla check-ins (Cho et al. KDD 2011), the NGCF/LightGCN split used by GRecX",
    )
)


def fetch(name: str, cache_dir: str | Path | None = None, mirror: str | None = None, progress: bool = True) -> Path:
    """Make sure every file of dataset ``name`` is in the cache with its registered sha256; return the folder.

    Files already cached are re-hashed; a cached file with the wrong sum is downloaded again.
    """
    spec = get_spec(name)
    folder = cache_root(cache_dir) / "datasets" / spec.name
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    for remote in spec.files:
        dest = folder / remote.name
        if dest.is_file() and sha256sum(dest) == remote.sha256:
            continue
        url = f"{as_url(mirror).rstrip('/')}/{spec.name}/{remote.name}" if mirror else remote.url
        download(url, dest, remote.sha256, size=remote.size, progress=progress)
    return folder


def _check_stats(spec: DatasetSpec, data: InteractionData) -> None:
    summary = data.summary()
    for key, expected in spec.stats.items():
        if summary.get(key) != expected:
            what = key.replace("_", " ")
            raise DataError(f"{spec.name}: expected {expected} {what}, read {summary.get(key)} (field {key})")


def _processed_path(root: Path, stem: str, parts: list[str]) -> Path:
    key = hashlib.sha256("\n".join([PROCESSED_VERSION, *parts]).encode()).hexdigest()[:16]
    return root / "processed" / f"{stem}-{key}"


def load(
    name: str, cache_dir: str | Path | None = None, mirror: str | None = None, progress: bool = True
) -> InteractionData:
    """Download (or reuse) dataset ``name``, parse it once and reuse the processed cache afterwards."""
    spec = get_spec(name)
    folder = fetch(name, cache_dir, mirror, progress)
    path = _processed_path(cache_root(cache_dir), spec.name, [spec.format, *(f.sha256 for f in spec.files)])
    path = path.with_suffix(".pt")
    if path.is_file():
        try:
            return InteractionData.from_state(torch.load(path, weights_only=True))
        except (OSError, RuntimeError, KeyError, EOFError, DataError):
            path.unlink(missing_ok=True)  # unreadable or stale: rebuilt below
    data = _READERS[spec.format](folder)
    data.name, data.source = spec.name, str(folder)
    _check_stats(spec, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(data.to_state(), tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return data


def load_raw(
    log: str | Path,
    features: dict[str, str | Path] | None = None,
    options: readers.RawOptions = readers.RawOptions(),
    cache_dir: str | Path | None = None,
) -> InteractionData:
    """Process a raw log with :func:`readers.process_raw` once per content (log, feature files, options) and read
    the processed MMRec folder (with ``user_map.tsv``/``item_map.tsv`` beside it) from the cache afterwards."""
    log = Path(log)
    if not log.is_file():
        raise DataError(f"{log}: no such log file")
    options.check()
    parts = [options.key(), sha256sum(log), *(f"{m}={sha256sum(p)}" for m, p in sorted((features or {}).items()))]
    folder = _processed_path(cache_root(cache_dir), log.stem, parts)
    if not (folder / COMPLETE_MARKER).exists():
        data = readers.process_raw(log, features, options)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            readers.write_mmrec(data, tmp)
            (tmp / COMPLETE_MARKER).touch()
            if not (folder / COMPLETE_MARKER).exists():  # else another process finished first
                shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier attempt
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return readers.read_mmrec(folder)


def load_any(
    path: str | Path,
    feature_files: dict[str, str] | None = None,
    format: str = "auto",
    valid_ratio: float = 0.0,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> InteractionData:
    """Resolve ``path`` to a dataset: ``"default"`` (the embedded dataset), an existing folder or raw log
    (``format="auto"`` detects MMRec, LightGCN or raw), else a registered name (downloaded into the cache).
    With ``valid_ratio > 0`` a validation split is carved from train (:func:`readers.carve_validation`)."""
    if str(path) == DEFAULT_DATASET:
        from recplug.datasets import default_path

        data = readers.read_mmrec(default_path(), feature_files)
    elif Path(path).exists() or format != "auto":
        data = readers.read_any(path, feature_files, format, cache_dir)
    elif str(path) in REGISTRY or not any(sep in str(path) for sep in ("/", os.sep)):
        data = load(get_spec(str(path)).name, cache_dir)
    else:
        raise DataError(f"{path}: no such dataset folder")
    if valid_ratio > 0:
        data = readers.carve_validation(data, valid_ratio, split_seed)
    return data
