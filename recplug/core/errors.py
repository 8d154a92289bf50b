"""recplug's error types, and the range checks that raise them. Each message is one line naming the file, row,
config key or plugin at fault; the CLI prints it as ``error: <message>`` without a traceback."""

from __future__ import annotations

import math
from numbers import Integral


def one_line(message: object, limit: int | None = None) -> str:
    """A message's non-empty lines, stripped, joined with ``; `` (how every error is printed); with ``limit``, cut
    to that many characters and ``...`` (a library's message quoted inside one of recplug's)."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


class RecplugError(Exception):
    """Base of every error recplug reports to users as a one-line message."""


class DataError(RecplugError, ValueError):
    """Bad input data: names the file and line, or the split/modality/field at fault."""


class ConfigError(RecplugError, ValueError):
    """A configuration that cannot work: names the config key to change."""


class ParserError(ConfigError):
    """The config parser refused a command line or config file: its one-line summary, naming the key or the file
    and line (raised instead of the parser's exit, so the CLI, ``recplug ablate``/``tune`` and ``Recommender``
    handle it as any other error)."""


class PluginError(RecplugError, RuntimeError):
    """A plugin could not be loaded or wired: names the plugin and its distribution."""


class CardinalityError(PluginError):
    """A hook has the wrong number of providers for its stated cardinality."""


class InvalidArgument(ConfigError):
    """A constructor argument out of its range, raised where the value enters: the ``__init__`` (or the build,
    for ranges that depend on the data) of the class that received it.

    ``owner`` is the config group of a class the CLI always places at one key (``"model"``, ``"data"``), or
    else the component itself, which does not know its key: the message then names the class
    (``UserItemGraph: num_layers must be >= 0, got -1``), and whoever knows the key (``RecModule`` for its
    components, the CLI for what it instantiates) re-raises the error :meth:`at` it:
    ``model.encoders[1].init_args.num_layers must be >= 0, got -1 (UserItemGraph)``.
    """

    def __init__(self, owner: object, argument: str, value: object, rule: str) -> None:
        self.owner, self.argument, self.value, self.rule = owner, argument, value, rule
        if isinstance(owner, str):
            super().__init__(f"{owner}.{argument} must be {rule}, got {value!r}")
        else:
            self.owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
            super().__init__(f"{self.owner_name}: {argument} must be {rule}, got {value!r}")

    def at(self, key: str) -> ConfigError:
        """The same error, named by the config key of the component that raised it (``model.encoders[1]``)."""
        return ConfigError(
            f"{key}.init_args.{self.argument} must be {self.rule}, got {self.value!r} ({self.owner_name})"
        )


def check_number(
    owner: object, argument: str, value: float, low: float | None = None, high: float | None = None,
    *, low_open: bool = False, high_open: bool = False, bounds: str = "", integer: bool = False,
) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` is a finite number in the interval from ``low`` to ``high``
    (closed unless ``low_open``/``high_open``; ``None``: unbounded; ``bounds`` says where they come from, e.g.
    ``"the number of items"``). NaN and infinities always fail, and so does a bool; with ``integer``, so does
    any float (``2.5`` or ``2.0``: a count or size handed to torch must be an ``int``)."""
    whole = isinstance(value, Integral) and not isinstance(value, bool)
    finite = whole or (not integer and isinstance(value, float) and math.isfinite(value))
    above = low is None or (finite and (value > low if low_open else value >= low))
    below = high is None or (finite and (value < high if high_open else value <= high))
    if finite and above and below:
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        rule = f"{'<' if high_open else '<='} {high}"
    else:
        rule = "a finite number"
    if integer and not whole:
        rule = "an integer" if rule == "a finite number" else f"an integer {rule}"
    raise InvalidArgument(owner, argument, value, f"{rule} ({bounds})" if bounds else rule)


MAX_SEED = 2**32 - 1
"""Seeds are 32-bit, as numpy's and Lightning's ``seed_everything`` (the sampler derives per-epoch seeds from them)."""


MAX_EMBEDDING_DIM = 1 << 16
"""Largest representation size: published models use 64-512, and a typo like ``embedding_dim: 1e12`` would ask
for terabytes (or overflow torch's size arithmetic) instead of failing."""


MAX_LAYERS = 100
"""Most layers (or recursions) any component accepts: each one costs a propagation or a weight matrix, so a
typo like ``num_layers: 1000000`` would exhaust memory or hang instead of failing; published models use <= 10."""


MAX_COUNT = 100_000
"""Most neighbours per item (``k``, ``num_neighbors``) or negatives per positive (``num_negatives``) any component
accepts: each one is a row of indices and embeddings per item or per triple of a batch, so a typo like
``num_negatives: 1e8`` would exhaust memory instead of failing. Published models use far fewer (kNN graphs
10-20 neighbours; UltraGCN at most 1500 negatives), so this is generous."""


def check_layers(owner: object, argument: str, value: int) -> None:
    """A layer or recursion count: an integer in ``[0, MAX_LAYERS]``."""
    check_number(owner, argument, value, 0, MAX_LAYERS, integer=True)


def check_count(owner: object, argument: str, value: int) -> None:
    """A neighbour or negative count: an integer in ``[1, MAX_COUNT]``."""
    check_number(owner, argument, value, 1, MAX_COUNT, integer=True)


def check_flag(owner: object, argument: str, value: bool) -> None:
    """A switch: ``True`` or ``False`` (a string like ``"false"`` or a number would be read as one silently)."""
    if not isinstance(value, bool):
        raise InvalidArgument(owner, argument, value, "true or false")


def check_name(owner: object, argument: str, value: str) -> None:
    """A name (of a logged term, a view): a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(owner, argument, value, "a non-empty string")


def check_weights(owner: object, argument: str, value: dict[str, float]) -> None:
    """A ``{modality: weight}`` mapping with at least one entry, each weight a finite number ``>= 0``."""
    if not isinstance(value, dict) or not value or not all(isinstance(key, str) and key for key in value):
        raise InvalidArgument(owner, argument, value, "a {modality: weight} mapping with at least one entry")
    for modality, weight in value.items():
        check_number(owner, f"{argument}.{modality}", weight, 0)


def check_probability(owner: object, argument: str, value: float) -> None:
    """A dropout or drop rate: in ``[0, 1)`` (1 would drop everything)."""
    check_number(owner, argument, value, 0, 1, high_open=True)
