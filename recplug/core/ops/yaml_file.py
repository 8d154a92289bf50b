"""The one reader of the YAML files recplug's own commands take (search spaces, variants, configs checked before
LightningCLI parses them): UTF-8 text, the safe loader, and a key given twice in one mapping is an error (PyYAML,
like jsonargparse, would keep the last value without a word). So is a YAML 1.1 octal (``010``, read as 8) or
base-60 number (``1:04``, read as 64), here and in jsonargparse's loader (:func:`guard_jsonargparse_yaml`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from recplug.core.errors import ConfigError, one_line


def yaml_location(path: str | Path, error: BaseException) -> str | None:
    """``FILE, line L, column C: problem`` for a YAML syntax error in the config file ``path``."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None:
        return None
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or "invalid YAML"
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    opened = f" ({context} at line {context_mark.line + 1})" if context and context_mark and problem != context else ""
    return f"{path}, line {mark.line + 1}, column {mark.column + 1}: {problem}{opened}"


INT_TAG, FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
OCTAL = re.compile(r"[-+]?0[0-7_]+")
"""A plain scalar YAML 1.1 reads as an octal integer (``010``); ``0o10`` and ``0x10`` are not this form."""


def _construct_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    """The int or float of ``node`` as the safe loader reads it, refusing a YAML 1.1 form that reads as another
    value than its digits say: octal (``010`` is 8; ``07`` and ``00`` read as written) or base 60 (``1:04`` is 64).
    The error's mark gives the line and column."""
    value = yaml.constructor.SafeConstructor.yaml_constructors[node.tag](loader, node)
    text = node.value
    if ":" in text:
        form, decimal = "a base-60 number", ""
    elif node.tag == INT_TAG and OCTAL.fullmatch(text) and value != int(text.replace("_", "")):
        form, decimal = "an octal number", f", {int(text.replace('_', ''))} for the decimal number"
    else:
        return value
    raise yaml.constructor.ConstructorError(
        None, None, f"{text} is {form} in YAML 1.1 and reads as {value}: write {value} for that{decimal}, or quote it "
        f"('{text}') for text", node.start_mark,
    )


def _refuse_yaml11_numbers(loader: type[yaml.SafeLoader]) -> None:
    """Make ``loader`` (a safe loader class) refuse :func:`_construct_number`'s forms; other numbers load as before.
    Registering again changes nothing."""
    loader.add_constructor(INT_TAG, _construct_number)
    loader.add_constructor(FLOAT_TAG, _construct_number)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when built, as jsonargparse's, so syntax errors read the same) refusing a mapping
    that repeats a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be set again
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_refuse_yaml11_numbers(_UniqueKeyLoader)


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The content of the YAML file ``path``; a missing or unreadable file, bytes that are not UTF-8, a syntax
    error, a repeated key or more than :data:`MAX_VALUES` values (an alias bomb) is a :class:`ConfigError` naming
    the file (and line); ``what`` names the file's role."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a {what}")
    if path.exists() and not path.is_file():  # a FIFO or device would block the read
        raise ConfigError(f"{path}: not a regular file, so not a {what}")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8; a {what} "
                          "is YAML text") from None
    try:
        content = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_location(path, exc) or f"{path}: {one_line(exc)}") from exc
    if _expanded_size(content, MAX_VALUES) > MAX_VALUES:
        raise ConfigError(f"{path}: more than {MAX_VALUES:,} values (an alias, *name, counted at each use); a {what} "
                          "this large is a mistake or an alias bomb")
    return content


MAX_VALUES = 100_000
"""The most values (mappings, lists and scalars, aliases counted as often as they are used) a YAML file may hold."""


class AliasBombError(yaml.YAMLError):
    """YAML whose aliases expand to more than :data:`MAX_VALUES` values (a YAML error, as jsonargparse reports)."""


def guard_jsonargparse_yaml() -> None:
    """Make jsonargparse's YAML loader, which reads what :func:`read_yaml` does not (a file given to one group,
    ``--model m.yaml``; a value on the command line, ``--model.encoders '[...]'``), refuse an alias bomb too: it
    expanded one to 9 GB of memory before. Its loader class refuses YAML 1.1 octal and base-60 numbers as
    :func:`read_yaml` does (``--model.embedding_dim 1:04`` was 64)."""
    from jsonargparse import set_loader
    from jsonargparse._loaders_dumpers import get_yaml_default_loader, yaml_load  # jsonargparse's own, wrapped

    _refuse_yaml11_numbers(get_yaml_default_loader())

    def checked(stream: str) -> Any:
        value = yaml_load(stream)
        if _expanded_size(value, MAX_VALUES) > MAX_VALUES:
            raise AliasBombError(f"more than {MAX_VALUES:,} values (an alias, *name, counted at each use); a value "
                                 "this large is a mistake or an alias bomb")
        return value

    set_loader("yaml", checked, exceptions=(yaml.YAMLError,))


def _expanded_size(content: Any, limit: int) -> int:
    """The number of values in ``content``, counting a shared (aliased) value at each use; stops past ``limit``."""
    count, stack = 0, [content]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count
