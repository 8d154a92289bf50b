"""Byte-level tokenising shared by every text format: one line splitting (BOM, CR/LF), numpy tokenisers over the raw
bytes (no per-token Python), integer parsing that names ``file:line``, and the quoting of file content in error
messages."""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from recplug.core.data.dataset import DataError
from recplug.core.errors import one_line

NEWLINE = 10
_BLANK = np.isin(np.arange(256), [32, 9, 11, 12, 13, 10])  # space \t \v \f \r \n, as a byte lookup table
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_MAX_DIGITS = 18  # keeps every id exactly representable in int64
QUOTE_LIMIT = 80
"""Most characters of a file's content (or of a library's message) that an error message repeats."""
_PLAIN_NUMBER = re.compile(
    r"\s*[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|inf|infinity|nan)\s*", re.IGNORECASE
)


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of ``text`` for an error message: at most ``limit`` characters, saying how long it was."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def plain_float(text: str) -> float | None:
    """``text`` as a float when it is written as a plain decimal number (ASCII digits, optional sign, point and
    exponent, surrounding whitespace; ``inf``/``nan`` too, for the caller to refuse by name), else ``None``.
    ``float()`` alone would also read ``1_0`` as 10 and non-ASCII digits such as ``\u0663`` as 3."""
    return float(text) if _PLAIN_NUMBER.fullmatch(text) else None


def check_file(path: Path, what: str) -> None:
    """Refuse, naming ``path`` and what it was to be (``what``, e.g. ``"item map"``), anything but a regular file:
    nothing there, a symbolic link that leads nowhere, a folder, or another kind of file (a FIFO, which would
    block a reader, a socket or a device)."""
    if path.is_file():
        return
    if path.is_symlink() and not path.exists():
        problem = f"is a symbolic link to {os.readlink(path)}, which leads nowhere (a loop or a missing target)"
    elif path.is_dir():
        problem = "is a folder, not a file"
    elif path.exists():
        problem = "is not a regular file (a FIFO, a socket or a device)"
    else:
        problem = "not found"
    raise DataError(f"{path}: {what} {problem}")


def _file_bytes(path: Path) -> bytes:
    """The file's bytes with every line end (``\\n``, ``\\r\\n`` or a lone ``\\r``) written as ``\\n``, a UTF-8
    byte-order mark dropped, and a final newline added when missing: the one line splitting of every reader."""
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or device would block or never end
        raise DataError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data if data.endswith(b"\n") else data + b"\n"


def read_bytes(path: Path) -> np.ndarray:
    """:func:`_file_bytes` as ``uint8``, for the numpy tokenisers; checked as :func:`read_text` checks it, so that a
    byte of another encoding is named as such rather than as a malformed id."""
    data = _file_bytes(path)
    _decoded(path, data)
    return np.frombuffer(data, dtype=np.uint8)


def read_text(path: Path) -> str:
    """:func:`_file_bytes` decoded as UTF-8 (:func:`_decoded`)."""
    return _decoded(path, _file_bytes(path))


def _decoded(path: Path, data: bytes) -> str:
    """``data``, the bytes of ``path``, decoded as UTF-8; a NUL byte or one that is not UTF-8 is an error naming
    its line."""
    nul = data.find(b"\0")
    if nul >= 0:  # never text; numpy's string arrays would also drop a trailing one silently
        line = _line_of(np.frombuffer(data, dtype=np.uint8), nul) + 1
        raise DataError(f"{path}:{line}: NUL byte; a text file was expected")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of(np.frombuffer(data, dtype=np.uint8), exc.start) + 1
        raise DataError(f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8") from None


def read_lines(path: Path) -> list[str]:
    """The lines of :func:`read_text`, without their line ends."""
    return read_text(path).split("\n")[:-1]


def separator_option(text: str) -> str:
    """A ``--sep`` as given on the command line: ``\\t`` (a backslash and a t), easier to pass through a shell than
    a tab, is a tab; any other text is itself."""
    return "\t" if text == "\\t" else text


def default_separator(path: Path) -> str:
    """A table's separator when none is given: ``,`` for a ``.csv`` file, else a tab."""
    return "," if path.suffix.lower() == ".csv" else "\t"


def csv_records(path: Path, text: str, sep: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, fields)`` of each record of the CSV/TSV ``text`` (``csv`` quoting, lenient as
    Excel's: a stray quote inside a field is kept; a blank line is a record with no fields). A ``csv.Error``, and a
    quote left open to the end of the file (which ``csv`` would read as one long last field), are a
    :class:`DataError` naming ``path`` and the line where the record starts."""
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=sep)
    lines = text.count("\n")
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            # a quote that never closes runs on to the end of the file: the last field ends in the final newline
            runs_to_end = end >= lines and bool(fields) and fields[-1].endswith("\n")
            if runs_to_end and "\n".join(text.split("\n")[start - 1:end]).count('"') % 2:
                raise DataError(f"{path}:{start}: a quote opened on this line is never closed")
            yield start, end, fields
    except csv.Error as exc:
        raise DataError(f"{path}:{end + 1}: {one_line(exc, QUOTE_LIMIT)}") from None


def field_count_error(path: Path, start: int, end: int, expected: int, got: int, sep: str) -> DataError:
    """The error for a record of ``got`` fields where ``expected`` were due; a record that runs over several lines
    says so, since an unterminated quote is the usual cause."""
    spans = f" (its quoted field runs on to line {end}: an unterminated quote?)" if end > start else ""
    return DataError(f"{path}:{start}: expected {expected} {sep!r}-separated fields, got {got}{spans}")


def first_repeated(values: Sequence[str]) -> str | None:
    """The first of ``values`` that an earlier one repeats (``None`` when all differ): a header's column, an
    option's value, which a reader or command would otherwise take once, silently."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def whitespace_tokens(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)`` of every maximal run of non-blank bytes; ``line`` is 1-based."""
    solid = ~_BLANK[buf]
    edges = np.diff(solid.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    line = np.searchsorted(np.flatnonzero(buf == NEWLINE), starts) + 1
    return starts, ends, line


def _delimited_fields(buf: np.ndarray, sep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)`` of every ``sep``-separated field, empty fields included."""
    delims = np.flatnonzero((buf == sep) | (buf == NEWLINE))
    if delims.size == 0:
        return delims, delims, delims
    starts = np.concatenate(([0], delims[:-1] + 1))
    ends = delims
    at_newline = buf[ends] == NEWLINE
    line = np.cumsum(at_newline) - at_newline + 1
    return starts, ends, line


def token(buf: np.ndarray, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", "replace")


def parse_ints(
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
        text = token(buf, int(starts[k]), int(ends[k]))
        if len(text) <= QUOTE_LIMIT and re.fullmatch(r"-\d+", text):
            problem = f"negative {what(k)} {text}"
        else:
            problem = f"{what(k)} must be a non-negative integer, got {quoted(text)}"
        raise DataError(f"{path}:{int(line[k])}: {problem}")
    return values


def separated_table(
    path: Path, buf: np.ndarray, offset: int, sep: int, ncols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, line)``, each ``[rows, ncols]``, of the ``sep``-separated table in ``buf[offset:]``.

    Blank lines are skipped. Fast path: when the separator count is ``rows * (ncols - 1)`` and every row's
    first and last separators fall inside its own line, each line holds exactly its own separators. Otherwise
    the field-by-field pass finds the first malformed line and raises.
    """
    body = buf[offset:]
    newlines = np.flatnonzero(body == NEWLINE)
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
    return int(np.count_nonzero(buf[:offset] == NEWLINE))
