"""Full-ranking evaluation speed on Gowalla-sized embeddings, against faiss flat top-20 as the floor.

    python bench/eval_speed.py [--data ../shared/data/gowalla] [--repeats 3] [--ann]

Random embeddings (29,858 users x 40,981 items, d=64) with Gowalla's training items masked and its test items
as ground truth. Times, in one run and interleaved (the machine is shared and noisy; the minimum of the
repeats is kept): full evaluation (search, masking, six metrics at K=10 and 20) with recplug's
TorchExactSearch and FaissFlatSearch, and faiss flat top-20 search without masking (the floor). Also times
torchmetrics' RetrievalRecall + RetrievalNormalizedDCG on a subset of users and checks they agree with ours.
``--ann`` adds the recall of FaissIVFSearch / FaissHNSWSearch against exact search (docs/evaluation.md).
The last line is ``ratio=<full evaluation time / faiss flat time>`` (target <= 1.5).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import faiss
import torch
from torch import Tensor

from recplug.core.eval.evaluator import evaluate
from recplug.core.eval.metrics import METRICS
from recplug.core.eval.search import (
    FaissFlatSearch, FaissHNSWSearch, FaissIVFSearch, TorchExactSearch, VectorSearch, csr_pairs, search_recall,
)

CSR = tuple[Tensor, Tensor]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gowalla"


def read_lightgcn(path: Path, num_users: int) -> CSR:
    """CSR ``(indptr, items)`` of a LightGCN ``uid item item ...`` file (items sorted per user)."""
    lists: list[list[int]] = [[] for _ in range(num_users)]
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            lists[int(parts[0])] = sorted(int(x) for x in parts[1:])
    counts = torch.tensor([len(x) for x in lists])
    indptr = torch.zeros(num_users + 1, dtype=torch.long)
    indptr[1:] = counts.cumsum(0)
    return indptr, torch.tensor([i for x in lists for i in x], dtype=torch.long)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def torchmetrics_subset(
    users_emb: Tensor, items_emb: Tensor, train: CSR, test: CSR, users: Tensor
) -> tuple[float, dict[str, float]]:
    """torchmetrics RetrievalRecall@20 + RetrievalNormalizedDCG@20 over ``users`` (seen items dropped)."""
    from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalRecall

    start = time.perf_counter()
    recall, ndcg = RetrievalRecall(top_k=20), RetrievalNormalizedDCG(top_k=20)
    n = items_emb.shape[0]
    scores = users_emb[users] @ items_emb.T
    rows, cols = csr_pairs(*train, users)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[rows, cols] = False
    target = torch.zeros_like(keep)
    trows, tcols = csr_pairs(*test, users)
    target[trows, tcols] = True
    indexes = torch.arange(len(users)).unsqueeze(1).expand(-1, n)
    preds, target, indexes = scores[keep], target[keep], indexes[keep]
    recall.update(preds, target, indexes)
    ndcg.update(preds, target, indexes)
    values = {"recall@20": float(recall.compute()), "ndcg@20": float(ndcg.compute())}
    return time.perf_counter() - start, values


def ann_report(users_emb: Tensor, items_emb: Tensor, train: CSR, label: str, num_queries: int = 2000) -> None:
    """Recall@20 of IVF and HNSW against exact search, without and with the training items masked."""
    queries = users_emb[torch.arange(num_queries) * (users_emb.shape[0] // num_queries)]
    masked = csr_pairs(*train, torch.arange(num_queries) * (users_emb.shape[0] // num_queries))
    exact = FaissFlatSearch().build(items_emb)
    for name, exclude in (("no mask", None), ("masked", masked)):
        seconds, _ = timed(lambda: exact.search(queries, 20, exclude))
        print(f"[ann:{label}] exact flat, {name}: search {seconds:.2f}s for {num_queries} users")
    candidates: list[VectorSearch] = [
        FaissIVFSearch(nlist=1024, nprobe=8), FaissIVFSearch(nlist=1024, nprobe=32),
        FaissIVFSearch(nlist=1024, nprobe=128), FaissHNSWSearch(M=32, ef_search=64),
        FaissHNSWSearch(M=32, ef_search=256),
    ]
    for index in candidates:
        t_build, _ = timed(lambda: index.build(items_emb))
        report = [f"build {t_build:.1f}s"]
        for name, exclude in (("no mask", None), ("masked", masked)):
            t_search, _ = timed(lambda: index.search(queries, 20, exclude))
            recall = search_recall(index, exact, queries, 20, exclude)
            report.append(f"{name}: recall@20 {recall:.4f} search {t_search:.2f}s")
        print(f"[ann:{label}] {index!r}: " + "; ".join(report))


def svd_embeddings(train: CSR, num_users: int, num_items: int, dim: int) -> tuple[Tensor, Tensor]:
    """PureSVD-style embeddings (U S^1/2, V S^1/2) of the training matrix: structured like trained ones."""
    indptr, items = train
    rows = torch.repeat_interleave(torch.arange(num_users), indptr[1:] - indptr[:-1])
    matrix = torch.sparse_coo_tensor(
        torch.stack([rows, items]), torch.ones(items.numel()), (num_users, num_items), check_invariants=True
    )
    u, s, v = torch.svd_lowrank(matrix.coalesce(), q=dim, niter=2)
    return (u * s.sqrt()).contiguous(), (v * s.sqrt()).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096, help="users per evaluation batch")
    parser.add_argument("--subset", type=int, default=200, help="users for the torchmetrics comparison")
    parser.add_argument("--ann", action="store_true", help="also measure IVF/HNSW recall against exact search")
    args = parser.parse_args()

    num_users, num_items, dim = 29858, 40981, 64
    train = read_lightgcn(args.data / "train.txt", num_users)
    test = read_lightgcn(args.data / "test.txt", num_users)
    generator = torch.Generator().manual_seed(0)
    users_emb = torch.randn(num_users, dim, generator=generator)
    items_emb = torch.randn(num_items, dim, generator=generator)
    print(f"gowalla: {num_users} users, {num_items} items, {train[1].numel()} train (masked), "
          f"{test[1].numel()} test; d={dim}; torch threads {torch.get_num_threads()}, "
          f"faiss threads {faiss.omp_get_max_threads()}")

    def full(search: VectorSearch) -> Callable[[], dict[str, float]]:
        return lambda: evaluate(users_emb, items_emb, test, train, ks=(10, 20), metrics=METRICS, search=search,
                                batch_size=args.batch_size)

    def faiss_flat() -> object:
        index = faiss.IndexFlatIP(dim)
        index.add(items_emb.numpy())
        return index.search(users_emb.numpy(), 20)

    runs: dict[str, Callable[[], object]] = {
        "faiss flat top-20, no mask (floor)": faiss_flat,
        "full eval, TorchExactSearch": full(TorchExactSearch()),
        "full eval, FaissFlatSearch (top k+M)": full(FaissFlatSearch()),
    }
    best = {name: float("inf") for name in runs}
    results: dict[str, object] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            seconds, results[name] = timed(fn)
            best[name] = min(best[name], seconds)
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f}s (min of {args.repeats})")
    ours = results["full eval, TorchExactSearch"]
    print("metrics (torch): " + ", ".join(f"{k}={v:.5f}" for k, v in ours.items()))  # type: ignore[union-attr]
    other = results["full eval, FaissFlatSearch (top k+M)"]
    diff = max(abs(ours[k] - other[k]) for k in ours)  # type: ignore[index]
    print(f"max |torch - faiss k+M| over metrics: {diff:.2e}")

    subset = torch.arange(args.subset)
    with_truth = subset[test[0][1:][subset] > test[0][subset]]
    seconds, values = torchmetrics_subset(users_emb, items_emb, train, test, with_truth)
    mine = evaluate(users_emb, items_emb, test, train, users=subset, ks=(20,), metrics=("recall", "ndcg"))
    print(f"torchmetrics RetrievalRecall+RetrievalNormalizedDCG @20 on {args.subset} users: {seconds:.2f}s "
          f"(x{num_users / args.subset:.1f} = {seconds * num_users / args.subset:.1f}s extrapolated to all users); "
          f"values {values}, ours {mine}")

    if args.ann:
        ann_report(users_emb, items_emb, train, "random")
        svd_users, svd_items = svd_embeddings(train, num_users, num_items, dim)
        values = evaluate(svd_users, svd_items, test, train, ks=(20,), metrics=("recall", "ndcg"))
        print(f"[ann:svd] PureSVD-{dim} embeddings evaluated (sanity check of the pipeline): {values}")
        ann_report(svd_users, svd_items, train, "svd")

    print(f"ratio={best['full eval, TorchExactSearch'] / best['faiss flat top-20, no mask (floor)']:.3f}")


if __name__ == "__main__":
    main()
