"""Render the hook reference (docs/hooks.md) from the hookspec docstrings: ``python -m recplug.core.model.hookdocs``.

A test fails when docs/hooks.md is out of date, or when a hookspec lacks its **Called:**, **Cardinality:** or
example section, so the reference can never drift from the code.
"""

from __future__ import annotations

import inspect

from recplug.hookspecs import RecplugSpecs

REQUIRED_SECTIONS = ("**Called:**", "**Cardinality:**", "Example::")


def hookspecs() -> dict[str, object]:
    """``{hook name: spec function}`` in declaration order."""
    return {name: fn for name, fn in vars(RecplugSpecs).items() if name.startswith("recplug_")}


def signature(name: str) -> str:
    """``recplug_x(arg, ...)``: the hook's name and keyword arguments."""
    params = list(inspect.signature(hookspecs()[name]).parameters)[1:]  # drop self
    return f"{name}({', '.join(params)})"


def render() -> str:
    parts = [
        "# Hook reference",
        "",
        "Generated from `recplug/hookspecs.py` by `python -m recplug.core.model.hookdocs > docs/hooks.md`; "
        "do not edit by hand.",
        "Any method named `recplug_*` on a component (or function in an entry-point plugin module) implements "
        "the hook of that name; it may accept any subset of the arguments.",
        "",
    ]
    for name, fn in hookspecs().items():
        parts += [f"## `{signature(name)}`", "", inspect.cleandoc(fn.__doc__ or ""), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
