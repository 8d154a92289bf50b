"""BPR training sampler: uniform negatives with rejection, positives by interaction or by user.

BPR (Rendle et al., UAI 2009) pairs each observed (user, item) with an item the user has not interacted with.
An epoch has as many triples as there are training interactions. ``"interactions"`` serves each training pair
exactly once per epoch (MMRec, RecBole); ``"users"`` draws a user uniformly, then one of the user's items, for
every triple (NGCF's and LightGCN's released samplers), so light users weigh as much as heavy ones -- as they
do in the per-user averaged Recall and NDCG.
LightGCN and MMRec draw negatives per user in Python loops (``while neg in train_items[u]``); GRecX draws
``randint`` without rejection. Here one epoch is sampled with a handful of tensor operations: uniform draws,
a membership test against the training pairs, and redraws of the (rare) rejected entries only.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from recplug.core.errors import ConfigError, DataError

Positives = Literal["interactions", "users"]


def check_positives(positives: str, key: str = "positives") -> None:
    """Refuse a ``positives`` mode other than those of :data:`Positives`, naming the config ``key``."""
    if positives not in get_args(Positives):
        choices = " or ".join(repr(choice) for choice in get_args(Positives))
        raise ConfigError(f"{key} must be {choices}, got {positives!r}")


_SLOTS_PER_PAIR = 16  # filter size; about 1/16 of the non-positive draws need the exact check
_SPREAD = 0x9E3779B1  # odd multiplier (2^32 / golden ratio) scattering users over the filter


class NegativeSampler:
    """Uniform negative items, rejecting each user's training positives, vectorised over the batch.

    Membership of ``(u, j)`` is tested in two stages: a one-hash filter (a boolean table indexed by
    ``(u * c + j) mod 2^b``, with every training pair's slot set) clears most draws with one gather; only the
    draws whose slot is set are checked exactly with a binary search in the sorted pair keys ``u * N + i``.

    Args:
        users: training user column ``LongTensor[E]``.
        items: training item column ``LongTensor[E]``.
        num_items: catalogue size ``N``.
        candidates: the items negatives are drawn from (``LongTensor``; default every item), e.g. only the warm
            ones under the item cold-start protocol with ``data.cold_negatives: false``.
    """

    def __init__(self, users: Tensor, items: Tensor, num_items: int, candidates: Tensor | None = None) -> None:
        self.num_items = num_items
        self.candidates = candidates
        self.positive_keys = torch.unique(users * num_items + items)  # sorted
        distinct_per_user = torch.bincount(self.positive_keys // num_items)
        full = (distinct_per_user >= (num_items if candidates is None else candidates.numel())).nonzero()
        if full.numel():
            raise DataError(f"user {int(full[0])} has interacted with every item: no negative can be sampled")
        bits = max(16, (self.positive_keys.numel() * _SLOTS_PER_PAIR - 1).bit_length())
        self._mask = (1 << bits) - 1
        self._filter = torch.zeros(1 << bits, dtype=torch.bool)
        self._filter[self._slot(self.positive_keys // num_items, self.positive_keys % num_items)] = True

    def _slot(self, users: Tensor, items: Tensor) -> Tensor:
        return (users * _SPREAD + items) & self._mask  # no overflow below 2^31 users

    def _exact(self, users: Tensor, items: Tensor) -> Tensor:
        keys = users * self.num_items + items
        pos = torch.searchsorted(self.positive_keys, keys).clamp_(max=self.positive_keys.numel() - 1)
        return self.positive_keys.index_select(0, pos) == keys

    def positive_index(self, users: Tensor, items: Tensor) -> Tensor:
        """Indices ``k`` where ``(users[k], items[k])`` is a training interaction."""
        candidates = self._filter.index_select(0, self._slot(users, items)).nonzero().squeeze(1)
        exact = self._exact(users.index_select(0, candidates), items.index_select(0, candidates))
        return candidates[exact]

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Boolean mask: is ``(users[k], items[k])`` a training interaction."""
        mask = torch.zeros(users.shape, dtype=torch.bool)
        mask[self.positive_index(users, items)] = True
        return mask

    def sample(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One negative item per user; redraws only the rejected entries until none is a positive."""
        negatives = self._draw(users.shape, generator)
        bad = self.positive_index(users, negatives)
        while bad.numel():
            negatives[bad] = self._draw(bad.shape, generator)
            bad = bad[self.positive_index(users[bad], negatives[bad])]
        return negatives

    def _draw(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        if self.candidates is None:
            return torch.randint(self.num_items, shape, generator=generator)
        return self.candidates[torch.randint(self.candidates.numel(), shape, generator=generator)]


class BPRTrainSet(IterableDataset):
    """Yields whole ``(users, pos_items, neg_items)`` batches; one pass = one epoch of ``E`` triples.

    The epoch's order (a permutation of the ``E`` training pairs, or ``E`` pairs drawn user-uniformly) and its
    negatives come from a generator seeded by ``(seed, epoch)``, so an epoch is reproducible and a resumed run
    sees the same batches. Under DDP, process ``rank`` takes every ``world_size``-th entry of the shared order:
    the shards are disjoint and, with ``positives="interactions"``, together cover every pair exactly once.
    Every process runs the same number of steps (a shard one pair shorter ends with a batch of one pair; only
    with ``batch_size=1`` must it repeat one pair instead).

    Args:
        users: training user column ``LongTensor[E]``.
        items: training item column ``LongTensor[E]``.
        num_items: catalogue size.
        batch_size: triples per batch.
        seed: base seed.
        epoch_fn: returns the epoch about to run (the trainer's ``current_epoch``).
        rank_fn: returns ``(rank, world_size)``.
        positives: ``"interactions"`` (each training pair once per epoch) or ``"users"`` (a uniform user, then
            a uniform one of its training pairs, ``E`` times with replacement).
        negative_items: the items negatives are drawn from (default every item; see :class:`NegativeSampler`).
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
        positives: Positives = "interactions",
        negative_items: Tensor | None = None,
    ) -> None:
        super().__init__()
        check_positives(positives)
        self.users, self.items = users, items
        self.batch_size, self.seed, self.positives = batch_size, seed, positives
        self.epoch_fn, self.rank_fn = epoch_fn, rank_fn
        self.negatives = NegativeSampler(users, items, num_items, negative_items)
        if positives == "users":  # the pairs grouped by user: user u owns by_user[start[u] : start[u] + count[u]]
            self.by_user = torch.argsort(users, stable=True)
            counts = torch.bincount(users)
            active = counts.nonzero().squeeze(1)  # users with training pairs: the ones drawn
            self.user_count = counts.index_select(0, active)
            self.user_start = (torch.cumsum(counts, 0) - counts).index_select(0, active)

    def _user_uniform_pairs(self, generator: torch.Generator) -> Tensor:
        """``E`` pair indices: a uniform active user each, then a uniform one of that user's pairs."""
        n = self.users.numel()
        slot = torch.randint(self.user_count.numel(), (n,), generator=generator)
        count = self.user_count.index_select(0, slot)
        offset = (torch.rand(n, generator=generator, dtype=torch.float64) * count).long().clamp_(max=count - 1)
        return self.by_user.index_select(0, self.user_start.index_select(0, slot) + offset)

    def epoch_order(self, epoch: int) -> tuple[Tensor, torch.Generator]:
        """This process's share of the epoch's pair indices, and the generator for its negatives."""
        rank, world = self.rank_fn()
        generator = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        n = self.users.numel()
        if self.positives == "users":
            order = self._user_uniform_pairs(generator)
        else:
            order = torch.randperm(n, generator=generator, dtype=torch.int32 if n < 2**31 else torch.int64)
        if world > 1:
            order = order[rank::world]
        generator.manual_seed(self.seed * 1000003 + epoch * 7919 + rank + 1)
        return order, generator

    def sample_epoch(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """All triples of this process for one epoch, in batch order."""
        order, generator = self.epoch_order(epoch)
        users, pos = self.users.index_select(0, order), self.items.index_select(0, order)
        return users, pos, self.negatives.sample(users, generator)

    def __len__(self) -> int:
        _, world = self.rank_fn()
        longest_shard = -(-self.users.numel() // world)
        return -(-longest_shard // self.batch_size)

    def batch_bounds(self, length: int) -> list[int]:
        """Start/end offsets of ``len(self)`` non-empty batches over a shard of ``length`` triples."""
        batches = len(self)
        bounds = [min(k * self.batch_size, length) for k in range(batches + 1)]
        if batches > 1 and bounds[-2] == length:  # this shard is one pair short of the longest
            bounds[-2] = length - 1
        return bounds

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        users, pos, neg = self.sample_epoch(self.epoch_fn())
        if users.numel() < len(self):  # batch_size 1 and a short shard: repeat its first pair
            users, pos, neg = (torch.cat([t, t[:1]]) for t in (users, pos, neg))
        bounds = self.batch_bounds(users.numel())
        for start, end in zip(bounds[:-1], bounds[1:]):
            yield users[start:end], pos[start:end], neg[start:end]


Triples = tuple[Tensor, Tensor, Tensor]


def _one_intra_op_thread() -> None:
    """Run this thread's torch operations on one core, so that they do not oversubscribe the training thread's
    intra-op pool (OpenMP keeps one setting per thread; torch reads it in the thread's first operation)."""
    torch.get_num_threads()  # that first read, so the setting below is not overwritten by it later
    torch.set_num_threads(1)


class DrawnAhead(IterableDataset):
    """The batches of a :class:`BPRTrainSet`, each with ``draw(batch, generator)`` run in a background thread one
    batch ahead: yields ``(users, pos_items, neg_items, Future)``, the future holding the batch's draw.

    Sampled training (``model.sampling``) draws a step's neighbourhoods from the graphs alone, so the next batch's
    draw overlaps this batch's forward, backward and optimiser step -- the overlap PyG's neighbour loaders get
    from worker processes; a thread sees the graphs that edge pruning replaces every epoch. The draws run one at
    a time in batch order from a generator seeded by ``(seed, epoch, rank)``, so an epoch's draws are
    reproducible.

    Args:
        batches: the epoch's training batches.
        draw: what to prepare for each batch (reads no trained weight).
    """

    def __init__(self, batches: BPRTrainSet, draw: Callable[[Triples, torch.Generator], Any]) -> None:
        super().__init__()
        self.batches, self.draw = batches, draw

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor, Future]]:
        rank, _ = self.batches.rank_fn()
        seed = np.random.SeedSequence([self.batches.seed, self.batches.epoch_fn(), rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recplug-draw", initializer=_one_intra_op_thread)
        threads = torch.get_num_threads()
        pool.submit(int).result()  # the thread has started and set its (and the global) intra-op threads to one
        torch.set_num_threads(threads)  # the global setting and this thread's back; the draw thread keeps one
        exhausted = False
        try:
            ahead: tuple[Tensor, Tensor, Tensor, Future] | None = None
            for batch in self.batches:
                drawn = pool.submit(self.draw, batch, generator)
                if ahead is not None:
                    yield ahead
                ahead = (*batch, drawn)
            if ahead is not None:
                yield ahead
            exhausted = True
        finally:  # an epoch cut short (limit_train_batches) drops the draws ahead, before the graphs change
            pool.shutdown(wait=True, cancel_futures=not exhausted)
