"""The one reader of the YAML files recplug's own commands take (search spaces, variants, configs checked before
LightningCLI parses them): UTF-8 text, the safe loader, and a key given twice in one mapping is an error (PyYAML,
like jsonargparse, would keep the last value without a word)."""

from __future__ import annotations

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
    expanded one to 9 GB of memory before."""
    from jsonargparse import set_loader
    from jsonargparse._loaders_dumpers import yaml_load  # jsonargparse's own loader, wrapped

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
