"""Cosine k-nearest-neighbour item graphs, built in row chunks so peak memory stays far below ``N²``.

The frozen item-item graph of FREEDOM (Zhou & Shen, MM 2023) and CRANE (arXiv 2601.11151, §3.4): per modality,
keep the top-``k`` cosine neighbours of every item (the item itself included, as FREEDOM does), weight each
kept edge ``1/k`` (FREEDOM's ``D^-1/2 A D^-1/2`` on a graph whose every row has ``k`` entries), and mix the
modalities ``S = Σ_m w_m S_m``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recplug.core.errors import ConfigError

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
    rows, cols, values = [], [], []
    for modality, weight in weights.items():
        neighbours = knn_indices(features[modality], k, chunk_bytes)
        num = neighbours.shape[0]
        rows.append(torch.arange(num, device=neighbours.device).repeat_interleave(k))
        cols.append(neighbours.reshape(-1))
        values.append(torch.full((num * k,), weight / k, device=neighbours.device))
    return torch.cat(rows), torch.cat(cols), torch.cat(values)


def knn_cache_key(features: dict[str, Tensor], k: int, weights: dict[str, float]) -> str:
    """sha256 of the features used, ``k`` and the modality weights: the graph's cache file name."""
    digest = hashlib.sha256(f"k={k};weights={sorted(weights.items())}".encode())
    for modality in sorted(weights):
        digest.update(modality.encode())
        digest.update(np.ascontiguousarray(features[modality].detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()


def cached_knn_coo(
    features: dict[str, Tensor], k: int, weights: dict[str, float], cache_dir: Path | None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`knn_coo`, loaded from ``cache_dir/knn/<sha256>.pt`` when present, else built and saved there."""
    if cache_dir is None:
        return knn_coo(features, k, weights, chunk_bytes)
    path = Path(cache_dir) / "knn" / f"{knn_cache_key(features, k, weights)}.pt"
    if path.exists():
        stored = torch.load(path, weights_only=True)
        return stored["rows"], stored["cols"], stored["values"]
    rows, cols, values = knn_coo(features, k, weights, chunk_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"rows": rows, "cols": cols, "values": values}, partial)
    partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return rows, cols, values
