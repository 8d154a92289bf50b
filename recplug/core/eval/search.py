"""VectorSearch: top-k items by inner product, with per-query exclusions (GRecX, arXiv 2111.10342).

One interface for evaluation and ``recplug predict``: ``build(items)`` once per evaluation, then
``search(queries, k, exclude)`` per user batch. Exclusions are ``(rows, items)`` index pairs local to the batch
(see :func:`csr_pairs`). Results are ``(scores [B, k], indices [B, k])`` sorted by decreasing score; positions
with no item left (catalogue minus exclusions shorter than ``k``) hold score ``-inf`` and index ``-1``
(faiss's convention). The order of items with exactly equal scores is unspecified, as in ``torch.topk``
and faiss.

* :class:`TorchExactSearch`: exact; chunked matmul, in-place ``-inf`` masking, block-max top-k (any device).
* :class:`FaissFlatSearch`: exact; faiss ``IndexFlatIP`` (CPU). Exclusions as GRecX does: search top
  ``k + M`` (``M`` = most excluded items of a query in the batch), drop excluded candidates, keep ``k``.
  Exact because at most ``M`` candidates are dropped.
* :class:`FaissIVFSearch`, :class:`FaissHNSWSearch`: approximate, for large catalogues; measure them with
  :func:`search_recall` (numbers in docs/evaluation.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from recplug.core.errors import MAX_COUNT, check_count, check_number
from recplug.core.eval.metrics import hit_matrix

Pairs = tuple[Tensor, Tensor]
"""``(rows LongTensor[E], items LongTensor[E])``: item ``items[e]`` belongs to query row ``rows[e]``."""


def csr_pairs(indptr: Tensor, indices: Tensor, rows: Tensor) -> Pairs:
    """The ``(position in rows, item)`` pairs of the CSR rows ``rows``, gathered without a Python loop.

    Args:
        indptr: ``LongTensor[M+1]`` row pointers.
        indices: ``LongTensor[nnz]`` column (item) ids.
        rows: ``LongTensor[B]`` rows to gather (e.g. the users of a batch).
    Returns:
        ``(pos, items)`` with ``pos`` ascending in ``0..B-1``.
    """
    rows = rows.to(indptr.device)
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    flat = starts[pos] + torch.arange(pos.numel(), device=rows.device) - offsets[pos]
    return pos, indices[flat]


def _chunks(num_queries: int, chunk: int, exclude: Pairs | None) -> Iterator[tuple[int, int, Pairs | None]]:
    """``(start, end, pairs of rows start..end-1 re-based to 0)`` for consecutive query chunks."""
    if exclude is not None:
        rows, items = exclude
        if rows.numel() > 1 and not bool((rows[1:] >= rows[:-1]).all()):
            order = torch.argsort(rows, stable=True)
            rows, items = rows[order], items[order]
        bounds = torch.searchsorted(rows, torch.arange(0, num_queries + chunk, chunk, device=rows.device)).tolist()
    for i, start in enumerate(range(0, num_queries, chunk)):
        end = min(start + chunk, num_queries)
        if exclude is None:
            yield start, end, None
        else:
            lo, hi = bounds[i], bounds[i + 1]
            yield start, end, (rows[lo:hi] - start, items[lo:hi])


def _pad(scores: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Widen results to ``k`` columns with ``-inf`` / ``-1``."""
    missing = k - scores.shape[1]
    if missing <= 0:
        return scores, indices
    fill = scores.new_full((scores.shape[0], missing), float("-inf"))
    return torch.cat([scores, fill], 1), torch.cat([indices, indices.new_full(fill.shape, -1)], 1)


class VectorSearch(ABC):
    """Top-k inner-product search over a fixed item matrix, with per-query excluded items."""

    num_items: int = 0

    @abstractmethod
    def build(self, items: Tensor) -> VectorSearch:
        """Index ``items`` (``FloatTensor[N, d]``); returns ``self``. Called once per evaluation."""

    @abstractmethod
    def search(self, queries: Tensor, k: int, exclude: Pairs | None = None) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(scores FloatTensor[B, k], indices LongTensor[B, k])`` of ``queries [B, d]``, never
        returning an excluded ``(row, item)`` pair; results are on the queries' device."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "num_items")
        return f"{type(self).__name__}({args})"


class TorchExactSearch(VectorSearch):
    """Exact search with torch on the items' device.

    Per chunk of queries: ``scores = Q @ I^T`` into a reused buffer, excluded pairs set to ``-inf`` in place
    (``index_fill_``), then a block-max top-k: the maximum of each group of ``group_size`` items, the ``k``
    best groups, and ``topk`` over their items only. The ``k`` best items always lie in the ``k`` groups with
    the largest maxima (every item above the ``k``-th group maximum is in one of them, and they hold at least
    ``k`` items at or above it), so the result is exact while ``topk`` reads ``k * group_size`` scores per row
    instead of ``N``.

    Args:
        chunk_size: queries scored at once; memory is ``chunk_size x N`` floats whatever the batch size.
        group_size: items per group of the block-max top-k (falls back to a plain ``topk`` on small catalogues).
    """

    def __init__(self, chunk_size: int = 1024, group_size: int = 64) -> None:
        check_number(self, "chunk_size", chunk_size, 1, integer=True)
        check_number(self, "group_size", group_size, 1, integer=True)
        self.chunk_size, self.group_size = chunk_size, group_size
        self._items_t: Tensor | None = None
        self._buffer: Tensor | None = None

    def build(self, items: Tensor) -> TorchExactSearch:
        n, d = items.shape
        width = -(-n // self.group_size) * self.group_size
        items_t = torch.zeros(d, width, dtype=torch.float32, device=items.device)
        items_t[:, :n] = items.detach().T
        self._items_t, self.num_items, self._buffer = items_t, n, None
        return self

    def _scores(self, queries: Tensor) -> Tensor:
        assert self._items_t is not None
        width = self._items_t.shape[1]
        if self._buffer is None or self._buffer.shape[0] < queries.shape[0]:
            self._buffer = torch.empty(min(self.chunk_size, queries.shape[0]), width, device=self._items_t.device)
        out = self._buffer[: queries.shape[0]]
        torch.mm(queries, self._items_t, out=out)
        if width > self.num_items:
            out[:, self.num_items :] = float("-inf")
        return out

    def _topk(self, scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
        rows, width = scores.shape
        size = self.group_size
        if 4 * k * size > width:
            return torch.topk(scores, k, dim=1)
        groups = scores.view(rows, width // size, size).amax(2)
        best = torch.topk(groups, k, dim=1, sorted=False).indices
        candidates = ((best * size).unsqueeze(2) + torch.arange(size, device=scores.device)).view(rows, -1)
        values, pos = torch.topk(scores.gather(1, candidates), k, dim=1)
        return values, candidates.gather(1, pos)

    def search(self, queries: Tensor, k: int, exclude: Pairs | None = None) -> tuple[Tensor, Tensor]:
        if self._items_t is None:
            raise RuntimeError("call build(items) before search")
        device = queries.device
        queries = queries.detach().to(self._items_t.device, torch.float32)
        if exclude is not None:
            exclude = (exclude[0].to(self._items_t.device), exclude[1].to(self._items_t.device))
        kk = min(k, self.num_items)
        out_scores, out_indices = [], []
        for start, end, pairs in _chunks(queries.shape[0], self.chunk_size, exclude):
            scores = self._scores(queries[start:end])
            if pairs is not None and pairs[0].numel():
                scores.view(-1).index_fill_(0, pairs[0] * scores.shape[1] + pairs[1], float("-inf"))
            values, indices = self._topk(scores, kk)
            out_scores.append(values)
            out_indices.append(indices)
        values = torch.cat(out_scores) if out_scores else queries.new_empty(0, kk)
        indices = torch.cat(out_indices) if out_indices else torch.empty(0, kk, dtype=torch.long)
        indices = indices.masked_fill(values == float("-inf"), -1)
        values, indices = _pad(values, indices, k)
        return values.to(device), indices.to(device)


class _FaissSearch(VectorSearch):
    """faiss on CPU; exclusions by searching ``k + M`` and dropping excluded candidates (GRecX's approach)."""

    _index: object = None

    @abstractmethod
    def _new_index(self, dim: int, num_items: int) -> object:
        """An empty faiss index for ``num_items`` vectors of width ``dim``."""

    def _prepare(self, k: int) -> None:
        """Per-search settings (e.g. HNSW's efSearch must be at least k)."""

    @property
    def index(self) -> object:
        """The built faiss index (``faiss.write_index`` saves it; ``recplug export`` does)."""
        if self._index is None:
            raise RuntimeError("call build(items) before reading the index")
        return self._index

    def build(self, items: Tensor) -> _FaissSearch:
        x = np.ascontiguousarray(items.detach().cpu().numpy(), dtype=np.float32)
        index = self._new_index(x.shape[1], x.shape[0])
        if not index.is_trained:  # type: ignore[attr-defined]
            index.train(x)  # type: ignore[attr-defined]
        index.add(x)  # type: ignore[attr-defined]
        self._index, self.num_items = index, x.shape[0]
        return self

    def search(self, queries: Tensor, k: int, exclude: Pairs | None = None) -> tuple[Tensor, Tensor]:
        if self._index is None:
            raise RuntimeError("call build(items) before search")
        device = queries.device
        q = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        extra = 0
        if exclude is not None and exclude[0].numel():
            rows, items = exclude[0].cpu(), exclude[1].cpu()
            extra = int(torch.bincount(rows, minlength=q.shape[0]).max())
        kk = min(k + extra, self.num_items)
        self._prepare(kk)
        d, i = self._index.search(q, kk)  # type: ignore[attr-defined]
        values, indices = torch.from_numpy(d), torch.from_numpy(i).long()
        drop = indices < 0
        if extra:
            drop |= hit_matrix(indices, rows, items, self.num_items)
            keep = torch.argsort(drop.to(torch.int8), dim=1, stable=True)[:, : min(k, kk)]
            values, indices, drop = values.gather(1, keep), indices.gather(1, keep), drop.gather(1, keep)
        values = values.masked_fill(drop, float("-inf"))
        indices = indices.masked_fill(drop, -1)
        values, indices = _pad(values, indices, k)
        return values.to(device), indices.to(device)


class FaissFlatSearch(_FaissSearch):
    """Exact brute-force inner product with faiss ``IndexFlatIP`` (what GRecX's VectorSearchEngine wraps)."""

    def _new_index(self, dim: int, num_items: int) -> object:
        import faiss

        return faiss.IndexFlatIP(dim)


class FaissIVFSearch(_FaissSearch):
    """Approximate: inverted lists over ``nlist`` k-means cells, ``nprobe`` of them visited per query.

    Args:
        nlist: number of cells (capped at the number of items).
        nprobe: cells visited per query; ``nprobe = nlist`` is exact.
    """

    def __init__(self, nlist: int = 1024, nprobe: int = 32) -> None:
        check_count(self, "nlist", nlist)
        check_count(self, "nprobe", nprobe)  # faiss fails at the first query on 0, and overflows on a negative
        self.nlist, self.nprobe = nlist, nprobe

    def _new_index(self, dim: int, num_items: int) -> object:
        import faiss

        nlist = max(1, min(self.nlist, num_items))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(self.nprobe, nlist)
        return index


class FaissHNSWSearch(_FaissSearch):
    """Approximate: HNSW graph over the items (inner product), ``efSearch = max(ef_search, k + M)``.

    Args:
        M: graph degree (at least 2).
        ef_search: candidate list size at query time (raised to the number of results requested).
        ef_construction: candidate list size while building.
    """

    def __init__(self, M: int = 32, ef_search: int = 128, ef_construction: int = 200) -> None:
        # faiss itself crashes the process on a degree below 2 (1: segfault, 0: abort, < 0: exhausts memory)
        check_number(self, "M", M, 2, MAX_COUNT, integer=True)
        check_count(self, "ef_search", ef_search)
        check_count(self, "ef_construction", ef_construction)
        self.M, self.ef_search, self.ef_construction = M, ef_search, ef_construction

    def _new_index(self, dim: int, num_items: int) -> object:
        import faiss

        index = faiss.IndexHNSWFlat(dim, self.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _prepare(self, k: int) -> None:
        self._index.hnsw.efSearch = max(self.ef_search, k)  # type: ignore[attr-defined]


def search_recall(
    approx: VectorSearch,
    exact: VectorSearch,
    queries: Tensor,
    k: int,
    exclude: Pairs | None = None,
    batch_size: int = 4096,
) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / |exact top-k|`` (both already built).

    ``exclude`` pairs index rows of ``queries``; queries with no result from exact search are skipped."""
    found = total = 0
    for start, end, pairs in _chunks(queries.shape[0], batch_size, exclude):
        a = approx.search(queries[start:end], k, pairs)[1]
        e = exact.search(queries[start:end], k, pairs)[1]
        valid = e >= 0
        match = ((a.unsqueeze(2) == e.unsqueeze(1)) & valid.unsqueeze(1)).any(2)
        size = valid.sum(1)
        keep = size > 0
        found += float((match.sum(1)[keep] / size[keep]).sum())
        total += int(keep.sum())
    return found / max(total, 1)
