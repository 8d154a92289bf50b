"""One optimiser step of the sampled mode's tables: ``LazyAdam`` against ``torch.optim.SparseAdam`` (issue 18).

    python bench/lazy_adam.py [--users 400000] [--items 200000] [--rows 56000 28000] [--threads 2] [--steps 30]

The ID tables of ``bench/scale.py``'s size l (d=64), a row-sparse gradient on ``--rows`` distinct random rows of
each (a sampled l step reads about 84k rows in all), the same gradients for both optimisers. Steps alternate
between the two (ABAB in one process: the same allocator and cache state), the first two of each are warm-up.
Prints the median milliseconds per step of each; last line ``ratio=<x>``: LazyAdam's median over SparseAdam's
(below 1.0: ours is faster). That the two give the same update is tested (tests/core/model/test_sampled.py; they
differ where a gradient is near ``eps``: SparseAdam adds ``eps`` before the bias correction, Adam after it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recplug.core.model.sampled import LazyAdam


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rows", type=int, nargs=2, default=[56_000, 28_000], help="rows touched per table")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    shapes = [(args.users, args.dim), (args.items, args.dim)]
    start = [torch.randn(shape, generator=generator) * 0.1 for shape in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    arms = {"LazyAdam": (ours, LazyAdam(ours, lr=1e-3)),
            "SparseAdam": (theirs, torch.optim.SparseAdam(theirs, lr=1e-3))}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for step in range(args.steps + 2):
        grads = []
        for (rows, dim), count in zip(shapes, args.rows):
            index = torch.randperm(rows, generator=generator)[:count].sort().values
            values = torch.randn(count, dim, generator=generator)
            grads.append(torch.sparse_coo_tensor(index[None], values, (rows, dim), check_invariants=True).coalesce())
        for name, (params, optimizer) in arms.items():
            for param, grad in zip(params, grads):
                param.grad = grad.clone()
            began = time.perf_counter()
            optimizer.step()
            if step >= 2:
                seconds[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    print(f"rows {args.rows} of {args.users} x {args.dim} and {args.items} x {args.dim}, {args.threads} threads, "
          f"{args.steps} steps each: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items()))
    print(f"ratio={medians['LazyAdam'] / medians['SparseAdam']:.3f}")


if __name__ == "__main__":
    main()
