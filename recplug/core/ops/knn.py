"""Cosine k-nearest-neighbour item graphs, built in row chunks so peak memory stays far below ``N²``.

The frozen item-item graph of FREEDOM (Zhou & Shen, MM 2023) and CRANE (arXiv 2601.11151, §3.4): per modality,
keep the top-``k`` cosine neighbours of every item (the item itself included, as FREEDOM does), weight each
kept edge ``1/k`` (FREEDOM's ``D^-1/2 A D^-1/2`` on a graph whose every row has ``k`` entries), and mix the
modalities ``S = Σ_m w_m S_m``.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recplug.core.errors import ConfigError
from recplug.core.ops.io import atomic_write

DEFAULT_CHUNK_BYTES = 128 * 2**20
"""Memory for one chunk of the similarity matrix (``chunk_rows x N`` floats)."""


def knn_indices(features: Tensor, k: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """Top-``k`` cosine neighbours of every row of ``features`` (``[N, D]``), as ``LongTensor[N, k]``.

    Rows are processed ``max(1, chunk_bytes // (4 N))`` at a time, so the largest temporary is one
    ``chunk x N`` block of similarities, never ``N x N``.
    """
    num = features.shape[0]
    if not 0 < k <= num:
        raise ConfigError(f"kNN graph: k={k} must be between 1 and the number of items ({num})")
    unit = F.normalize(features.detach().float(), dim=1)
    rows = max(1, chunk_bytes // (4 * num))
    out = torch.empty(num, k, dtype=torch.long, device=features.device)
    for start in range(0, num, rows):
        sims = unit[start : start + rows] @ unit.T
        out[start : start + rows] = sims.topk(k, dim=1).indices
    return out


def knn_coo(
    features: dict[str, Tensor], k: int, weights: dict[str, float], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> tuple[Tensor, Tensor, Tensor]:
    """COO triplets ``(rows, cols, values)`` of ``S = Σ_m w_m S_m`` with ``S_m`` the row-``1/k`` kNN graph of
    modality ``m``. Duplicate entries (an edge found in two modalities) are left for the caller to sum."""
    cols = [knn_indices(features[modality], k, chunk_bytes).reshape(-1) for modality in weights]
    rows, values = knn_rows_and_values(features[next(iter(weights))].shape[0], k, weights, cols[0].device)
    return rows, torch.cat(cols), values


def knn_rows_and_values(num: int, k: int, weights: dict[str, float], device: torch.device) -> tuple[Tensor, Tensor]:
    """The ``rows`` and ``values`` of :func:`knn_coo`, which depend only on the graph's size, ``k`` and the
    weights: per modality (in ``weights`` order), row ``i`` repeated ``k`` times, each entry ``w_m / k``."""
    rows = torch.arange(num, device=device).repeat_interleave(k).repeat(len(weights))
    values = torch.cat([torch.full((num * k,), weight / k, device=device) for weight in weights.values()])
    return rows, values


def knn_cache_key(features: dict[str, Tensor], k: int, weights: dict[str, float]) -> str:
    """sha256 of the features used, ``k`` and the modality weights: the graph's cache file name."""
    digest = hashlib.sha256(f"k={k};weights={sorted(weights.items())}".encode())
    for modality in sorted(weights):
        digest.update(modality.encode())
        digest.update(np.ascontiguousarray(features[modality].detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()


def _cache_problem(stored: object, expected_rows: Tensor, expected_values: Tensor, num: int) -> str | None:
    """Why ``stored`` is not the kNN graph of :func:`knn_coo` with these rows and values (``None`` if it is)."""
    if not isinstance(stored, dict) or set(stored) != {"rows", "cols", "values"}:
        keys = sorted(map(str, stored)) if isinstance(stored, dict) else type(stored).__name__
        return f"expected the tensors rows, cols and values, found {keys}"
    if not all(isinstance(t, Tensor) for t in stored.values()):
        return "rows, cols and values are not all tensors"
    cols = stored["cols"]
    if cols.dtype != torch.long or cols.shape != expected_rows.shape:
        return f"cols has dtype {cols.dtype} and shape {tuple(cols.shape)}, expected int64 {tuple(expected_rows.shape)}"
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= num):
        return f"cols has item ids outside 0..{num - 1}"
    for name, expected in (("rows", expected_rows), ("values", expected_values)):
        tensor = stored[name]
        if tensor.dtype != expected.dtype or not torch.equal(tensor, expected):
            return f"{name} is not the graph's ({tensor.dtype}, shape {tuple(tensor.shape)})"
    return None


def cached_knn_coo(
    features: dict[str, Tensor], k: int, weights: dict[str, float], cache_dir: Path | None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`knn_coo`, loaded from ``cache_dir/knn/<sha256>.pt`` when present, else built and saved there.

    A cache file that cannot be read or does not hold this graph (truncated, overwritten, of another shape) is
    reported with a one-line warning naming it, then rebuilt and rewritten.
    """
    if cache_dir is None:
        return knn_coo(features, k, weights, chunk_bytes)
    weights = dict(sorted(weights.items()))  # the order the cache key has, whatever order a config lists them in
    path = Path(cache_dir) / "knn" / f"{knn_cache_key(features, k, weights)}.pt"
    if path.exists():
        first = features[next(iter(weights))]
        rows, values = knn_rows_and_values(first.shape[0], k, weights, first.device)
        try:
            stored = torch.load(path, map_location=first.device, weights_only=True)
        except Exception as exc:  # whatever the unpickler or zip reader raises, the file is not a readable graph
            problem: str | None = f"unreadable: {type(exc).__name__}"
        else:
            problem = _cache_problem(stored, rows, values, first.shape[0])
        if problem is None:
            return rows, stored["cols"], values
        warnings.warn(f"{path}: corrupted kNN graph cache ({problem}); rebuilding it", stacklevel=2)
    rows, cols, values = knn_coo(features, k, weights, chunk_bytes)
    with atomic_write(path, "wb") as handle:  # a concurrent reader never sees half a file
        torch.save({"rows": rows, "cols": cols, "values": values}, handle)
    return rows, cols, values
