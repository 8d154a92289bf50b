"""Checks of what the forward hooks return, so a plugin's wrong value is one :class:`PluginError` naming the
provider (its config key and class, or its module) and the hook, not an ``IndexError`` or ``AttributeError`` deep
in the loss. Each check is a few ``isinstance`` and shape comparisons per step: no host sync.

Providers are named from pluggy's call order: it calls the implementations last-registered first and leaves out
``None`` results, so a result list shorter than the providers means one returned nothing."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from recplug.core.errors import PluginError
from recplug.core.model.types import GraphView


def _shown(value: Any) -> str:
    """A short description of a returned value: a tensor by its shape, anything else by its type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return "None" if value is None else f"a {type(value).__name__}"


def _is_matrix(value: Any, rows: int | None) -> bool:
    """Is ``value`` a 2-D tensor (with ``rows`` rows, unless ``None``)?"""
    return isinstance(value, Tensor) and value.dim() == 2 and (rows is None or value.shape[0] == rows)


def check_content(content: Any, owners: Sequence[str], num_items: int) -> None:
    """``recplug_fuse``'s content: ``None`` (no fusion) or a ``[num_items, d]`` tensor."""
    if content is not None and not _is_matrix(content, num_items):
        raise PluginError(f"{', '.join(owners)}: recplug_fuse returned {_shown(content)}; expected a "
                          f"[{num_items}, d] tensor (a row per item)")


def check_views(views: Any, owners: Sequence[str], user_rows: int, item_rows: int) -> None:
    """``recplug_encode``'s results: one :class:`GraphView` per provider (``owners``, in the order of ``views``),
    with a row per user and per item."""
    if len(views) != len(owners):
        raise PluginError(f"recplug_encode returned {len(views)} views for {len(owners)} providers "
                          f"({', '.join(owners)}): one returned None; each must return its GraphView")
    for owner, view in zip(owners, views):
        if not isinstance(view, GraphView):
            raise PluginError(f"{owner}: recplug_encode returned {_shown(view)}; expected a GraphView(name, users, "
                              "items)")
        if not (_is_matrix(view.users, user_rows) and _is_matrix(view.items, item_rows)):
            raise PluginError(
                f"{owner}: recplug_encode's view {view.name!r} has users {_shown(view.users)} and items "
                f"{_shown(view.items)}; expected [{user_rows}, d] and [{item_rows}, d] tensors (a row per user "
                "and per item)"
            )


def check_combined(combined: Any, owners: Sequence[str], user_rows: int, item_rows: int) -> tuple[Tensor, Tensor]:
    """``recplug_combine``'s ``(users, items)``: two 2-D tensors of one width, a row per user and per item."""
    pair = combined if isinstance(combined, (tuple, list)) and len(combined) == 2 else None
    if pair is None or not (_is_matrix(pair[0], user_rows) and _is_matrix(pair[1], item_rows)) or (
        pair[0].shape[1] != pair[1].shape[1]
    ):
        got = _shown(combined) if pair is None else f"({_shown(pair[0])}, {_shown(pair[1])})"
        raise PluginError(f"{', '.join(owners)}: recplug_combine returned {got}; expected (users, items) tensors "
                          f"of shapes [{user_rows}, d] and [{item_rows}, d]")
    return pair[0], pair[1]


def terms_are_well_formed(results: Sequence[Any], num_providers: int) -> bool:
    """Did every ``recplug_aux_loss`` provider return a dict of named scalar tensors?"""
    return len(results) == num_providers and all(
        isinstance(terms, dict)
        and all(isinstance(name, str) and isinstance(value, Tensor) and value.dim() == 0 for name, value in terms.items())
        for terms in results
    )


def bad_terms(owner: str, terms: Any) -> PluginError:
    """The error for ``owner``'s ``recplug_aux_loss`` result ``terms`` that is not a dict of named scalars."""
    if isinstance(terms, dict):
        wrong = next(f"{name!r}: {_shown(value)}" for name, value in terms.items()
                     if not (isinstance(name, str) and isinstance(value, Tensor) and value.dim() == 0))
        return PluginError(f"{owner}: recplug_aux_loss returned the term {wrong}; expected a dict of names to scalar "
                           "tensors")
    return PluginError(f"{owner}: recplug_aux_loss returned {_shown(terms)}; expected a dict of names to scalar "
                       "tensors ({} for no term)")
