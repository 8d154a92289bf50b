"""Sparse propagation on Gowalla's normalised graph: forward+backward of 3 LightGCN layers per backend, against
6 plain forward spmm (3 forward + 3 backward products: the least any exact backward can do).

    python bench/spmm.py [--data /work/shared/data/gowalla] [--repeats 5]

Prints one line per measurement and, last, ``ratio=<best backend / floor>`` (target <= 1.3). Every number is
measured in this one run (the machine is shared and noisy): the median of ``--repeats`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from recplug.core.data.formats.lightgcn import read_lightgcn
from recplug.core.ops.sparse import SparseOperator, normalized_adjacency

LAYERS, DIM = 3, 64


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in interleaved rounds so that load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def lightgcn_step(adjacency: SparseOperator, ego: Tensor) -> None:
    """Forward and backward of LightGCN's 3-layer mean (what a training step propagates)."""
    ego.grad = None
    layer = total = ego
    for _ in range(LAYERS):
        layer = adjacency(layer)
        total = total + layer
    (total / (LAYERS + 1)).sum().backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/gowalla"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    data = read_lightgcn(args.data)
    users, items = data.split("train")
    backends = ["torch"]
    try:
        import torch_sparse  # noqa: F401

        backends.append("torch_sparse")
    except ImportError:
        print("torch_sparse: not installed (pip install 'recplug[sparse]'), skipped")
    adjacency = {b: normalized_adjacency(users, items, data.num_users, data.num_items, b) for b in backends}
    print(f"graph: {data.num_users + data.num_items} nodes, {adjacency['torch'].nnz} non-zeros, d={DIM}, "
          f"threads={torch.get_num_threads()}")
    torch.manual_seed(0)
    ego = torch.randn(data.num_users + data.num_items, DIM, requires_grad=True)
    plain = ego.detach()
    csr = adjacency["torch"]._csr(transpose=False)

    def floor() -> None:
        for _ in range(2 * LAYERS):
            csr @ plain

    def autograd_transposing() -> None:  # PyTorch's own sparse backward, for reference (not a backend)
        ego.grad = None
        layer = total = ego
        for _ in range(LAYERS):
            layer = csr @ layer
            total = total + layer
        (total / (LAYERS + 1)).sum().backward()

    fns: dict[str, Callable[[], object]] = {"floor": floor}
    fns.update({b: (lambda op=op: lightgcn_step(op, ego)) for b, op in adjacency.items()})
    fns["torch autograd (transposes A)"] = autograd_transposing
    seconds = interleaved_medians(fns, args.repeats)
    floor_s = seconds.pop("floor")
    print(f"floor (6 forward spmm, torch CSR): {floor_s:.3f} s")
    for name, value in seconds.items():
        print(f"{name}: 3 layers forward+backward {value:.3f} s ({value / floor_s:.2f}x floor)")
    best = min(seconds[b] for b in backends)
    print(f"ratio={best / floor_s:.2f}")


if __name__ == "__main__":
    main()
