"""Chunked cosine kNN graph of 200,000 synthetic items: build time and peak memory (never an N x N matrix).

    python bench/knn.py [--items 200000] [--dims 128 64] [--k 10] [--chunk-mb 128]

Prints the build time, the peak resident memory the build added (``ru_maxrss`` after minus resident memory
before, an upper bound), what one ``N x N`` float matrix would need, and, last, ``ratio=<peak added / N²>``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from recplug.core.ops.knn import knn_coo


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-mb", type=int, default=128)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    features = {f"m{j}": torch.randn(args.items, d, generator=generator) for j, d in enumerate(args.dims)}
    weights = {m: 1.0 / len(features) for m in features}
    before = resident_bytes()
    start = time.perf_counter()
    rows, cols, values = knn_coo(features, args.k, weights, chunk_bytes=args.chunk_mb * 2**20)
    seconds = time.perf_counter() - start
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    dense = 4 * args.items**2
    print(f"kNN graph: {args.items} items, modalities {args.dims}, k={args.k}, {values.numel()} edges, "
          f"threads={torch.get_num_threads()}")
    print(f"time {seconds:.1f} s; peak memory added {added / 2**20:.0f} MiB; one N x N float matrix "
          f"{dense / 2**30:.0f} GiB")
    print(f"ratio={added / dense:.4f}")


if __name__ == "__main__":
    main()
