"""Named datasets: where they come from, their checksums and expected statistics, and the cache.

Layout of the cache (``$RECPLUG_CACHE``, default ``~/.cache/recplug``)::

    datasets/<name>/<file>            verified downloads (sha256 checked on every use)
    processed/<name>-<key>.pt         a registered dataset after parsing; key = sha256 of its files' sha256s,
                                      the reader, its preparation and recplug's processed-format version
    processed/<name>-<key>/           a registered dataset with a preparation (raw files in, MMRec folder out,
                                      built once by recplug's own commands); key = sha256 of its files' sha256s
                                      and the commands
    processed/<log stem>-<key>/       a raw log after filtering/remapping/splitting, in MMRec format with
                                      user_map.tsv/item_map.tsv; key = sha256 of the log, its feature files
                                      and the RawOptions

A processed folder's ``.complete`` marker records the sha256 of each of its files; a damaged folder is rebuilt.

Offline use: set ``RECPLUG_DATA_MIRROR`` (or pass ``mirror=``) to a folder or URL laid out as
``<mirror>/<name>/<file>``; files come from there instead of the upstream URL and are checked against the same
sha256 sums. In this repository's workspace, ``RECPLUG_DATA_MIRROR=../shared/data`` serves Gowalla, TikTok and
Amazon Office; the last two were converted from their sources, so no public URL serves their bytes and they come
from a mirror only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from recplug.core.data.dataset import DataError, InteractionData
from recplug.core.data.download import as_url, download, sha256sum
from recplug.core.data.formats.lightgcn import read_lightgcn
from recplug.core.data.formats.mmrec import read_mmrec
from recplug.core.data.formats.text import QUOTE_LIMIT, quoted
from recplug.core.errors import ConfigError, RecplugError, one_line
from recplug.core.ops.io import atomic_folder, check_can_create, expand_home

MIRROR_ENV = "RECPLUG_DATA_MIRROR"
CACHE_ENV = "RECPLUG_CACHE"
PROCESSED_VERSION = "2"  # bump when a reader's output changes, so stale processed caches are not reused
COMPLETE_MARKER = ".complete"
DEFAULT_DATASET = "default"
PREPARE_COMMANDS = ("data", "features")
"""The recplug commands a dataset's preparation may run."""


CACHE_DIR_OPTION = "data.cache_dir (--cache-dir)"
MIRROR_OPTION = "mirror (--mirror)"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$RECPLUG_CACHE``, else ``~/.cache/recplug`` (``~`` expanded, as in
    ``RECPLUG_DATA_MIRROR``): a folder whose ``datasets``/``processed`` folders exist or can be made, or a path
    where one can be created; otherwise a :class:`ConfigError` naming where it came from (a blank value, a file in
    the way, a symbolic link that leads nowhere, a read-only place such as ``/proc/self``)."""
    if cache_dir is not None:
        given, option = cache_dir, CACHE_DIR_OPTION
    elif os.environ.get(CACHE_ENV):
        given, option = os.environ[CACHE_ENV], CACHE_ENV
    else:
        given, option = Path.home() / ".cache" / "recplug", f"the default cache (set {CACHE_ENV} for another)"
    if not str(given).strip():  # Path(" ") would be a folder named " " in the working directory
        raise ConfigError(f"{option} {given!r}: a blank path; give a folder, or none for the default")
    root = expand_home(given, option)
    check_can_create(root, option)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{option} {root}: a file, not a folder")
    if root.is_dir():
        for sub in ("datasets", "processed"):
            check_can_create(root / sub, f"{option} {root}: its folder")
    return root


def mirror_url(mirror: str, option: str) -> str:
    """The URL of ``mirror`` (``option`` names where it came from): a URL as it is, or a local folder, which must
    exist (a missing one, a file, or a symbolic link that leads nowhere is a :class:`ConfigError`)."""
    if "://" not in mirror:
        folder = expand_home(mirror, option)
        try:
            is_dir = folder.is_dir()
        except OSError as exc:  # a name too long for the file system
            raise ConfigError(f"{option} {quoted(mirror)}: {exc.strerror or exc}") from None
        if not is_dir:
            what = ("a symbolic link that leads nowhere (a loop or a missing target)" if folder.is_symlink()
                    and not folder.exists() else "a file, not a folder" if folder.exists() else "no such folder")
            raise ConfigError(f"{option} {mirror}: {what}")
    return as_url(mirror).rstrip("/")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, upstream URL (``None``: no public URL serves these
    bytes, so only a mirror can), sha256 and size in bytes."""

    name: str
    url: str | None
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: registry name (``RecDataModule(path=name)``, ``recplug data stats name``).
        format: ``"lightgcn"`` or ``"mmrec"``: the reader applied to the downloaded (or prepared) folder.
        files: the files making up the folder.
        stats: expected ``users``, ``items`` and ``<split>_interactions``; a mismatch is an error.
        description: one line: what it is and where it comes from.
        prepare: recplug commands (the words after ``recplug``) that turn the downloaded files into the folder
            ``format`` reads, run in order once per content and cached (:func:`dataset_folder`); in each word
            ``{raw}`` is the downloaded folder and ``{out}`` the folder being built. Empty: read the files as
            they are.
    """

    name: str
    format: str
    files: tuple[RemoteFile, ...]
    stats: dict[str, int] = field(default_factory=dict)
    description: str = ""
    prepare: tuple[tuple[str, ...], ...] = ()


REGISTRY: dict[str, DatasetSpec] = {}
READERS: dict[str, Callable[..., InteractionData]] = {"lightgcn": read_lightgcn, "mmrec": read_mmrec}
"""The reader of each format a registered dataset's folder may have."""


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry; a second dataset under the same name is refused."""
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if spec.format not in READERS:
        raise ValueError(f"dataset {spec.name!r}: unknown format {spec.format!r} (one of {sorted(READERS)})")
    odd = [step for step in spec.prepare if not step or step[0] not in PREPARE_COMMANDS]
    if odd:
        raise ValueError(f"dataset {spec.name!r}: preparation runs `recplug data|features ...`, not {odd[0]}")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str, paths: bool = True) -> DatasetSpec:
    """The registered dataset ``name``; :class:`DataError` listing the known names otherwise, which says that
    ``name`` is no local dataset either when ``paths`` (where a path would have been read, as in ``load_dataset``)
    and that only registered names are downloaded when not."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        what = ("no such dataset folder or file, nor a registered dataset" if paths
                else "not a registered dataset; only those are downloaded")
        raise DataError(f"{name}: {what} (registered: {known})")
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


# HKUDS/DiffMM Datasets/tiktok (the MMSSL/DiffMM split) as MMRec files; sums: shared/data/tiktok/SHA256SUMS
register(
    DatasetSpec(
        name="tiktok",
        format="mmrec",
        files=(
            RemoteFile("tiktok.inter", None, "4f363acc388aaa34b93041b768bb3eeffe023074e240859bea3bee65ff16846d",
                       1032407),
            RemoteFile("image_feat.npy", None, "2cda708fab2bddf246e5f7e8c5f5626c13953e32ed09d7fdd935fe003f8ce486",
                       3435648),
            RemoteFile("audio_feat.npy", None, "bec33846c3fc62d11dcec584a2d42c1145afd5adf7b1b1f4141985fdf8c35d68",
                       3435648),
        ),
        # the file's 3,051 valid / 6,130 test less MMRec's 5 + 5 interactions of users absent from train
        stats={"users": 9308, "items": 6710, "train_interactions": 59541, "valid_interactions": 3046,
               "test_interactions": 6125},
        description="TikTok micro-videos with visual and acoustic features (MMSSL/DiffMM split, from HKUDS/DiffMM)",
    )
)

AMAZON_OFFICE_PREPARATION = (
    ("data", "convert", "{raw}/interactions.tsv", "{out}", "--name", "amazon_office", "--user-col", "user_id",
     "--item-col", "item_id", "--time-col", "order", "--k-core", "5", "--split", "random", "--seed", "0"),
    ("features", "text", "--items", "{raw}/items.tsv", "--id-column", "item_id",
     "--text-columns", "title,brand,categories,description", "--dataset", "{out}"),
    ("features", "categories", "--items", "{raw}/items.tsv", "--id-column", "item_id", "--column", "categories",
     "--dataset", "{out}"),
)
"""Amazon Office's raw log to an MMRec folder with ``text`` and ``categories`` modalities (docs/data.md)."""

# yuyq18/APAO data/Office (LC-Rec/LETTER preprocessing of Amazon 2014 Office 5-core) as TSV; shared/data/amazon_office
register(
    DatasetSpec(
        name="amazon_office",
        format="mmrec",
        files=(
            RemoteFile("interactions.tsv", None, "5709d5e913988462096a425e15d7816087aaba0bce534f06d6a9b909c5566d36",
                       600516),
            RemoteFile("items.tsv", None, "697bd725f8300432c82efbfd5ee6e8542397ed816168bd4356046caebbef6cad",
                       2155087),
        ),
        stats={"users": 4905, "items": 2420, "train_interactions": 40877, "valid_interactions": 5880,
               "test_interactions": 6501},
        description="Amazon Office Products 5-core (2014) with item text and categories, MMRec's random 8:1:1 split",
        prepare=AMAZON_OFFICE_PREPARATION,
    )
)


def fetch(
    name: str, cache_dir: str | Path | None = None, mirror: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Make sure every file of dataset ``name`` is in the cache with its registered sha256; return the folder.

    Files already cached are re-hashed; a cached file with the wrong sum is downloaded again. A file without a
    public URL needs a mirror (``mirror`` or ``$RECPLUG_DATA_MIRROR``); without one it is a :class:`DataError`.
    """
    spec = get_spec(name, paths=False)
    folder = cache_root(cache_dir) / "datasets" / spec.name
    blocked = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise DataError(f"{blocked}: a file where the dataset cache needs a folder; move it, or give another cache "
                        f"(--cache-dir or ${CACHE_ENV})")
    option = MIRROR_OPTION if mirror is not None else MIRROR_ENV
    mirror = os.fspath(mirror) if mirror is not None else os.environ.get(MIRROR_ENV) or None  # "": unset
    if mirror is not None and not mirror.strip():  # Path(" ") would be a folder named " " in the working directory
        raise ConfigError(f"{option} {mirror!r}: a blank path; give a folder or URL, or none for no mirror")
    for remote in spec.files:
        dest = folder / remote.name
        if dest.is_dir():
            raise DataError(f"{dest}: a folder where the cache keeps {spec.name}'s file {remote.name}; remove it")
        if dest.is_file() and sha256sum(dest) == remote.sha256:
            continue
        if mirror:
            url = f"{mirror_url(mirror, option)}/{spec.name}/{remote.name}"
        elif remote.url is None:
            raise DataError(
                f"{spec.name}: {remote.name} is served by no public URL; set {MIRROR_ENV} to a folder or URL holding "
                f"{spec.name}/{remote.name} (see docs/data.md)"
            )
        else:
            url = remote.url
        download(url, dest, remote.sha256, size=remote.size, progress=progress)
    return folder


def _checksums(folder: Path) -> dict[str, str]:
    """``{path relative to folder: sha256}`` of every file under ``folder`` but its completion marker."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMPLETE_MARKER)
    return {p.relative_to(folder).as_posix(): sha256sum(p) for p in files}


def _damage(folder: Path) -> str | None:
    """What differs in complete folder ``folder`` from the sha256 sums its marker recorded (a file changed,
    added or removed), or what could not be read; ``None`` when it is as it was built."""
    try:
        recorded = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
        found = _checksums(folder)
    except (OSError, ValueError) as exc:  # ValueError: a marker that is not the JSON written
        return one_line(f"{type(exc).__name__}: {exc}", QUOTE_LIMIT)
    if not isinstance(recorded, dict):
        return f"{COMPLETE_MARKER} holds no checksums"
    changed = sorted(name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name))
    if not changed:
        return None
    name = changed[0]
    how = "is new" if name not in recorded else "is missing" if name not in found else "changed"
    return f"{name} {how} since it was written" + (f", and {len(changed) - 1} more" if len(changed) > 1 else "")


def complete_folder(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder``, built by ``build(tmp)`` into a temporary folder beside it and moved into place with a
    completion marker that records every file's sha256, unless a complete one is there already (when processes
    race, the first to finish wins). A complete folder whose files differ from the recorded sums, or cannot be
    read, is reported in a warning and rebuilt."""
    if (folder / COMPLETE_MARKER).exists():
        damage = _damage(folder)
        if damage is None:
            return folder
        warnings.warn(f"{folder}: corrupted processed-dataset cache ({damage}); rebuilding it", stacklevel=2)
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier attempt, or a damaged one
    with atomic_folder(folder) as tmp:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(_checksums(tmp), sort_keys=True), encoding="utf-8")
    return folder


def _run_command(spec: DatasetSpec, argv: list[str], progress: bool) -> None:
    """Run one preparation command in this process; its report goes to stderr (stdout may carry JSON)."""
    # the commands belong to the CLI layer, above this one: looked up by name when a preparation runs, so the data
    # layer imports nothing from recplug.core.cli
    run = importlib.import_module(f"recplug.core.cli.{argv[0]}").run
    if progress:
        print(f"{spec.name}: recplug {shlex.join(argv)}", file=sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            run(argv[1:])
    except RecplugError as exc:  # one type: re-raising type(exc) fails for an error built from several arguments
        raise DataError(f"{spec.name}: preparation `recplug {' '.join(argv[:2])}` failed: {exc}") from None


def dataset_folder(
    name: str, cache_dir: str | Path | None = None, mirror: str | None = None, progress: bool = True
) -> Path:
    """The folder dataset ``name``'s reader reads: the verified downloads (:func:`fetch`), or, for a dataset with
    a ``prepare`` list, the folder those commands build from them, once per content, under
    ``processed/<name>-<key>/``."""
    spec = get_spec(name)
    raw = fetch(name, cache_dir, mirror, progress)
    if not spec.prepare:
        return raw
    steps = [json.dumps(step) for step in spec.prepare]
    folder = processed_path(cache_root(cache_dir), spec.name, ["prepare", *(f.sha256 for f in spec.files), *steps])

    def build(out: Path) -> None:
        if progress:
            print(f"{spec.name}: preparing {folder} once, in {out}:", file=sys.stderr)
        for step in spec.prepare:
            _run_command(spec, [word.format(raw=raw, out=out) for word in step], progress)

    return complete_folder(folder, build)


def check_stats(spec: DatasetSpec, data: InteractionData) -> None:
    summary = data.summary()
    for key, expected in spec.stats.items():
        if summary.get(key) != expected:
            what = key.replace("_", " ")
            raise DataError(f"{spec.name}: expected {expected} {what}, read {summary.get(key)} (field {key})")


def processed_path(root: Path, stem: str, parts: list[str]) -> Path:
    key = hashlib.sha256("\n".join([PROCESSED_VERSION, *parts]).encode()).hexdigest()[:16]
    return root / "processed" / f"{stem}-{key}"
