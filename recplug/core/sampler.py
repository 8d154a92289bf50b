"""BPR training sampler: every training interaction once per epoch, uniform negatives with rejection."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from recplug.core.dataset import DataError


class NegativeSampler:
    """Uniform negative items, rejecting each user's training positives, vectorised over the batch.

    Args:
        users: training user column ``LongTensor[E]``.
        items: training item column ``LongTensor[E]``.
        num_items: catalogue size ``N``.
    """

    def __init__(self, users: Tensor, items: Tensor, num_items: int) -> None:
        self.num_items = num_items
        self.positive_keys = torch.unique(users * num_items + items)  # sorted
        distinct_per_user = torch.bincount(self.positive_keys // num_items)
        full = (distinct_per_user >= num_items).nonzero()
        if full.numel():
            raise DataError(f"user {int(full[0])} has interacted with every item: no negative can be sampled")

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Boolean mask: is ``(users[k], items[k])`` a training interaction."""
        keys = users * self.num_items + items
        pos = torch.searchsorted(self.positive_keys, keys).clamp_(max=self.positive_keys.numel() - 1)
        return self.positive_keys[pos] == keys

    def sample(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One negative item per user; redraws only the rejected entries until none is a positive."""
        negatives = torch.randint(self.num_items, users.shape, generator=generator)
        bad = self.is_positive(users, negatives).nonzero().squeeze(1)
        while bad.numel():
            negatives[bad] = torch.randint(self.num_items, bad.shape, generator=generator)
            bad = bad[self.is_positive(users[bad], negatives[bad])]
        return negatives


class BPRTrainSet(IterableDataset):
    """Yields whole ``(users, pos_items, neg_items)`` batches; one pass = one epoch over the training pairs.

    The epoch's permutation and negatives come from a generator seeded by ``(seed, epoch)``, so an epoch is
    reproducible and a resumed run sees the same batches. Under DDP each process takes a disjoint, equal-length
    shard of the epoch (``rank::world_size``), so no pair is seen twice and every process runs the same number
    of steps.

    Args:
        users: training user column ``LongTensor[E]``.
        items: training item column ``LongTensor[E]``.
        num_items: catalogue size.
        batch_size: triples per batch.
        seed: base seed.
        epoch_fn: returns the epoch about to run (the trainer's ``current_epoch``).
        rank_fn: returns ``(rank, world_size)``.
    """

    def __init__(
        self,
        users: Tensor,
        items: Tensor,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank_fn: Callable[[], tuple[int, int]] = lambda: (0, 1),
    ) -> None:
        super().__init__()
        self.users, self.items = users, items
        self.batch_size, self.seed = batch_size, seed
        self.epoch_fn, self.rank_fn = epoch_fn, rank_fn
        self.negatives = NegativeSampler(users, items, num_items)

    def epoch_order(self, epoch: int) -> tuple[Tensor, torch.Generator]:
        """This process's share of the epoch's permutation, and the generator for its negatives."""
        rank, world = self.rank_fn()
        generator = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        order = torch.randperm(self.users.numel(), generator=generator)
        per_rank = order.numel() // world
        order = order[rank * per_rank : (rank + 1) * per_rank] if world > 1 else order
        generator.manual_seed(self.seed * 1000003 + epoch * 7919 + rank + 1)
        return order, generator

    def sample_epoch(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """All triples of this process for one epoch, in batch order."""
        order, generator = self.epoch_order(epoch)
        users, pos = self.users[order], self.items[order]
        return users, pos, self.negatives.sample(users, generator)

    def __len__(self) -> int:
        _, world = self.rank_fn()
        return -(-(self.users.numel() // world) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        users, pos, neg = self.sample_epoch(self.epoch_fn())
        for start in range(0, users.numel(), self.batch_size):
            end = start + self.batch_size
            yield users[start:end], pos[start:end], neg[start:end]
