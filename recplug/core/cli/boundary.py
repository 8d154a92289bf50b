"""The one error boundary, :func:`report_errors` (applied by :mod:`recplug.core.cli.main` around every command):
recplug's own errors, and the errors libraries raise on bad settings or resources (YAML, Lightning's
misconfigurations, torch/numpy ``ValueError`` and ``RuntimeError``, files, and an ``ArithmeticError`` such as a
division by zero raised inside a library), end in one ``error:`` line and exit status 2; ``RECPLUG_DEBUG=1``
re-raises them with the traceback. Other exceptions (``TypeError``, ``KeyError``, an ``ArithmeticError`` in recplug's
own code, ...) are bugs and keep their traceback.

recplug's own sub-commands parse their arguments with :class:`CommandParser`, whose usage errors are
:class:`ConfigError` and which takes no abbreviated option names; the Lightning parser
(:mod:`recplug.core.cli.lightning`) raises :class:`~recplug.core.errors.ParserError` where jsonargparse would exit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from recplug.core.errors import MAX_SEED, ConfigError, InvalidArgument, RecplugError, check_number, one_line
from recplug.core.ops.environment import check_flags, env_flag
from recplug.core.ops.io import check_can_create

DEBUG_ENV = "RECPLUG_DEBUG"
DEBUG_HINT = f"(set {DEBUG_ENV}=1 for the traceback)"
ERROR_LIMIT = 2000
"""Most characters of an error line: a message that quotes a value (a YAML alias bomb expands to gigabytes) is cut."""
BUG_TYPES: tuple[type[BaseException], ...] = (NotImplementedError, RecursionError)
"""``RuntimeError`` subclasses that mean a bug, not a bad setting: never translated."""
LIBRARY_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("yaml", "YAMLError"),
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
)
"""``(module, class)`` of library errors translated when that library is loaded (never imported for the check)."""


class CommandParser(argparse.ArgumentParser):
    """The argument parser of recplug's own sub-commands: a usage error raises :class:`ConfigError`
    (``<prog>: <message>``), printed as one ``error:`` line with exit status 2 instead of argparse's usage block.
    An abbreviated option (``--ou`` for ``--out``) is unrecognized, as in ``recplug fit``: a prefix could silently
    mean another option once one is added. Sub-parsers made with ``add_subparsers(parser_class=CommandParser)`` do
    the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, refusing an option that takes values given twice: the last would win without a word."""
        given = list(sys.argv[1:] if args is None else args)
        for action in self._actions:
            if type(action) is not argparse._StoreAction:  # append, flags and sub-commands may repeat
                continue
            times = sum(token == option or token.startswith(option + "=")
                        for token in given for option in action.option_strings)
            if times > 1:
                self.error(f"argument {'/'.join(action.option_strings)}: given {times} times (the last would win "
                           "silently); give it once")
        return super().parse_known_args(args, namespace)

    def parse_with_passthrough(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """The arguments before the first ``--``, parsed, and those after it as they are (``recplug ablate`` and
        ``recplug tune`` pass them on to every ``recplug fit`` run)."""
        cut = argv.index("--") if "--" in argv else len(argv)
        return self.parse_args(argv[:cut]), argv[cut + 1:]


def number_in(
    kind: type[int] | type[float], low: float | None = None, high: float | None = None, *, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type`` parsing ``kind`` that refuses NaN, infinities and values outside ``[low, high]``
    (``high_open``: ``[low, high)``), so the usage error names the option: ``argument --seed: must be >= 0, got -1``.
    Only plain ASCII numbers are read: Python's ``int`` also takes ``1_000`` and other scripts' digits (``٣``), which
    the data readers refuse too."""

    def parse(text: str) -> float:
        try:
            if not text.isascii() or "_" in text:
                raise ValueError(text)
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        try:
            check_number("", "", value, low, high, high_open=high_open)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(f"must be {exc.rule}, got {text}") from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


SEED = number_in(int, 0, MAX_SEED)
"""The argparse ``type`` of every seed option: 32-bit, as ``seed_everything`` and numpy take."""


def debugging() -> bool:
    """``RECPLUG_DEBUG`` is on (``1``, ``true``, ...; see :func:`env_flag`): errors are re-raised with their
    traceback. A value that is not a flag counts as off here, so the error being reported keeps its one line;
    :func:`report_errors` refuses such a value before the command runs."""
    try:
        return env_flag(DEBUG_ENV)
    except ConfigError:
        return False


def print_error(message: object, hint: bool = False) -> int:
    """Write ``error: <message>`` (and the RECPLUG_DEBUG hint) to stderr; return the exit status 2."""
    sys.stderr.write(f"error: {one_line(message, ERROR_LIMIT)}\n" + (f"{DEBUG_HINT}\n" if hint else ""))
    return 2


def library_error(exc: BaseException) -> str | None:
    """One line for an error a library raised on a bad setting or resource, naming where it was raised;
    ``None`` for what looks like a bug (recplug's own user errors are :class:`RecplugError`)."""
    library = tuple(
        getattr(sys.modules[module], name) for module, name in LIBRARY_ERROR_TYPES if module in sys.modules
    )
    settings = (ValueError, RuntimeError, OSError, MemoryError, OverflowError)
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    origin = frame.tb_frame.f_globals.get("__name__", "?") if frame is not None else "?"
    # a division by zero in torch's scheduler comes from a setting (step_size 0); in recplug's own code it is a bug
    arithmetic = isinstance(exc, ArithmeticError) and origin.partition(".")[0] not in ("recplug", "?")
    if isinstance(exc, BUG_TYPES) or not (isinstance(exc, settings + library) or arithmetic):
        return None
    return f"{one_line(exc) or type(exc).__name__} ({type(exc).__name__} in {origin})"


PIPE_CLOSED = 141
"""The exit status when the output's reader has gone (``recplug ... | head``): a shell's 128 + SIGPIPE."""


def _pipe_closed() -> int:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush writes nowhere
    return PIPE_CLOSED


def report_errors(command: Callable[[], int]) -> int:
    """Run ``command``; a :class:`RecplugError` or a library's error on bad settings becomes one ``error:`` line
    and exit status 2 (with ``RECPLUG_DEBUG=1``, it is re-raised with its traceback). A ``RECPLUG_DEBUG`` that is
    not a flag is refused in one line before the command runs. Output into a closed pipe ends the command
    quietly (status :data:`PIPE_CLOSED`)."""
    try:
        check_flags()  # raises on a value that is no flag (RECPLUG_DEBUG's debugging() would read as off)
        status = command()
        sys.stdout.flush()  # a closed pipe fails here, not at the interpreter's exit
        return status
    except SystemExit:  # argparse's --help (or a usage error): its output may meet a closed pipe too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _pipe_closed()
        raise
    except BrokenPipeError:  # `recplug ... | head`: the reader has what it wanted
        return _pipe_closed()
    except RecplugError as exc:
        if debugging():
            raise
        return print_error(exc)
    except Exception as exc:
        line = library_error(exc)
        if line is None or debugging():
            raise
        return print_error(line, hint=True)


def output_folder(text: str, option: str) -> Path:
    """``text`` as the folder a command writes into (created when missing); a :class:`ConfigError` naming
    ``option`` when it is empty, a file, or a new folder that cannot be created (:func:`check_can_create`)."""
    check_can_create(text, option)
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {text}: a file, not a folder")
    return path
