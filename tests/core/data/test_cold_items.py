"""The item cold-start split (``data.cold_items``): exactly the seeded items lose every training interaction, which
move to valid/test by the documented rule; features stay for all items; reproducible per seed; on any format;
bad values are one line naming the key; ``recplug data stats`` reports cold items and users without training."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from recplug.core.cli.main import main
from recplug.core.data.datamodule import RecDataModule
from recplug.core.data.dataset import DataError, InteractionData
from recplug.core.data.formats.lightgcn import write_lightgcn
from recplug.core.data.resolve import hold_out_items, load_dataset
from recplug.core.errors import ConfigError


def pairs(data: InteractionData, split: str) -> Counter:
    users, items = data.split(split)
    return Counter(zip(users.tolist(), items.tolist()))


def test_exactly_the_seeded_items_are_held_out_and_their_interactions_move(tiny_data: InteractionData) -> None:
    out = hold_out_items(tiny_data, 0.2, seed=3)
    expected = np.sort(np.random.default_rng(3).permutation(tiny_data.num_items)[:30])
    assert out.cold_items.tolist() == expected.tolist()
    cold = set(expected.tolist())
    before = pairs(tiny_data, "train")
    assert not any(item in cold for _, item in pairs(out, "train"))
    assert pairs(out, "train") == Counter({p: n for p, n in before.items() if p[1] not in cold})
    moved_valid = pairs(out, "valid") - pairs(tiny_data, "valid")
    moved_test = pairs(out, "test") - pairs(tiny_data, "test")
    assert moved_valid + moved_test == Counter({p: n for p, n in before.items() if p[1] in cold})
    per_item = Counter(item for (_, item), n in before.items() if item in cold for _ in range(n))
    valid_items = Counter(item for (_, item), n in moved_valid.items() for _ in range(n))
    assert all(valid_items[item] == count // 2 for item, count in per_item.items())  # half (rounded down) to valid
    assert all(out.features[m] is tiny_data.features[m] for m in tiny_data.features)  # features for every item
    assert out.cold_mask().sum() == 30 and "cold items: 30 of 150 items held out" in out.notes[-1]


def test_the_split_is_reproducible_per_seed_and_changes_with_it(tiny_data: InteractionData) -> None:
    first, again, other = (hold_out_items(tiny_data, 0.3, seed) for seed in (5, 5, 6))
    assert torch.equal(first.cold_items, again.cold_items) and first.content_hash() == again.content_hash()
    assert not torch.equal(first.cold_items, other.cold_items)
    assert first.content_hash() != tiny_data.content_hash()


def test_any_format_gets_the_split_and_data_without_validation_moves_all_to_test(
    tiny_data: InteractionData, tmp_path: Path
) -> None:
    folder = write_lightgcn(InteractionData(
        name="t", num_users=tiny_data.num_users, num_items=tiny_data.num_items,
        splits={s: tiny_data.splits[s] for s in ("train", "test")},
    ), tmp_path / "lgcn")
    data = load_dataset(folder, cold_items=0.1, cold_seed=1)
    assert "valid" not in data.splits and data.cold_items.numel() == 15
    moved = data.num_interactions("test") - tiny_data.num_interactions("test")
    assert moved == int(torch.isin(tiny_data.split("train")[1], data.cold_items).sum()) > 0
    default = RecDataModule(cold_items=0.2, cold_seed=0).data  # the embedded default, through the datamodule
    assert default.cold_items.numel() == 500 and not torch.isin(default.split("train")[1], default.cold_items).any()


def test_cold_items_survive_the_processed_state_and_are_checked(tiny_data: InteractionData) -> None:
    out = hold_out_items(tiny_data, 0.2, seed=0)
    assert torch.equal(InteractionData.from_state(out.to_state()).cold_items, out.cold_items)
    state = {**out.to_state(), "cold_items": torch.tensor([int(tiny_data.split("train")[1][0])])}
    with pytest.raises(DataError, match="a cold item has a training interaction"):
        InteractionData.from_state(state)


@pytest.mark.parametrize("value", [1.0, -0.1, math.nan, 2])
def test_out_of_range_fractions_name_the_key(value: float, tiny_data: InteractionData) -> None:
    with pytest.raises(ConfigError, match=r"^data\.cold_items must be in \[0, 1\)"):
        RecDataModule(cold_items=value)
    if value != 2 and not math.isnan(value):
        with pytest.raises(ConfigError, match="^cold_items: must be in"):
            hold_out_items(tiny_data, value)


def test_the_cli_refuses_bad_values_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).resolve().parents[3] / "configs" / "mf.yaml")
    assert main(["fit", "--config", config, "--data.cold_items", "1.5", "--trainer.logger=false"]) == 2
    assert "error: data.cold_items must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(["data", "stats", "default", "--cold-items", "1"]) == 2
    assert "argument --cold-items: must be in [0, 1), got 1" in capsys.readouterr().err


def test_data_stats_reports_cold_items_and_users_without_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "default", "--cold-items", "0.2", "--cold-seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "cold items          500" in out and "users w/o train     10" in out
    assert main(["data", "stats", "default", "--json"]) == 0
    assert '"users_without_train": 0' in capsys.readouterr().out


def test_negatives_are_drawn_among_warm_items_only_when_cold_negatives_is_off() -> None:
    for cold_negatives in (True, False):
        dm = RecDataModule(cold_items=0.2, cold_negatives=cold_negatives)
        users, _, negatives = dm.train_dataloader().dataset.sample_epoch(0)
        drawn_cold = dm.data.cold_mask()[negatives]
        assert bool(drawn_cold.any()) is cold_negatives
        assert not dm.train_dataloader().dataset.negatives.is_positive(users, negatives).any()
