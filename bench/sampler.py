"""One BPR epoch over Gowalla's training pairs, against a plain ``torch.randint`` of the same shape.

    python bench/sampler.py [--data ../shared/data/gowalla] [--batch-size 2048] [--repeats 7] [--threads N]

Times, interleaved in one run (the machine is shared and noisy; the minimum of the repeats is kept): one epoch
of :class:`~recplug.core.data.sampler.BPRTrainSet` (permutation, gathers, uniform negatives with rejection of the
user's training positives, iteration over every batch), and ``torch.randint(num_items, (E,))``, the cost of the
negatives' random numbers alone. Checks that every training pair is served once and no negative is a positive.
Last line: ``ratio=<epoch time / randint time>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from recplug.core.data.resolve import load_dataset
from recplug.core.data.sampler import BPRTrainSet

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gowalla"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder or registered name")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.data)
    users, items = data.split("train")
    start = time.perf_counter()
    dataset = BPRTrainSet(users, items, data.num_items, args.batch_size, seed=0)
    setup = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)

    epoch_times, randint_times = [], []
    for epoch in range(args.repeats):
        dataset.epoch_fn = lambda epoch=epoch: epoch
        start = time.perf_counter()
        batches = list(dataset)
        epoch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.randint(data.num_items, (users.numel(),), generator=generator)
        randint_times.append(time.perf_counter() - start)

    u, p, n = (torch.cat(column) for column in zip(*batches))
    served = torch.sort(u * data.num_items + p).values
    assert torch.equal(served, torch.sort(users * data.num_items + items).values), "not every pair exactly once"
    assert not dataset.negatives.is_positive(u, n).any(), "a negative is a training positive"

    print(f"data: {data.source}: {users.numel()} training pairs, {data.num_items} items, {len(batches)} batches")
    print(f"threads: {torch.get_num_threads()}; sampler setup (once): {setup:.3f} s")
    print(f"epoch:   min {min(epoch_times):.4f} s  median {statistics.median(epoch_times):.4f} s")
    print(f"randint: min {min(randint_times):.4f} s  median {statistics.median(randint_times):.4f} s")
    print(f"ratio={min(epoch_times) / min(randint_times):.2f}")


if __name__ == "__main__":
    main()
