"""BPR sampler: negatives are never training positives; each epoch serves every training pair exactly once;
epochs are reproducible per (seed, epoch); DDP shards are disjoint, cover the epoch and take equal steps."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from recplug.core.data.dataset import DataError
from recplug.core.data.sampler import BPRTrainSet, DrawnAhead, NegativeSampler

GOWALLA = Path(__file__).resolve().parents[4] / "shared" / "data" / "gowalla"


def dense_pairs(num_users: int = 60, num_items: int = 25, density: float = 0.7, seed: int = 0):
    """Many positives per user, so most uniform draws are rejected and redrawn."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_users, num_items, generator=g) < density
    mask[:, 0] = False  # every user keeps at least one negative
    mask[torch.arange(num_users), 1 + torch.arange(num_users) % (num_items - 1)] = True
    users, items = mask.nonzero().unbind(1)
    return users, items, num_items


def pair_set(users: torch.Tensor, items: torch.Tensor) -> set[tuple[int, int]]:
    return set(zip(users.tolist(), items.tolist()))


def epoch_of(dataset: BPRTrainSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.cat(column) for column in zip(*dataset))  # type: ignore[return-value]


def test_no_negative_is_a_training_positive() -> None:
    users, items, num_items = dense_pairs()
    dataset = BPRTrainSet(users, items, num_items, batch_size=64, seed=3)
    positives = pair_set(users, items)
    for epoch in range(5):
        dataset.epoch_fn = lambda epoch=epoch: epoch
        u, _, n = epoch_of(dataset)
        assert not pair_set(u, n) & positives
        assert bool(((n >= 0) & (n < num_items)).all())


def test_membership_test_agrees_with_a_set() -> None:
    users, items, num_items = dense_pairs(density=0.3)
    sampler = NegativeSampler(users, items, num_items)
    g = torch.Generator().manual_seed(0)
    qu, qi = torch.randint(60, (5000,), generator=g), torch.randint(num_items, (5000,), generator=g)
    expected = torch.tensor([p in pair_set(users, items) for p in zip(qu.tolist(), qi.tolist())])
    assert torch.equal(sampler.is_positive(qu, qi), expected)
    assert sampler.positive_index(qu, qi).tolist() == expected.nonzero().squeeze(1).tolist()


def test_negatives_are_spread_over_all_non_positive_items() -> None:
    users = torch.zeros(20000, dtype=torch.long)
    items = torch.arange(20000) % 4  # user 0 likes items 0..3 of 10
    negatives = NegativeSampler(users, items, 10).sample(users, torch.Generator().manual_seed(1))
    counts = torch.bincount(negatives, minlength=10)
    assert counts[:4].sum() == 0
    assert counts[4:].min() > 0.8 * 20000 / 6


def test_every_training_pair_exactly_once_per_epoch(tiny_data) -> None:
    users, items = tiny_data.split("train")
    dataset = BPRTrainSet(users, items, tiny_data.num_items, batch_size=100, seed=0)
    batches = list(dataset)
    assert len(batches) == len(dataset)
    assert [b[0].numel() for b in batches[:-1]] == [100] * (len(batches) - 1)
    u, p, _ = epoch_of(dataset)
    assert sorted(zip(u.tolist(), p.tolist())) == sorted(zip(users.tolist(), items.tolist()))


def test_epochs_are_reproducible_per_seed_and_epoch(tiny_data) -> None:
    users, items = tiny_data.split("train")

    def run(seed: int, epoch: int):
        return epoch_of(BPRTrainSet(users, items, tiny_data.num_items, 128, seed=seed, epoch_fn=lambda: epoch))

    first = run(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, run(0, 1)))
    assert not torch.equal(first[0], run(0, 2)[0]) and not torch.equal(first[2], run(0, 2)[2])
    assert not torch.equal(first[0], run(1, 1)[0])


@pytest.mark.parametrize(
    "num_pairs, world, batch_size", [(1000, 3, 64), (2 * 3 * 32 + 1, 2, 32), (1001, 4, 1), (997, 1, 10)]
)
def test_ddp_shards_are_disjoint_cover_and_take_equal_steps(num_pairs: int, world: int, batch_size: int) -> None:
    users = torch.arange(num_pairs) % 37
    items = torch.arange(num_pairs) // 37  # distinct pairs
    served, steps = [], set()
    for rank in range(world):
        dataset = BPRTrainSet(users, items, int(items.max()) + 2, batch_size, seed=5, epoch_fn=lambda: 2,
                              rank_fn=lambda rank=rank: (rank, world))
        batches = list(dataset)
        steps.add(len(batches))
        assert len(batches) == len(dataset) and all(b[0].numel() > 0 for b in batches)
        u, p, _ = epoch_of(dataset)
        served.append(pair_set(u, p))
    assert len(steps) == 1, f"ranks take different numbers of steps: {steps}"
    everything = pair_set(users, items)
    assert set().union(*served) == everything
    if batch_size > 1:
        assert sum(len(s) for s in served) == num_pairs, "shards overlap"


def test_the_datamodule_gives_each_ddp_process_its_own_shard() -> None:
    """The loader reads the process's rank from the trainer (a lookup of a missing attribute made every process
    train the whole epoch)."""
    from types import SimpleNamespace

    from recplug.core.data.datamodule import RecDataModule

    module = RecDataModule("default", batch_size=256)
    module.setup("fit")
    whole = len(module.train_dataloader())
    shards = []
    for rank in range(2):
        module.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)  # type: ignore[assignment]
        loader = module.train_dataloader()
        assert len(loader) == -(-whole // 2)
        shards.append(pair_set(*epoch_of(loader.dataset)[:2]))
    assert not shards[0] & shards[1] and len(shards[0]) + len(shards[1]) == module.data.split("train")[0].numel()


def test_a_user_who_has_every_item_is_an_error() -> None:
    with pytest.raises(DataError, match="user 1 has interacted with every item"):
        NegativeSampler(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 2]), 3)


@pytest.mark.skipif(not GOWALLA.is_dir(), reason="../shared/data/gowalla not present")
def test_gowalla_epoch_has_no_positive_negative() -> None:
    from recplug.core.data.formats.lightgcn import read_lightgcn

    data = read_lightgcn(GOWALLA)
    users, items = data.split("train")
    dataset = BPRTrainSet(users, items, data.num_items, batch_size=8192, seed=0)
    u, p, n = dataset.sample_epoch(0)
    keys = torch.unique(users * data.num_items + items)
    drawn = u * data.num_items + n
    assert not torch.isin(drawn, keys).any()
    assert torch.equal(torch.sort(u * data.num_items + p).values, torch.sort(users * data.num_items + items).values)


def skewed_pairs() -> tuple[torch.Tensor, torch.Tensor, int]:
    """User 0 has 200 items, users 1..9 have 2 each, user 10 has none."""
    users = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(1, 10).repeat_interleave(2)])
    items = torch.cat([torch.arange(200), torch.arange(18) % 2])
    return users, items, 250


def test_user_uniform_positives_weigh_users_equally_and_stay_training_pairs() -> None:
    users, items, num_items = skewed_pairs()
    dataset = BPRTrainSet(users, items, num_items, batch_size=50, seed=0, positives="users")
    served_users, served_items = [], []
    for epoch in range(200):
        dataset.epoch_fn = lambda epoch=epoch: epoch
        u, p, n = epoch_of(dataset)
        assert u.numel() == users.numel()  # an epoch keeps E triples
        assert pair_set(u, p) <= pair_set(users, items)
        assert not pair_set(u, n) & pair_set(users, items)
        served_users.append(u), served_items.append(p[u == 0])
    per_user = torch.bincount(torch.cat(served_users), minlength=11).float()
    draws = 200 * users.numel()
    assert per_user[10] == 0  # a user without training items is never drawn
    assert (per_user[:10] - draws / 10).abs().max() < 0.1 * draws / 10  # uniform over the 10 active users
    assert per_user[0] < 0.2 * draws  # interaction-uniform would give user 0 about 92% of the draws
    assert torch.bincount(torch.cat(served_items), minlength=200).min() > 0  # every item of user 0 is reachable


def test_user_uniform_epochs_are_reproducible_and_shard_equally() -> None:
    users, items, num_items = skewed_pairs()

    def shard(seed: int, epoch: int, rank: int = 0, world: int = 1):
        return epoch_of(BPRTrainSet(users, items, num_items, 16, seed=seed, epoch_fn=lambda: epoch,
                                    rank_fn=lambda: (rank, world), positives="users"))

    assert all(torch.equal(a, b) for a, b in zip(shard(0, 3), shard(0, 3)))
    assert not torch.equal(shard(0, 3)[1], shard(0, 4)[1])
    whole, halves = shard(2, 1), [shard(2, 1, rank, 2) for rank in range(2)]
    assert [h[0].numel() for h in halves] == [(users.numel() + 1) // 2, users.numel() // 2]
    assert torch.equal(torch.sort(torch.cat([h[0] for h in halves])).values, torch.sort(whole[0]).values)


def test_unknown_positives_mode_is_refused() -> None:
    users, items, num_items = skewed_pairs()
    with pytest.raises(ValueError, match="positives must be 'interactions' or 'users', got 'items'"):
        BPRTrainSet(users, items, num_items, 16, positives="items")  # type: ignore[arg-type]


def test_datamodule_names_the_config_key_of_a_bad_positives_mode() -> None:
    from recplug.core.data.datamodule import RecDataModule
    from recplug.core.errors import ConfigError

    with pytest.raises(ConfigError, match="^data.positives must be 'interactions' or 'users', got 'items'$"):
        RecDataModule(positives="items")  # type: ignore[arg-type]


def test_drawn_ahead_draws_the_next_batch_while_this_one_is_used_in_order_and_reproducibly() -> None:
    users, items = torch.arange(100) % 10, torch.arange(100) % 7
    batches = BPRTrainSet(users, items, 20, 16, seed=3)
    second_drawn, calls = threading.Event(), []

    def draw(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(batch)
        if len(calls) == 2:
            second_drawn.set()
        return batch[0], torch.rand(3, generator=generator)

    epoch = iter(DrawnAhead(batches, draw))
    first = next(epoch)
    # batch 2's draw runs while batch 1 is in use: it finishes without the consumer asking for it
    assert second_drawn.wait(timeout=10)
    rest = list(epoch)
    got = [first, *rest]
    assert len(got) == len(batches) == len(calls)
    for (u, p, n), (gu, gp, gn, future) in zip(batches, got):  # the batches unchanged, each with its own draw
        assert torch.equal(u, gu) and torch.equal(p, gp) and torch.equal(n, gn)
        assert torch.equal(future.result()[0], u)
    again = [b[3].result()[1] for b in DrawnAhead(batches, draw)]
    assert all(torch.equal(a, b[3].result()[1]) for a, b in zip(again, got))  # same (seed, epoch): same draws


def test_an_epoch_cut_short_waits_for_the_draw_ahead() -> None:
    """limit_train_batches stops an epoch early: the draw already running must end before the graphs change."""
    users, items = torch.arange(64) % 8, torch.arange(64) % 5
    running = threading.Event()
    finished = []

    def slow_draw(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> None:
        running.set()
        threading.Event().wait(0.2)
        finished.append(batch[0])

    epoch = iter(DrawnAhead(BPRTrainSet(users, items, 10, 8), slow_draw))
    next(epoch)
    running.wait(timeout=10)
    epoch.close()  # what dropping the iterator does
    assert not any(t.name.startswith("recplug-draw") for t in threading.enumerate())
    assert len(finished) <= 2
