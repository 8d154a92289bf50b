"""Render the hook reference (docs/hooks.md) from the hookspecs: ``python -m recplug.core.model.hookdocs``.

Each hook's section is its spec's docstring with a **Cardinality:** line rendered from the declaration beside
the spec (``@cardinality``), so the documented and the enforced cardinality are one. A test fails when
docs/hooks.md is out of date, or when a hookspec lacks its **Called:** or example section.
"""

from __future__ import annotations

import inspect

from recplug.hookspecs import Cardinality, RecplugSpecs, cardinalities

REQUIRED_SECTIONS = ("**Called:**", "Example::")


def hookspecs() -> dict[str, object]:
    """``{hook name: spec function}`` in declaration order."""
    return {name: fn for name, fn in vars(RecplugSpecs).items() if name.startswith("recplug_")}


def signature(name: str) -> str:
    """``recplug_x(arg, ...)``: the hook's name and keyword arguments."""
    params = list(inspect.signature(hookspecs()[name]).parameters)[1:]  # drop self
    return f"{name}({', '.join(params)})"


def cardinality_line(rule: Cardinality) -> str:
    """``**Cardinality:** at most one provider, configured as `model.fusion` ...``."""
    plural = rule.high is None or rule.high > 1
    where = f", configured as `{rule.key}`" if rule.key else ""
    checked = "" if (rule.low, rule.high) == (0, None) else "; checked when the model is built"
    return f"**Cardinality:** {rule} provider{'s' if plural else ''}{where}{checked}."


def section(name: str) -> str:
    """The hook's docstring with its cardinality line after the **Called:** paragraph."""
    paragraphs = inspect.cleandoc(hookspecs()[name].__doc__ or "").split("\n\n")
    called = next(i for i, text in enumerate(paragraphs) if text.startswith("**Called:**"))
    paragraphs.insert(called + 1, cardinality_line(cardinalities()[name]))
    return "\n\n".join(paragraphs)


def render() -> str:
    parts = [
        "# Hook reference",
        "",
        "Generated from `recplug/hookspecs.py` by `python -m recplug.core.model.hookdocs > docs/hooks.md`; "
        "do not edit by hand.",
        "Any method named `recplug_*` on a component (or function in an entry-point plugin module) implements "
        "the hook of that name; it may accept any subset of the arguments. A `recplug_*` name that is no hook "
        "(a typo) fails when the model is built.",
        "",
    ]
    for name in hookspecs():
        parts += [f"## `{signature(name)}`", "", section(name), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
