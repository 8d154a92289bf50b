"""The in-memory dataset every reader produces and every plugin sees (GRecX's DataManager output)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from recplug.core.errors import DataError
from recplug.core.ops.sparse import distinct_pairs

SPLITS = ("train", "valid", "test")


def first_nonfinite_row(matrix: np.ndarray | Tensor) -> int | None:
    """The first row of the 2-D ``matrix`` holding a NaN or an infinity, or ``None`` when every value is finite: the
    one scan of feature values (the readers call it to name the file's row, :meth:`InteractionData.validate` for
    features built in memory)."""
    finite = torch.isfinite(torch.as_tensor(matrix)).all(dim=1)  # a numpy array is viewed, not copied
    return None if bool(finite.all()) else int((~finite).nonzero()[0])


@dataclass
class InteractionData:
    """Interactions per split plus item modality features, with 0-based contiguous ids.

    Attributes:
        name: dataset name (used in logs and cache keys).
        num_users: number of users; user ids are ``0 .. num_users-1``.
        num_items: number of items; item ids are ``0 .. num_items-1``.
        splits: ``{"train"|"valid"|"test": (users LongTensor[E], items LongTensor[E])}``; ``valid`` may be absent.
        features: ``{modality: FloatTensor[num_items, d_m]}``; row ``i`` describes item ``i``.
        user_ids: raw id of each user index, when the source had raw ids.
        item_ids: raw id of each item index, when the source had raw ids.
        notes: one line per thing dropped or repaired while loading (shown by ``recplug data stats``).
        source: where the data came from (a folder path or a registry name).
        cold_items: sorted ``LongTensor`` of the items held out of training by the item cold-start split
            (:func:`~recplug.core.data.resolve.hold_out_items`; no ``train`` interaction), else ``None``.
    """

    name: str
    num_users: int
    num_items: int
    splits: dict[str, tuple[Tensor, Tensor]]
    features: dict[str, Tensor] = field(default_factory=dict)
    user_ids: list[str] | None = None
    item_ids: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    source: str = ""
    cold_items: Tensor | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`DataError` naming the split or modality that breaks an invariant."""
        where = self.source or self.name
        if self.num_users <= 0 or self.num_items <= 0:
            raise DataError(f"{where}: dataset has {self.num_users} users and {self.num_items} items")
        if "train" not in self.splits:
            raise DataError(f"{where}: no 'train' split")
        for split, (users, items) in self.splits.items():
            if users.shape != items.shape or users.dim() != 1:
                raise DataError(f"{where}: split {split!r} has mismatched user/item columns")
            if split in ("train", "test") and users.numel() == 0:
                raise DataError(f"{where}: split {split!r} is empty")
            if users.numel() and (int(users.min()) < 0 or int(users.max()) >= self.num_users):
                raise DataError(f"{where}: split {split!r} has user ids outside 0..{self.num_users - 1}")
            if items.numel() and (int(items.min()) < 0 or int(items.max()) >= self.num_items):
                raise DataError(f"{where}: split {split!r} has item ids outside 0..{self.num_items - 1}")
        for modality, feats in self.features.items():
            if feats.dim() != 2 or feats.shape[0] != self.num_items:
                raise DataError(
                    f"{where}: modality {modality!r} has shape {tuple(feats.shape)}, "
                    f"expected ({self.num_items}, d) with one row per item"
                )
            row = first_nonfinite_row(feats)
            if row is not None:
                raise DataError(f"{where}: modality {modality!r} has NaN or inf features (first bad row {row})")
        if self.cold_items is not None:
            cold = self.cold_items
            if cold.dim() != 1 or (cold.numel() and (int(cold.min()) < 0 or int(cold.max()) >= self.num_items)):
                raise DataError(f"{where}: cold_items must be item ids in 0..{self.num_items - 1}")
            if bool((cold[1:] <= cold[:-1]).any()):
                raise DataError(f"{where}: cold_items must be sorted and distinct")
            if bool(self.cold_mask()[self.split("train")[1]].any()):
                raise DataError(f"{where}: a cold item has a training interaction")

    # ------------------------------------------------------------------ views
    @property
    def feature_dims(self) -> dict[str, int]:
        """``{modality: feature dimension}`` in sorted modality order."""
        return {m: int(self.features[m].shape[1]) for m in sorted(self.features)}

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """The ``(users, items)`` columns of one split (empty tensors if the split is absent)."""
        if name in self.splits:
            return self.splits[name]
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty

    def cold_mask(self) -> Tensor:
        """``BoolTensor[num_items]``: is the item one of :attr:`cold_items` (all ``False`` without them)?"""
        mask = torch.zeros(self.num_items, dtype=torch.bool)
        if self.cold_items is not None:
            mask[self.cold_items] = True
        return mask

    def users_without_training(self) -> int:
        """Users with no ``train`` interaction: no model here can score them, so evaluation leaves them out."""
        return int((torch.bincount(self.split("train")[0], minlength=self.num_users) == 0).sum())

    def num_interactions(self, name: str) -> int:
        return int(self.split(name)[0].numel())

    def user_csr(self, names: tuple[str, ...] | str) -> tuple[Tensor, Tensor]:
        """CSR ``(indptr[num_users+1], indices)`` of the items each user has in the given split(s), sorted."""
        if isinstance(names, str):
            names = (names,)
        users = torch.cat([self.split(n)[0] for n in names])
        items = torch.cat([self.split(n)[1] for n in names])
        users, items = distinct_pairs(users, items, self.num_items)
        counts = torch.bincount(users, minlength=self.num_users)
        indptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return indptr, items

    def content_hash(self) -> str:
        """sha256 over the interactions and features: a cache key that changes whenever the data does."""
        digest = hashlib.sha256()
        digest.update(f"{self.num_users},{self.num_items}".encode())
        for split in sorted(self.splits):
            users, items = self.splits[split]
            digest.update(split.encode())
            digest.update(np.ascontiguousarray(users.numpy()).tobytes())
            digest.update(np.ascontiguousarray(items.numpy()).tobytes())
        for modality in sorted(self.features):
            digest.update(modality.encode())
            digest.update(np.ascontiguousarray(self.features[modality].numpy()).tobytes())
        if self.cold_items is not None:
            digest.update(b"cold_items")
            digest.update(np.ascontiguousarray(self.cold_items.numpy()).tobytes())
        return digest.hexdigest()

    def to_state(self) -> dict[str, object]:
        """Plain tensors, strings and lists (loadable with ``torch.load(weights_only=True)``): the processed cache."""
        return {
            "name": self.name, "num_users": self.num_users, "num_items": self.num_items,
            "splits": {s: list(cols) for s, cols in self.splits.items()}, "features": dict(self.features),
            "user_ids": self.user_ids, "item_ids": self.item_ids, "notes": list(self.notes), "source": self.source,
            "cold_items": self.cold_items,
        }

    @classmethod
    def from_state(cls, state: dict) -> InteractionData:
        """Inverse of :meth:`to_state` (validates again); a state of another shape (a damaged or foreign cache
        file) is a :class:`DataError`."""
        try:
            return cls(
                name=state["name"], num_users=state["num_users"], num_items=state["num_items"],
                splits={s: (cols[0], cols[1]) for s, cols in state["splits"].items()}, features=state["features"],
                user_ids=state["user_ids"], item_ids=state["item_ids"], notes=state["notes"], source=state["source"],
                cold_items=state.get("cold_items"),  # absent from caches written before the cold-start split
            )
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            raise DataError(f"not a processed dataset ({type(exc).__name__}: {exc})") from None

    def summary(self) -> dict[str, object]:
        """Statistics printed by ``recplug data stats``."""
        total = sum(self.num_interactions(s) for s in self.splits)
        return {
            "name": self.name,
            "source": self.source,
            "users": self.num_users,
            "items": self.num_items,
            **{f"{s}_interactions": self.num_interactions(s) for s in SPLITS if s in self.splits},
            "density": total / (self.num_users * self.num_items),
            "users_without_train": self.users_without_training(),
            **({"cold_items": int(self.cold_items.numel())} if self.cold_items is not None else {}),
            "modalities": {m: list(self.features[m].shape) for m in sorted(self.features)},
            "notes": list(self.notes),
        }
