"""VectorSearch: exact searches return a valid top-k (brute-force values, never an excluded item, -1 padding),
approximate ones are measured by search_recall, and torch memory stays bounded by the chunk size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recplug.core.eval.search import (
    FaissFlatSearch, FaissHNSWSearch, FaissIVFSearch, TorchExactSearch, VectorSearch, csr_pairs, search_recall,
)


@st.composite
def search_cases(draw):
    """Integer embeddings (exact in float32: many ties, negative scores), random exclusions, k up to N + 3."""
    rows, items, dim = draw(st.integers(1, 9)), draw(st.integers(1, 150)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    spread = draw(st.sampled_from([1, 3, 10]))
    queries = torch.randint(-spread, spread + 1, (rows, dim), generator=generator).float()
    item_emb = torch.randint(-spread, spread + 1, (items, dim), generator=generator).float()
    rate = draw(st.sampled_from([0.0, 0.2, 0.9, 1.0]))
    excluded = torch.rand(rows, items, generator=generator) < rate
    k = draw(st.integers(1, items + 3))
    return queries, item_emb, excluded, k


def check_valid_topk(scores, indices, queries, item_emb, excluded, k) -> None:
    """What every exact top-k must satisfy, whatever order it gives tied items."""
    full = queries @ item_emb.T
    full[excluded] = float("-inf")
    reference = torch.sort(full, dim=1, descending=True).values[:, :k]
    if reference.shape[1] < k:
        fill = reference.new_full((full.shape[0], k - reference.shape[1]), float("-inf"))
        reference = torch.cat([reference, fill], 1)
    assert scores.shape == indices.shape == (queries.shape[0], k)
    assert torch.equal(scores, reference)
    valid = indices >= 0
    assert torch.equal(valid, scores > float("-inf"))
    for row, (idx, val) in enumerate(zip(indices.tolist(), scores.tolist())):
        kept = [i for i in idx if i >= 0]
        assert len(set(kept)) == len(kept)
        for i, v in zip(idx, val):
            if i >= 0:
                assert not excluded[row, i]
                assert full[row, i].item() == v


@settings(max_examples=150, deadline=None)
@given(search_cases(), st.integers(1, 4), st.integers(1, 6))
def test_torch_exact_search_is_a_valid_top_k(case, chunk_size: int, group_size: int) -> None:
    queries, item_emb, excluded, k = case
    search = TorchExactSearch(chunk_size=chunk_size, group_size=group_size).build(item_emb)
    rows, items = excluded.nonzero().T
    shuffle = torch.randperm(rows.numel())  # pairs need not come sorted by row
    scores, indices = search.search(queries, k, (rows[shuffle], items[shuffle]))
    check_valid_topk(scores, indices, queries, item_emb, excluded, k)


@settings(max_examples=100, deadline=None)
@given(search_cases())
def test_faiss_flat_search_with_exclusions_is_a_valid_top_k(case) -> None:
    queries, item_emb, excluded, k = case
    search = FaissFlatSearch().build(item_emb)
    scores, indices = search.search(queries, k, tuple(excluded.nonzero().T))
    check_valid_topk(scores, indices, queries, item_emb, excluded, k)


def test_block_max_top_k_without_ties_gives_the_same_indices_as_topk() -> None:
    generator = torch.Generator().manual_seed(0)
    queries, item_emb = torch.randn(50, 16, generator=generator), torch.randn(3001, 16, generator=generator)
    scores, indices = TorchExactSearch(chunk_size=16, group_size=32).build(item_emb).search(queries, 20)
    expected = torch.topk(queries @ item_emb.T, 20)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(scores, expected.values)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.data())
def test_csr_pairs_gathers_the_rows(counts: list[int], data) -> None:
    indptr = torch.tensor([0, *np.cumsum(counts)], dtype=torch.long)
    indices = torch.arange(int(indptr[-1])) * 7
    rows = data.draw(st.lists(st.integers(0, len(counts) - 1), max_size=8))
    pos, items = csr_pairs(indptr, indices, torch.tensor(rows, dtype=torch.long))
    expected = [(p, int(i)) for p, r in enumerate(rows) for i in indices[indptr[r] : indptr[r + 1]]]
    assert list(zip(pos.tolist(), items.tolist())) == expected


def clustered(num_items: int = 2000, num_queries: int = 300, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(20, dim, generator=generator) * 3
    def around_centres(count: int) -> torch.Tensor:
        picked = centres[torch.randint(0, 20, (count,), generator=generator)]
        return picked + torch.randn(count, dim, generator=generator)

    items = around_centres(num_items)
    return items, around_centres(num_queries)


def test_approximate_indexes_are_measured_against_exact_search() -> None:
    items, queries = clustered()
    exclude = (torch.arange(300).repeat_interleave(5), torch.randint(0, 2000, (1500,)))
    exact = TorchExactSearch().build(items)
    assert search_recall(FaissFlatSearch().build(items), exact, queries, 20, exclude) == pytest.approx(1.0, abs=1e-3)
    every_cell = FaissIVFSearch(nlist=16, nprobe=16).build(items)  # visits every cell: exact
    assert search_recall(every_cell, exact, queries, 20, exclude) == pytest.approx(1.0, abs=1e-3)
    partial = search_recall(FaissIVFSearch(nlist=64, nprobe=1).build(items), exact, queries, 20, exclude)
    assert 0.0 < partial < 1.0
    assert search_recall(FaissHNSWSearch(M=16, ef_search=64).build(items), exact, queries, 20, exclude) > 0.9
    # excluded items are never returned by approximate indexes either
    _, got = FaissHNSWSearch().build(items).search(queries, 20, exclude)
    banned = set(zip(exclude[0].tolist(), exclude[1].tolist()))
    assert not any((row, i) in banned for row, r in enumerate(got.tolist()) for i in r)


def test_torch_search_memory_is_bounded_by_the_chunk_not_the_batch() -> None:
    items, queries = clustered(num_items=500, num_queries=300)
    search = TorchExactSearch(chunk_size=32).build(items)
    search.search(queries, 10)
    assert search._buffer is not None and search._buffer.shape[0] == 32


def test_search_before_build_and_repr() -> None:
    search: VectorSearch
    for search in (TorchExactSearch(), FaissFlatSearch()):
        with pytest.raises(RuntimeError, match="build"):
            search.search(torch.zeros(1, 2), 1)
    assert repr(FaissIVFSearch(nlist=8, nprobe=2)) == "FaissIVFSearch(nlist=8, nprobe=2)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_search_on_cuda_matches_cpu() -> None:
    items, queries = clustered()
    exclude = (torch.arange(300).repeat_interleave(5), torch.randint(0, 2000, (1500,)))
    cpu = TorchExactSearch().build(items).search(queries, 20, exclude)
    gpu = TorchExactSearch().build(items.cuda()).search(queries.cuda(), 20, (exclude[0].cuda(), exclude[1].cuda()))
    assert gpu[0].is_cuda
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-5, atol=1e-5)
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.99
