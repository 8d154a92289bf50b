"""Atomic file writes: the one write-then-rename of the package.

Whatever recplug writes for someone else to read (a download, a cache entry, a feature matrix, a result file)
is written under a hidden temporary name beside its destination and renamed onto it with ``os.replace`` only
once it is complete, so a reader, a concurrent process or a rerun after a crash sees the old file or the new
one, never part of one; on an error the temporary file is removed and the destination is left untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from recplug.core.errors import ConfigError, one_line


def _temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or call picks (``.<name>.<pid>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """A file open for writing (``mode`` ``"w"`` or ``"wb"``, ``open_args`` as for ``open``) on a temporary name
    beside ``path``; when the block ends without an exception it is closed and renamed onto ``path``, otherwise
    removed. The parent folder is created; permissions are those ``open`` gives, as for a file written in place."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole new file: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with open(tmp, mode.replace("w", "x"), **open_args) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_png(figure: Any, path: str | Path, dpi: int) -> None:
    """Write a matplotlib ``figure`` to ``path`` as a PNG, whole or not at all (:func:`atomic_write`): a link at
    ``path`` is replaced, never written through (a run folder's ``losses.png`` linked to another file overwrote
    that file)."""
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)


def _umask() -> int:
    """The process's umask (read by setting it, there being no other portable way, and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A new temporary folder beside ``path`` for the block to fill; when the block ends without an exception
    it is renamed to ``path``, otherwise removed. A folder cannot replace a non-empty one in one step: if
    ``path`` is a non-empty folder by then (another process finished first), that one is kept and this one is
    discarded, so when processes race the first to finish wins. The folder gets the permissions ``mkdir`` would
    give it (``0o777`` less the umask). A symbolic link at ``path`` is followed: the folder it names is filled (a
    folder cannot replace the link itself)."""
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would keep the folder from other users and the group
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def expand_home(path: str | Path, option: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a :class:`ConfigError` naming ``option`` when there is
    no such user (or no home folder) to expand it for, where ``pathlib`` raises a bare ``RuntimeError``."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "Could not determine home directory."
        user = str(path)[1:].split(os.sep, 1)[0]
        whose = f"no user {user!r}" if user else "no home folder"
        raise ConfigError(f"{option} {one_line(path, PATH_LIMIT)}: {whose} to expand ~ for") from None


def check_can_create(path: str | Path, option: str) -> None:
    """Refuse, naming ``option``, a file or folder ``path`` that does not exist and cannot be created: a name too
    long for the file system, a symbolic link on the way that leads nowhere (a loop or a missing target), a
    nearest existing ancestor that is a file, or one where no folder can be made (read-only, ``/proc``). Checked
    before a command's work, which would otherwise end in the OS error of its first write. Long paths are cut in
    the message, so its reason stays within an error line. An empty ``path`` (which ``Path`` reads as the current
    folder) is refused too."""
    if not str(path).strip():
        raise ConfigError(f"{option} is empty; give a path")
    parent = Path(path).absolute()
    named = f"{option} {one_line(path, PATH_LIMIT)}"
    try:
        while not parent.exists():
            if parent.is_symlink():
                raise ConfigError(f"{named}: cannot be created: {one_line(parent, PATH_LIMIT)} is a symbolic link "
                                  f"to {os.readlink(parent)}, which leads nowhere (a loop or a missing target)")
            parent = parent.parent
    except OSError as exc:  # a name longer than the file system allows
        raise ConfigError(f"{named}: cannot be created ({exc.strerror or exc})") from None
    if parent == Path(path).absolute():
        return  # it exists: the caller decides what an existing file or folder means
    if not parent.is_dir():
        raise ConfigError(f"{named}: cannot be created: {one_line(parent, PATH_LIMIT)} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".recplug-probe-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{named}: cannot be created in {one_line(parent, PATH_LIMIT)} ({exc.strerror or exc})"
                          ) from None


PATH_LIMIT = 500
"""The most characters of a path :func:`check_can_create` quotes (the file system's own limit is 4,096)."""

