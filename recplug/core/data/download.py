"""Downloads that are verified before they are trusted: progress bar, length and sha256 checks, atomic write.

The file is streamed into a temporary file beside its destination (:func:`recplug.core.ops.io.atomic_write`) and
moved into place only once its length matches ``Content-Length`` and its sha256 matches the registry, so an
interrupted or corrupted download never leaves a file that looks complete (torchvision's ``download_url`` and
GRecX's ``download_file`` leave partial files behind).
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from recplug.core.errors import DataError
from recplug.core.ops.io import atomic_write

CHUNK = 1 << 20


def sha256sum(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def as_url(location: str) -> str:
    """A URL for ``location``: URLs pass through, local paths become ``file://`` URLs."""
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


MIN_RATE = 1024
"""Bytes per second below which a download counts as stalled, measured over windows of ``timeout`` seconds."""


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` (``http(s)://`` or ``file://``) into ``dest`` atomically and return ``dest``.

    Raises :class:`DataError` naming the file when the transfer fails, sends nothing for ``timeout`` seconds or
    less than :data:`MIN_RATE` bytes per second over ``timeout`` seconds (a stalled server), ends before ``Content-Length`` (or the
    registered ``size``) bytes, i.e. a truncated download, sends more than ``size`` bytes (stopped as soon as it
    does), or its sha256 differs from ``sha256``; ``dest`` is then left untouched.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    received = 0
    with atomic_write(dest, "wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"{dest.name}: download from {url} failed ({reason})") from None
        with response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            total = expected if expected is not None else size
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False)
            window_start, window_bytes = time.monotonic(), 0
            with bar:
                while True:
                    try:
                        block = response.read1(CHUNK)  # what has arrived: a trickle cannot hold one read forever
                    except TimeoutError:
                        raise DataError(f"{dest.name}: download from {url} timed out after {received} bytes (no data "
                                        f"for {timeout:g} s)") from None
                    except (http.client.IncompleteRead, OSError):
                        raise DataError(
                            f"{dest.name}: truncated download from {url}: connection lost after {received} bytes"
                        ) from None
                    if not block:
                        break
                    window_bytes += len(block)
                    if time.monotonic() - window_start >= timeout:  # curl's --speed-limit / --speed-time
                        if window_bytes < MIN_RATE * timeout:
                            raise DataError(f"{dest.name}: download from {url} stalled: {window_bytes} bytes in "
                                            f"{timeout:g} s, under {MIN_RATE} bytes/s (after {received} bytes)")
                        window_start, window_bytes = time.monotonic(), 0
                    if size is not None and received + len(block) > size:  # not this file: stop writing it
                        raise DataError(
                            f"{dest.name}: download from {url} sends more than the registered {size} bytes"
                        )
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        for field, want in (("Content-Length", expected), ("registered size", size)):
            if want is not None and received < want:
                raise DataError(f"{dest.name}: truncated download from {url}: got {received} of {want} bytes ({field})")
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise DataError(f"{dest.name}: checksum mismatch: sha256 {actual}, expected {sha256} (from {url})")
    return dest
