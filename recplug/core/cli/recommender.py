"""Recommendations out of a trained checkpoint, in the dataset's own ids: the Python API of notebooks
(``recplug.Recommender``), and what ``recplug export`` and ``recplug serve`` are built on.

    from recplug import Recommender

    rec = Recommender.from_checkpoint("runs/mf/version_0/checkpoints/last.ckpt")
    rec.recommend(["u12", "u40"], k=20)        # one Ranked(items, scores) per user, seen items excluded
    rec.recommend_profile(["i3", "i9"], k=20)  # a new user given the items of their profile (fold-in)
    rec.similar_items(["i3"], k=10)            # nearest items by inner product of the final embeddings
    rec.score(["u12"], ["i3", "i9"])           # float32 [users, items] scores

The model is rebuilt from the configuration ``recplug fit`` records in every checkpoint (or from ``config``)
through the CLI's own parser, so the same plugins, data and splits are built as when it trained; the weights are
opened weights-only through :mod:`recplug.core.model.checkpoint` (a URL works as in ``fit``). Rankings use the
final embeddings ``RecModule.cached_embeddings`` returns and :func:`recplug.core.eval.evaluator.search_users`
with exact search, the code ``recplug predict`` (``TopKWriter``) ranks with, and exclude by default the splits
``topk.exclude`` names in the recorded config (train and valid unless changed), so ``recommend`` returns the
lists ``recplug predict`` writes.

A new user's fold-in (``recommend_profile``) is the mean of the profile items' final embeddings, scored by inner
product like a known user: item ``j`` scores ``mean_{i in profile} <e_i, e_j>``, the average item-to-item
similarity to the profile (the item-based fold-in of dot-product models; it uses no trained user vector, so it
is no substitute for retraining). The profile items are excluded. ``similar_items`` is the one-item profile.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from recplug.core.errors import ConfigError, InvalidArgument, ParserError, check_number, one_line

CSR = tuple[Tensor, Tensor]
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
LOAD_TRAINER = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu",
                "devices": 1}
"""The Trainer a rebuild instantiates (the CLI parser always builds one; nothing runs on it)."""


@dataclass(frozen=True)
class Ranked:
    """One ranked list: item ids (the dataset's own) and their scores, best first."""

    items: list[Any]
    scores: list[float]


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up notices (seed, accelerators, tips) silenced while a run is rebuilt."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def note_recorded_data(rec: Any, ckpt_path: Any, config: Any) -> None:
    """Say on stderr which data a command rebuilt from a checkpoint's recorded config (no ``config`` given) read:
    the record chose the file."""
    if config is None:
        path = ((rec.config or {}).get("data") or {}).get("path")
        print(f"note: no --config: the model and data (data.path {path}) come from the config recorded in "
              f"{ckpt_path}", file=sys.stderr)


def _built_cli(args: Any, where: str | None) -> Any:
    """The CLI built on ``args`` without running it; the parser's refusal (:class:`ParserError`) is prefixed with
    ``where`` when given."""
    from recplug.core.cli.lightning import run_cli

    try:
        with _quiet_lightning(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            return run_cli(args, run=False)
    except ParserError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def load_run(ckpt_path: str | Path, config: str | Path | None = None) -> tuple[Any, Any, dict[str, Any], dict]:
    """``(RecModule with the checkpoint's weights, its RecDataModule, the resolved config, the checkpoint)``.

    The model and data are built from ``config`` (a YAML file, as ``recplug predict --config``) or else from the
    configuration the checkpoint records; the checkpoint is opened weights-only. A checkpoint of other data or
    other components than those built here is refused (its ids would be another dataset's, or its weights
    another model's), and a config the parser refuses raises :class:`ConfigError` with its one-line message."""
    from recplug.core.model.checkpoint import CheckpointError, check_state_matches, local_checkpoint, open_checkpoint

    _check_path("ckpt_path", ckpt_path, "a checkpoint's path or URL")
    if config is not None:
        _check_path("config", config, "a YAML config's path", ", or leave it out for the one the checkpoint records")
    path = local_checkpoint(ckpt_path)
    checkpoint = open_checkpoint(path, shown=str(ckpt_path))  # a missing or unsafe file fails before the CLI
    from recplug.core.cli.lightning import (
        check_config_sections, check_same_components, note_component_settings, recorded_settings,
    )

    record = checkpoint.get("recplug") or {}
    if config is not None:
        args: Any = ["--config", str(config), *(f"--trainer.{key}={value}" for key, value in LOAD_TRAINER.items())]
    elif isinstance(record.get("config"), dict):
        check_config_sections(record["config"], f"{ckpt_path}: its recorded config")
        args = recorded_settings(record["config"])
        args["trainer"] = dict(LOAD_TRAINER)
    else:
        raise CheckpointError(f"{ckpt_path}: the checkpoint records no config (it predates recplug export); "
                              "give the config it was trained with (--config)")
    cli = _built_cli(args, None if config is not None else f"{ckpt_path}: its recorded config")
    settings = cli.config.as_dict()
    check_same_components(str(ckpt_path), checkpoint, settings)  # LightGCN weights fit MF's shapes
    note_component_settings(str(ckpt_path), checkpoint, settings)
    model, datamodule = cli.model, cli.datamodule
    data = datamodule.data
    recorded = record.get("data_sha256")
    if recorded and recorded != data.content_hash():
        raise CheckpointError(
            f"{ckpt_path}: trained on other data ({record.get('data')!r}, sha256 {recorded[:12]}) than the "
            f"configured {data.source or data.name!r} (sha256 {data.content_hash()[:12]}); give the data it was "
            "trained on (data.path in --config)"
        )
    model.prepare(data, datamodule.cache_dir)
    check_state_matches(str(ckpt_path), checkpoint, model.state_dict())
    for key, weight in checkpoint["state_dict"].items():
        if torch.is_tensor(weight) and weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
            raise CheckpointError(f"{ckpt_path}: weight {key} holds NaN or inf (the run diverged); "
                                  "use a checkpoint from before it did")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, datamodule, settings, checkpoint


def _check_path(argument: str, value: Any, what: str, otherwise: str = "") -> None:
    """Refuse a ``ckpt_path`` or ``config`` that is no path, or is empty (``""`` would name the current folder,
    or reach the parser as an empty ``--config``); ``otherwise`` ends the advice for an empty one."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{argument} must be {what}, got {one_line(repr(value), 80)}")
    if not str(value).strip():
        raise ConfigError(f"{argument} is empty; give {what}{otherwise}")


def _splits(argument: str, exclude: Any) -> tuple[str, ...]:
    """``exclude``, one split or a list of them, as a tuple of split names (``"train"`` is one split)."""
    from recplug.core.data.dataset import SPLITS
    from recplug.core.data.formats.text import first_repeated

    listed = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(listed, (list, tuple, set, frozenset)):
        raise ConfigError(f"{argument} must be a split or a list of splits ({', '.join(SPLITS)}), got "
                          f"{one_line(repr(exclude), 80)}")
    unknown = [split for split in listed if split not in SPLITS]
    if unknown:
        raise ConfigError(f"{argument}: unknown split(s) {one_line(repr(unknown), 80)}; choose from "
                          f"{', '.join(SPLITS)}")
    repeated = first_repeated(list(listed))
    if repeated is not None:
        raise ConfigError(f"{argument}: {repeated!r} is given twice")
    return tuple(listed)


class _ShownId:
    """An id as an error message quotes it (its ``repr``), a long one cut: an HTTP request may hold megabytes."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        from recplug.core.data.formats.text import QUOTE_LIMIT, quoted

        return quoted(self.raw) if isinstance(self.raw, str) else one_line(repr(self.raw), QUOTE_LIMIT)


def _record(argument: str, value: Any) -> dict[str, Any]:
    """``config`` or ``provenance`` of :class:`Recommender`: a mapping, or ``None`` for none."""
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(f"Recommender.{argument} must be a mapping (or None), got {one_line(repr(value), 80)}")
    return dict(value or {})


def _seen(value: Any, num_users: int, num_items: int) -> CSR | None:
    """``seen`` of :class:`Recommender` as long CPU tensors, checked to be a CSR of ``num_users`` rows whose
    items are in ``[0, num_items)``; ``None`` for none."""
    if value is None:
        return None
    parts = [_integers(part) for part in value] if isinstance(value, (tuple, list)) and len(value) == 2 else None
    if parts is None or parts[0] is None or parts[1] is None:
        raise ConfigError("Recommender.seen must be a CSR (indptr [num_users + 1], item indices): two 1-d integer "
                          f"tensors, got {one_line(repr(value), 80)}")
    indptr, items = parts
    if indptr.shape != (num_users + 1,):
        raise ConfigError(f"Recommender.seen must be a CSR whose indptr has num_users + 1 ({num_users + 1}) "
                          f"entries, got {list(indptr.shape)}")
    if indptr[0] != 0 or indptr[-1] != items.numel() or bool((indptr[1:] < indptr[:-1]).any()):
        raise ConfigError(f"Recommender.seen must be a CSR whose indptr starts at 0, never decreases and ends at the "
                          f"number of item indices ({items.numel()}), got {one_line(repr(indptr.tolist()), 80)}")
    outside = items[(items < 0) | (items >= num_items)]
    if outside.numel():
        raise ConfigError(f"Recommender.seen must hold item indices in [0, {num_items}) (the number of items), "
                          f"got {outside[0].item()}")
    return indptr, items


def _integers(part: Any) -> Tensor | None:
    """``part`` as a long CPU tensor when it is a 1-d tensor or array of integers (any dtype when empty)."""
    if isinstance(part, np.ndarray) and (part.dtype.kind in "iu" or part.size == 0):
        part = torch.from_numpy(part.astype(np.int64))
    if not isinstance(part, Tensor) or part.ndim != 1 or (part.numel() and part.dtype not in INTEGER_DTYPES):
        return None
    return part.long().cpu()


def _embeddings(argument: str, value: Any) -> Tensor:
    """``users`` or ``items`` of :class:`Recommender`, a 2-d tensor, as float32 on the CPU."""
    if not isinstance(value, Tensor) or value.ndim != 2:
        shown = f"shape {list(value.shape)}" if isinstance(value, Tensor) else one_line(repr(value), 80)
        raise ConfigError(f"Recommender.{argument} must be a 2-d tensor [num_{argument}, d], got {shown}")
    if not value.is_floating_point() or value.is_meta or value.layout != torch.strided:
        # complex scores do not order, integer ones are no embeddings; meta and sparse tensors cannot be searched
        raise ConfigError(f"Recommender.{argument} must be a dense real floating-point tensor, got a {value.dtype} "
                          f"{str(value.layout).removeprefix('torch.')} tensor on {value.device}")
    if value.shape[1] == 0:
        raise ConfigError(f"Recommender.{argument} must have at least one column (d >= 1), got shape "
                          f"{list(value.shape)}")
    return value.detach().float().cpu()


def _id_rows(
    argument: str, ids: Sequence[Any] | None, rows: int, embeddings: str
) -> tuple[list[Any], dict[str, int]]:
    """``(ids, {str(id): row})`` of ``rows`` embedding rows (``None``: ``0..rows-1``); one distinct id per row,
    given as a list (or 1-d array or tensor), never one string (its characters would become the ids)."""
    if ids is None:
        listed: list[Any] = list(range(rows))
    elif isinstance(ids, (np.ndarray, Tensor)) and ids.ndim == 1:
        listed = ids.tolist()
    elif isinstance(ids, (str, bytes, bytearray, Mapping, np.ndarray, Tensor)) or not isinstance(ids, Iterable):
        raise ConfigError(f"Recommender.{argument} must be a list of ids, one per row of {embeddings}, got "
                          f"{one_line(repr(ids), 80)}")
    else:
        listed = list(ids)
    table = {str(raw): row for row, raw in enumerate(listed)}
    if len(listed) != rows:
        raise ConfigError(f"Recommender.{argument} must hold one id per row of {embeddings} ({rows}), "
                          f"got {len(listed)}")
    if len(table) != rows:
        twice = next(raw for row, raw in enumerate(listed) if table[str(raw)] != row)
        raise ConfigError(f"Recommender.{argument} must be distinct (ids are matched as text), got "
                          f"{_ShownId(twice)!r} twice")
    return listed, table


class Recommender:
    """Top-K recommendations, similar items and scores from a model's final embeddings, in the dataset's ids.

    Build it with :meth:`from_checkpoint`. Ids are the dataset's raw ids when its files kept them (returned as
    the strings they were read as), else the 0-based indices; either may be given as ``str`` or ``int``, one id
    alone or a list (or 1-d array or tensor) of them. Unknown ids and ``k`` outside ``1..num_items`` raise
    :class:`~recplug.core.errors.InvalidArgument`, anything else given as ids :class:`ConfigError`.

    Args:
        users: final user embeddings ``[M, d]``.
        items: final item embeddings ``[N, d]``.
        user_ids: the id of each user row (``None``: ``0..M-1``).
        item_ids: the id of each item row (``None``: ``0..N-1``).
        seen: CSR ``(indptr [M+1], items)`` of each user's items that are never recommended (or ``None``).
        exclude: the splits ``seen`` holds (for records), a list or one split.
        config: the configuration the model was built from (the ``fit`` config the checkpoint records, whose
            :func:`~recplug.core.model.provenance.hashed_config` hash is the record's, or ``config``).
        provenance: the checkpoint's provenance record (:mod:`recplug.core.model.provenance`).
        data: the dataset the model was built with (``from_checkpoint`` keeps it).
    """

    def __init__(
        self, users: Tensor, items: Tensor, user_ids: Sequence[Any] | None = None,
        item_ids: Sequence[Any] | None = None, seen: CSR | None = None, exclude: Sequence[str] = (),
        config: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None, data: Any = None,
    ) -> None:
        from recplug.core.eval.search import TorchExactSearch

        self.users, self.items = _embeddings("users", users), _embeddings("items", items)
        if not self.num_items:
            raise ConfigError(f"Recommender.items must hold at least one item, got shape {list(self.items.shape)}")
        if self.items.shape[1] != self.users.shape[1]:
            raise ConfigError(f"Recommender.items must have the width of users ({self.users.shape[1]}), got "
                              f"shape {list(self.items.shape)}")
        self.user_ids, self._user_row = _id_rows("user_ids", user_ids, self.users.shape[0], "users")
        self.item_ids, self._item_row = _id_rows("item_ids", item_ids, self.items.shape[0], "items")
        self.seen = _seen(seen, self.num_users, self.num_items)
        self.exclude = _splits("Recommender.exclude", exclude)
        self.config, self.provenance = _record("config", config), _record("provenance", provenance)
        self.data = data
        self.search = TorchExactSearch().build(self.items)

    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | Path, config: str | Path | None = None, exclude: Sequence[str] | None = None
    ) -> Recommender:
        """Load a checkpoint of ``recplug fit`` (a path or an ``http(s)://``/``file://`` URL).

        Args:
            ckpt_path: the checkpoint.
            config: the YAML config to rebuild the model and data with (default: the one the checkpoint records).
            exclude: splits whose items ``recommend`` never returns, a list or one split (default: the
                config's ``topk.exclude``, train and valid unless changed, as ``recplug predict``).
        """
        if exclude is not None:  # before the (slow) load; the config's topk.exclude was checked when it trained
            exclude = _splits("exclude", exclude)
        model, datamodule, resolved, checkpoint = load_run(ckpt_path, config)
        data = datamodule.data
        if exclude is None:
            exclude = (resolved.get("topk") or {}).get("exclude") or ()
        splits = tuple(split for split in exclude if split in data.splits)
        users, items = model.cached_embeddings()
        record = dict(checkpoint.get("recplug") or {})
        trained = record.pop("config", None)
        built_from = resolved if config is not None or not isinstance(trained, dict) else trained
        return cls(users, items, data.user_ids, data.item_ids, data.user_csr(splits) if splits else None, splits,
                   built_from, record, data)

    # ------------------------------------------------------------------ ids
    @property
    def num_users(self) -> int:
        return self.users.shape[0]

    @property
    def num_items(self) -> int:
        return self.items.shape[0]

    @staticmethod
    def _listed(ids: Any, kind: str, owner: str, argument: str) -> list[Any]:
        """``ids`` as a list: one id alone (``str`` or ``int``) is a list of one, a 1-d array or tensor its
        values; anything else but a collection of ids (``None``, a float, bytes, a mapping) is refused."""
        if isinstance(ids, (str, int, np.integer)):
            return [ids]
        if isinstance(ids, (np.ndarray, Tensor)) and ids.ndim == 1:
            return ids.tolist()
        if not isinstance(ids, Iterable) or isinstance(ids, (bytes, bytearray, Mapping, AbstractSet, np.ndarray,
                                                              Tensor)):  # a set has no order to answer in
            raise ConfigError(f"{owner}.{argument} must be a list of {kind} ids (or one id), got "
                              f"{one_line(repr(ids), 80)}")
        return list(ids)

    def _rows(self, ids: Any, table: dict[str, int], kind: str, owner: str, argument: str) -> Tensor:
        ids = self._listed(ids, kind, owner, argument)
        unknown = [raw for raw in ids if str(raw) not in table]
        if unknown:
            given = _ShownId(unknown[0]) if len(unknown) == 1 else [_ShownId(raw) for raw in unknown[:5]]
            raise InvalidArgument(owner, argument, given, f"{kind} ids of the dataset ({len(table)} {kind}s)")
        return torch.tensor([table[str(raw)] for raw in ids], dtype=torch.long)

    def user_rows(self, user_ids: Any, owner: str = "recommend") -> Tensor:
        """Row indices of ``user_ids``; an unknown id raises ``InvalidArgument`` naming ``<owner>.user_ids``."""
        return self._rows(user_ids, self._user_row, "user", owner, "user_ids")

    def item_rows(self, item_ids: Any, owner: str = "similar_items") -> Tensor:
        """Row indices of ``item_ids``; an unknown id raises ``InvalidArgument`` naming ``<owner>.item_ids``."""
        return self._rows(item_ids, self._item_row, "item", owner, "item_ids")

    def check_k(self, k: int, owner: str = "recommend") -> None:
        """Refuse a ``k`` that is no integer in ``1..num_items``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidArgument(owner, "k", k, f"an integer in [1, {self.num_items}] (the number of items)")
        check_number(owner, "k", int(k), 1, self.num_items, bounds="the number of items")

    # ------------------------------------------------------------------ rankings
    def _ranked(self, queries: Tensor, rows: Tensor, k: int, seen: CSR | None) -> list[Ranked]:
        """Top-``k`` of ``queries[rows]`` with the items of their ``seen`` rows left out, as TopKWriter ranks."""
        from recplug.core.eval.evaluator import ranked_lists, search_users

        scores, items = search_users(queries, rows, self.search, k, seen)
        return [Ranked([self.item_ids[i] for i in ranked], ranked_scores)
                for ranked, ranked_scores in ranked_lists(scores, items)]

    @staticmethod
    def _rows_csr(rows: Sequence[Tensor]) -> CSR:
        """CSR of one item row per query."""
        indptr = torch.zeros(len(rows) + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(torch.tensor([row.numel() for row in rows], dtype=torch.long), 0)
        return indptr, torch.cat(list(rows)) if len(rows) else torch.empty(0, dtype=torch.long)

    def recommend(self, user_ids: Any, k: int = 20, exclude_seen: bool = True) -> list[Ranked]:
        """The top-``k`` items of each user (one :class:`Ranked` per id, in order), the items of the excluded
        splits left out when ``exclude_seen`` (fewer than ``k`` when the rest of the catalogue is shorter)."""
        self.check_k(k)
        if not isinstance(exclude_seen, (bool, np.bool_)):
            raise InvalidArgument("recommend", "exclude_seen", exclude_seen, "True or False")
        rows = self.user_rows(user_ids)
        return self._ranked(self.users, rows, k, self.seen if exclude_seen else None)

    def recommend_profile(self, item_ids: Any, k: int = 20) -> Ranked:
        """The top-``k`` items of a new user whose profile is ``item_ids`` (the mean of their final embeddings, an
        item given twice counted twice; see the module's docstring), the profile items left out."""
        self.check_k(k, "recommend_profile")
        rows = self.item_rows(item_ids, "recommend_profile")
        if rows.numel() == 0:
            raise InvalidArgument("recommend_profile", "item_ids", [], "a non-empty list of item ids")
        query = self.items[rows].mean(0, keepdim=True)
        return self._ranked(query, torch.zeros(1, dtype=torch.long), k, self._rows_csr([rows]))[0]

    def similar_items(self, item_ids: Any, k: int = 10) -> list[Ranked]:
        """The ``k`` items with the largest inner product with each item (itself left out), one
        :class:`Ranked` per id: :meth:`recommend_profile` of each item alone."""
        self.check_k(k, "similar_items")
        rows = self.item_rows(item_ids)
        queries = torch.arange(rows.numel())
        return self._ranked(self.items[rows], queries, k, self._rows_csr([row.view(1) for row in rows]))

    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """The model's scores ``float32 [len(user_ids), len(item_ids)]``: inner products of final embeddings."""
        users = self.users[self.user_rows(user_ids, "score")]
        items = self.items[self.item_rows(item_ids, "score")]
        return (users @ items.T).numpy()
