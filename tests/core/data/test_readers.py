"""Readers: MMRec, LightGCN and raw logs load the same in-memory dataset; bad input is one line naming file and
line (or field), never a silently shortened dataset."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from recplug.core.data.dataset import DataError, InteractionData
from recplug.core.errors import ConfigError, InvalidArgument
from recplug.core.data.formats.features import read_keyed_features
from recplug.core.data.formats.lightgcn import read_lightgcn, write_lightgcn
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec
from recplug.core.data.formats.raw import RawOptions, process_raw
from recplug.core.data.resolve import carve_validation, detect_format, load_dataset

GOWALLA = Path(__file__).resolve().parents[4] / "shared" / "data" / "gowalla"
needs_gowalla = pytest.mark.skipif(not GOWALLA.is_dir(), reason="../shared/data/gowalla not present")


def assert_same(a: InteractionData, b: InteractionData) -> None:
    assert (a.num_users, a.num_items) == (b.num_users, b.num_items)
    assert set(a.splits) == set(b.splits)
    for split in a.splits:
        for x, y in zip(a.splits[split], b.splits[split]):
            assert torch.equal(x, y), split
    assert set(a.features) == set(b.features)
    for modality in a.features:
        assert torch.equal(a.features[modality], b.features[modality]), modality


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def inter(rows: list[str], header: str = "userID\titemID\trating\ttimestamp\tx_label") -> str:
    return "\n".join([header, *rows]) + "\n"


# ------------------------------------------------------------------------------------------------ MMRec
def test_mmrec_round_trip(tiny_data: InteractionData, tmp_path: Path) -> None:
    folder = write_mmrec(tiny_data, tmp_path / "tiny")
    back = read_mmrec(folder)
    assert_same(tiny_data, back)
    assert back.notes == [] and detect_format(folder) == "mmrec"
    assert_same(back, read_mmrec(write_mmrec(back, tmp_path / "again")))


def test_mmrec_drops_cold_valid_test_users_and_reports_the_count(tmp_path: Path) -> None:
    rows = ["0\t0\t5\t1\t0", "0\t1\t5\t2\t1", "1\t1\t5\t3\t0", "1\t2\t5\t4\t2", "2\t0\t5\t5\t1", "2\t2\t5\t6\t2",
            "2\t1\t5\t7\t2"]
    data = read_mmrec(write(tmp_path / "d", {"d.inter": inter(rows)}))
    assert data.num_users == 3 and data.num_items == 3
    assert data.num_interactions("valid") == 1 and data.num_interactions("test") == 1
    assert any("valid: dropped 1 interactions of 1 users" in n for n in data.notes)
    assert any("test: dropped 2 interactions of 1 users" in n for n in data.notes)


def test_mmrec_configurable_names_blank_lines_and_crlf(tmp_path: Path) -> None:
    text = "u,i,split\r\n0,0,0\r\n\r\n0,1,2\r\n1,1,0\r\n1,0,2\r\n"
    folder = write(tmp_path / "d", {"log.txt": text})
    np.save(folder / "pic.npy", np.ones((2, 3), dtype=np.float32))
    data = read_mmrec(folder, {"visual": "pic.npy"}, inter_file="log.txt", user_field="u", item_field="i",
                      label_field="split", sep=",")
    assert data.split("train")[1].tolist() == [0, 1] and data.split("test")[1].tolist() == [1, 0]
    assert data.feature_dims == {"visual": 3} and "valid" not in data.splits


def test_mmrec_reader_is_vectorised_but_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 5000), rng.integers(0, 200, 5000)
    users[:300], items[:200] = np.arange(300), np.arange(200)
    labels = np.zeros(5000, dtype=int)
    labels[::7], labels[1::7] = 1, 2
    rows = [f"{u}\t{i}\t{rng.random():.2f}\t{rng.integers(1e9)}\t{x}" for u, i, x in zip(users, items, labels)]
    data = read_mmrec(write(tmp_path / "d", {"d.inter": inter(rows)}))
    assert data.split("train")[0].tolist() == users[labels == 0].tolist()
    assert data.split("test")[1].tolist() == items[labels == 2].tolist()


# ------------------------------------------------------------------------------------------------ LightGCN
@needs_gowalla
def test_gowalla_loads_with_the_published_statistics() -> None:
    data = read_lightgcn(GOWALLA)
    assert (data.num_users, data.num_items) == (29858, 40981)
    assert data.num_interactions("train") == 810128 and data.num_interactions("test") == 217242
    assert data.notes == [] and "valid" not in data.splits and detect_format(GOWALLA) == "lightgcn"


@pytest.mark.slow
@needs_gowalla
def test_gowalla_equals_a_line_by_line_parse() -> None:
    data = read_lightgcn(GOWALLA)
    for split in ("train", "test"):
        users, items = [], []
        for line in (GOWALLA / f"{split}.txt").read_text().splitlines():
            uid, *rest = map(int, line.split())
            users += [uid] * len(rest)
            items += rest
        assert data.split(split)[0].tolist() == users and data.split(split)[1].tolist() == items


def test_lightgcn_keeps_test_lines_without_items(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0 0 1\n1 1 2\n2 2 0\n3 0 2\n", "test.txt": "0 2\n1 0\n2 \n3"})
    data = read_lightgcn(folder)
    assert data.num_users == 4 and data.num_interactions("test") == 2
    note = next(n for n in data.notes if n.startswith("test.txt"))
    assert "2 lines list a user with no items" in note and "line(s) 3, 4" in note
    # written back and read again: the users are still there (train), with no test items
    assert read_lightgcn(write_lightgcn(data, tmp_path / "back")).num_users == 4


def test_lightgcn_validation_file_merged_lines_and_cold_users(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0 0 1\n1 1\n0 2\n", "valid.txt": "1 2\n", "test.txt": "2 0\n"})
    data = read_lightgcn(folder)
    assert data.num_interactions("train") == 4 and data.num_interactions("valid") == 1
    assert any("1 users have more than one line" in n for n in data.notes)
    assert any("test: 1 users have test items but no training items" in n for n in data.notes)
    assert read_lightgcn(folder, valid_file="valid.txt").num_interactions("valid") == 1


def test_carve_validation_is_a_seeded_partition_of_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = [" ".join(map(str, [u, *rng.choice(50, size=int(rng.integers(1, 30)), replace=False)])) for u in range(40)]
    folder = write(tmp_path / "g", {"train.txt": "\n".join(lines) + "\n40 0\n", "test.txt": "0 1\n"})
    data = read_lightgcn(folder)
    carved = carve_validation(data, 0.2, seed=3)
    assert carve_validation(data, 0.2, seed=3).content_hash() == carved.content_hash()
    assert carve_validation(data, 0.2, seed=4).content_hash() != carved.content_hash()
    before = sorted(zip(*(t.tolist() for t in data.split("train"))))
    after = sorted(zip(torch.cat([carved.split("train")[0], carved.split("valid")[0]]).tolist(),
                       torch.cat([carved.split("train")[1], carved.split("valid")[1]]).tolist()))
    assert before == after
    counts = torch.bincount(data.split("train")[0], minlength=data.num_users)
    kept = torch.bincount(carved.split("train")[0], minlength=data.num_users)
    assert bool((kept[counts > 0] >= 1).all()), "every user keeps a training item"
    assert bool((kept[counts == 1] == 1).all())
    assert any(n.startswith("valid: carved") for n in carved.notes)
    with pytest.raises(ConfigError, match="valid_ratio"):
        carve_validation(carved, 0.1)


# ------------------------------------------------------------------------------------------------ raw logs
def test_raw_log_k_core_remap_and_features_keyed_by_raw_id(tmp_path: Path) -> None:
    rows = ["user,item,rating,timestamp"]
    rng = np.random.default_rng(0)
    for u in range(30):
        for i in rng.choice(20, size=12, replace=False):
            rows.append(f"u{u},{100 + i},{rng.integers(1, 6)},{rng.integers(1000)}")
    rows += ["lonely,100,5,1", "u0,999,5,1", "u0,100,5,2000"]  # a 1-interaction user, a 1-interaction item, a repeat
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    ids = [str(100 + i) for i in range(20)] + ["999", "555"]
    np.savez(tmp_path / "img.npz", ids=np.array(ids), features=np.arange(22 * 3, dtype=np.float32).reshape(22, 3))
    data = process_raw(log, {"image": tmp_path / "img.npz"}, RawOptions(k_core=5))
    assert data.num_users == 30 and data.num_items == 20
    assert data.item_ids == [str(100 + i) for i in range(20)], "numeric raw ids sort numerically"
    assert data.user_ids[:3] == ["u0", "u1", "u10"]
    row = data.item_ids.index("107")
    assert data.features["image"][row].tolist() == [21.0, 22.0, 23.0]
    assert sum(data.num_interactions(s) for s in data.splits) == 30 * 12
    text = "\n".join(data.notes)
    assert "dropped 1 repeated (user, item) pairs" in text
    assert "5-core: dropped 2 interactions, 1 users, 1 items" in text
    assert "image: 2 feature rows belong to items not in the processed data" in text


def test_raw_random_split_follows_mmrec_rule(tmp_path: Path) -> None:
    sizes = {0: 1, 1: 2, 2: 5, 3: 9, 4: 10, 5: 15, 6: 27}
    rows = ["user\titem"] + [f"{u}\t{i}" for u, n in sizes.items() for i in range(n)]
    (tmp_path / "log.tsv").write_text("\n".join(rows) + "\n")
    data = process_raw(tmp_path / "log.tsv", options=RawOptions(seed=5))
    count = {s: torch.bincount(data.split(s)[0], minlength=7).tolist() for s in data.splits}
    # n<10: n-2/1/1 (n=2: train+test, n=1: train); else int(0.2 n) held out, half (floored) valid
    assert count["train"] == [1, 1, 3, 7, 8, 12, 22]
    assert count["valid"] == [0, 0, 1, 1, 1, 1, 2]
    assert count["test"] == [0, 1, 1, 1, 1, 2, 3]
    other = process_raw(tmp_path / "log.tsv", options=RawOptions(seed=6))
    assert other.content_hash() != data.content_hash()


def test_raw_leave_one_out_and_temporal_splits(tmp_path: Path) -> None:
    rows = ["user,item,timestamp"] + [f"{u},{i},{(i * 7 + u * 3) % 50}" for u in range(4) for i in range(6)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    loo = process_raw(tmp_path / "log.csv", options=RawOptions(split="loo"))
    times = {(u, i): (i * 7 + u * 3) % 50 for u in range(4) for i in range(6)}
    for u, i in zip(*(t.tolist() for t in loo.split("test"))):
        assert times[(u, i)] == max(t for (uu, _), t in times.items() if uu == u)
    assert loo.num_interactions("valid") == 4 and loo.num_interactions("test") == 4
    temporal = process_raw(tmp_path / "log.csv", options=RawOptions(split="temporal", ratios=(0.5, 0.25, 0.25)))
    latest_train = max(times[p] for p in zip(*(t.tolist() for t in temporal.split("train"))))
    assert all(times[p] >= latest_train for p in zip(*(t.tolist() for t in temporal.split("test"))))


def test_integer_times_beyond_2_to_the_53_keep_their_order(tmp_path: Path) -> None:
    """Fuzz round 5, S1: nanosecond times were read as float64, so u1's three times tied and file order put its
    earliest item in test; the earliest of a repeated pair was misjudged the same way."""
    base = 1_700_000_000_000_000_000
    rows = ["user,item,timestamp", f"u1,i1,{base + 100}", f"u1,i2,{base + 50}", f"u1,i3,{base}",
            f"u2,i1,{base + 300}", f"u2,i2,{base + 200}", f"u2,i3,{base + 10}", f"u2,i3,{base + 5}"]
    (tmp_path / "ns.csv").write_text("\n".join(rows) + "\n")
    data = process_raw(tmp_path / "ns.csv", options=RawOptions(split="loo"))
    test = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(*(t.tolist() for t in data.split("test")))}
    valid = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(*(t.tolist() for t in data.split("valid")))}
    assert test == {("u1", "i1"), ("u2", "i1")} and valid == {("u1", "i2"), ("u2", "i2")}
    (tmp_path / "mixed.csv").write_text(f"user,item,timestamp\nu1,i1,1.5\nu1,i2,{base + 1}\n")
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "mixed.csv")
    assert str(info.value).startswith(f"{tmp_path / 'mixed.csv'}:3: field 'timestamp' is '{base + 1}', which a "
                                      "float cannot hold exactly")


def test_an_id_with_a_tab_or_newline_is_named_with_its_line(tmp_path: Path) -> None:
    """Fuzz round 5, M8: the error named the log but no line."""
    (tmp_path / "log.csv").write_text('user,item\nu1,i1\nu2,i2\n"u\t3",i1\nu4,"i\n5"\n')
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "log.csv")
    assert str(info.value) == f"{tmp_path / 'log.csv'}:4: field 'user' has an id with a tab or newline: 'u\\t3'"
    (tmp_path / "log.csv").write_text('user,item\nu1,i1\nu2,i2\nu4,"i\n5"\n')
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "log.csv")
    assert str(info.value) == f"{tmp_path / 'log.csv'}:4: field 'item' has an id with a tab or newline: 'i\\n5'"


def test_raw_log_without_header_min_rating_and_dropping_featureless_items(tmp_path: Path) -> None:
    rows = [f"{u}\t{i}\t{1 + (u + i) % 5}" for u in range(12) for i in range(12)]
    (tmp_path / "r.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.tsv").write_text("id\tf0\tf1\n" + "\n".join(f"{i}\t{i}.5\t1" for i in range(11)) + "\n")
    options = RawOptions(columns=("user", "item", "rating"), min_rating=3, missing_features="drop")
    data = process_raw(tmp_path / "r.tsv", {"text": tmp_path / "t.tsv"}, options)
    assert data.num_items == 11 and data.features["text"].shape == (11, 2)
    assert any("rated below 3" in n for n in data.notes) and any("without features" in n for n in data.notes)
    with pytest.raises(DataError, match=r"t\.tsv: no feature row for item '11'"):
        process_raw(tmp_path / "r.tsv", {"text": tmp_path / "t.tsv"}, RawOptions(columns=("user", "item", "rating")))


def test_raw_ids_longer_than_int64_sort_numerically(tmp_path: Path) -> None:
    """Numeric raw ids of any length (a 24-digit id overflowed int64 and ended in a traceback)."""
    items = ["123456789012345678901234", "9", "10", "0009", "99999999999999999999"]
    rows = ["user,item"] + [f"u{u},{i}" for u in range(3) for i in items]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    data = process_raw(tmp_path / "log.csv", options=RawOptions(split="loo"))
    assert data.item_ids == ["0009", "9", "10", "99999999999999999999", "123456789012345678901234"]


def test_read_any_detects_raw_logs_and_rejects_unknown_folders(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user,item\n" + "\n".join(f"{u},{i}" for u in range(5) for i in range(4)) + "\n")
    data = load_dataset(tmp_path / "log.csv", cache_dir=tmp_path / "cache")
    assert data.num_users == 5 and data.user_ids == ["0", "1", "2", "3", "4"]
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset(write(tmp_path / "empty", {"readme": "x"}))
    with pytest.raises(ConfigError, match="format"):
        load_dataset(tmp_path, format="csv")


# ------------------------------------------------------------------------------------------------ bad input
def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda folder: np.save(folder / name, array)


GOOD_INTER = ["0\t0\t1\t0\t0", "0\t1\t1\t0\t2", "1\t1\t1\t0\t0", "1\t0\t1\t0\t2"]
NAN = np.ones((2, 4), dtype=np.float32)
NAN[1, 2] = np.nan
INF = np.ones((2, 4))
INF[0, 0] = np.inf

def bad(case: str, reader: str, files: dict[str, str], *fragments: str, extra: Callable | None = None):
    """One bad-input case: the files, the reader, and fragments the one-line message must contain."""
    return pytest.param(reader, files, extra, fragments, id=case)


MM, LG, RAW, RAWF = "mmrec", "lightgcn", "raw", "raw-f"
ROW0 = "0\t0\t1\t0\t0"
LOG = "user,item\n0,1\n"
BAD_INPUT = [
    bad("mmrec-field-count", MM, {"d.inter": inter([ROW0, "0\t1\t1\t0"])}, "d.inter:3", "expected 5"),
    bad("mmrec-non-integer", MM, {"d.inter": inter(["0\tx7\t1\t0\t0"])}, "d.inter:2", "itemID", "'x7'"),
    bad("mmrec-float-id", MM, {"d.inter": inter([ROW0, "1.0\t0\t1\t0\t2"])}, "d.inter:3", "userID"),
    bad("mmrec-negative", MM, {"d.inter": inter([ROW0, "-1\t0\t1\t0\t2"])}, "d.inter:3", "negative userID -1"),
    bad("mmrec-empty-field", MM, {"d.inter": inter(["0\t\t1\t0\t0"])}, "d.inter:2", "itemID", "''"),
    bad("mmrec-gap", MM, {"d.inter": inter([ROW0, "2\t1\t1\t0\t2"])}, "d.inter", "userID", "id 1 never occurs"),
    bad("mmrec-one-based", MM, {"d.inter": inter(["1\t1\t1\t0\t0", "1\t2\t1\t0\t2"])}, "d.inter", "id 0 never occurs"),
    bad("mmrec-label", MM, {"d.inter": inter([ROW0, "0\t1\t1\t0\t3"])}, "d.inter:3", "x_label", "3"),
    bad("mmrec-header", MM, {"d.inter": inter(["0\t0\t0"], header="user\titemID\tx_label")}, "d.inter:1", "userID"),
    bad("mmrec-no-rows", MM, {"d.inter": inter([])}, "d.inter", "no interactions"),
    bad("mmrec-empty-test", MM, {"d.inter": inter([ROW0, "1\t1\t1\t0\t1"])}, "split 'test' is empty"),
    bad("feature-rows", MM, {"d.inter": inter(GOOD_INTER)}, "image_feat.npy", "(3, 4)", "one row per item",
        extra=_npy("image_feat.npy", np.ones((3, 4)))),
    bad("feature-nan", MM, {"d.inter": inter(GOOD_INTER)}, "image_feat.npy", "row 1", "NaN",
        extra=_npy("image_feat.npy", NAN)),
    bad("feature-inf", MM, {"d.inter": inter(GOOD_INTER)}, "text_feat.npy", "row 0", "inf",
        extra=_npy("text_feat.npy", INF)),
    bad("feature-1d", MM, {"d.inter": inter(GOOD_INTER)}, "text_feat.npy", "shape",
        extra=_npy("text_feat.npy", np.ones(2))),
    bad("lightgcn-non-integer", LG, {"train.txt": "0 1 2\n1 a 2\n", "test.txt": "0 0\n"}, "train.txt:2", "'a'"),
    bad("lightgcn-negative", LG, {"train.txt": "0 -5\n", "test.txt": "0 0\n"}, "train.txt:1", "negative item id -5"),
    bad("lightgcn-bad-user", LG, {"train.txt": "0 0\n", "test.txt": "0 1\nu1 0\n"}, "test.txt:2", "user id"),
    bad("lightgcn-float", LG, {"train.txt": "0 0 1.5\n", "test.txt": "0 1\n"}, "train.txt:1", "'1.5'"),
    bad("lightgcn-huge", LG, {"train.txt": "0 0 1234567890123456789012\n", "test.txt": "0 1\n"}, "train.txt:1"),
    bad("lightgcn-item-gap", LG, {"train.txt": "0 0 3\n", "test.txt": "0 1\n"}, "train.txt", "item id", "id 2 never"),
    bad("lightgcn-user-gap", LG, {"train.txt": "0 0\n2 1\n", "test.txt": "0 1\n"}, "test.txt", "user id", "id 1"),
    bad("lightgcn-empty-test", LG, {"train.txt": "0 0\n1 1\n", "test.txt": "0\n1 \n"}, "split 'test' is empty"),
    bad("lightgcn-empty-valid", LG, {"train.txt": "0 0\n1 1\n", "test.txt": "0 1\n", "valid.txt": "1\n"},
        "valid.txt", "valid split is empty"),
    bad("lightgcn-missing-test", LG, {"train.txt": "0 0\n"}, "test.txt", "not found"),
    bad("raw-field-count", RAW, {"log.csv": LOG + "2\n"}, "log.csv:3", "expected 2"),
    bad("raw-empty-id", RAW, {"log.csv": LOG + ",3\n"}, "log.csv:3", "'user'"),
    bad("raw-rating", RAW, {"log.csv": "user,item,rating\n0,1,good\n"}, "log.csv:2", "'rating'", "'good'"),
    bad("raw-nan-time", RAW, {"log.csv": "user,item,timestamp\n0,1,nan\n"}, "log.csv:2", "'timestamp'"),
    bad("raw-column", RAW, {"log.csv": "uid,item\n0,1\n"}, "log.csv:1", "'user'"),
    bad("raw-empty", RAW, {"log.csv": "user,item\n"}, "log.csv", "no interactions"),
    bad("raw-nul", RAW, {"log.csv": LOG + "1,\x002\n"}, "log.csv:3", "NUL byte"),
    bad("raw-header-quoted", RAW, {"log.csv": "uid,iid\n0,1\n"}, "log.csv:1", "no column 'user'", "header 'uid,iid'"),
    bad("raw-feature-nan", RAWF, {"log.csv": LOG, "f.tsv": "1\t0.5\n2\tnan\n"}, "f.tsv:2", "NaN or inf"),
    bad("raw-feature-ragged", RAWF, {"log.csv": LOG, "f.tsv": "1\t0.5\t1\n2\t0.5\n"}, "f.tsv:2", "expected 2"),
    bad("raw-feature-dup", RAWF, {"log.csv": LOG, "f.tsv": "1\t0.5\n1\t0.7\n"}, "f.tsv:2", "'1'", "line 1"),
    bad("raw-feature-text", RAWF, {"log.csv": LOG, "f.tsv": "1\t0.5\n2\tabc\n"}, "f.tsv:2", "numbers"),
]

READERS: dict[str, Callable[[Path], object]] = {
    MM: read_mmrec,
    LG: read_lightgcn,
    RAW: lambda folder: process_raw(folder / "log.csv"),
    RAWF: lambda folder: process_raw(folder / "log.csv", {"f": folder / "f.tsv"}),
}


@pytest.mark.parametrize("reader, files, extra, fragments", BAD_INPUT)
def test_bad_input_is_one_line_naming_file_and_line_or_field(
    tmp_path: Path, reader: str, files: dict[str, str], extra: Callable[[Path], None] | None, fragments: list[str]
) -> None:
    folder = write(tmp_path / "case", files)
    if extra is not None:
        extra(folder)
    with pytest.raises(DataError) as info:
        READERS[reader](folder)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_keyed_features_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", ids=np.array(["x", "y", "x"]), features=np.ones((3, 2)))
    with pytest.raises(DataError, match=r"a\.npz: item id 'x' has more than one feature row"):
        read_keyed_features(tmp_path / "a.npz", "image")
    np.savez(tmp_path / "b.npz", ids=np.array(["x", "y"]), features=np.array([[1.0, np.inf], [0, 0]]))
    with pytest.raises(DataError, match=r"b\.npz: row 0 \(id 'x'\): NaN or inf"):
        read_keyed_features(tmp_path / "b.npz", "image")
    np.savez(tmp_path / "c.npz", vectors=np.ones((2, 2)))
    with pytest.raises(DataError, match=r"c\.npz: expected an \.npz with arrays 'ids' and 'features'"):
        read_keyed_features(tmp_path / "c.npz", "image")


def test_raw_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="ratios"):
        RawOptions(ratios=(0.5, 0.1, 0.1)).check()
    with pytest.raises(ConfigError, match="split"):
        RawOptions(split="weekly").check()
    with pytest.raises(ConfigError, match="missing_features"):
        RawOptions(missing_features="zero").check()


@pytest.mark.parametrize(("options", "message"), [
    ({"sep": 5}, "RawOptions.sep must be one character, or None for the default, got 5"),
    ({"min_rating": "3"}, "RawOptions.min_rating must be a finite number, got '3'"),
    ({"min_rating": float("nan")}, "RawOptions.min_rating must be a finite number, got nan"),
    ({"columns": "user,item"}, "RawOptions.columns must be a tuple of column names, got 'user,item'"),
    ({"columns": ("user", 5)}, "RawOptions.columns must be a tuple of column names, got ('user', 5)"),
    ({"user_col": 0}, "RawOptions.user_col must be a column name, got 0"),
    ({"time_col": ["t"]}, "RawOptions.time_col must be a column name, got ['t']"),
    ({"k_core": 2.5}, "RawOptions.k_core must be an integer >= 0, got 2.5"),
    ({"k_core": True}, "RawOptions.k_core must be an integer >= 0, got True"),
    ({"k_core": -1}, "RawOptions.k_core must be >= 0, got -1"),
    ({"ratios": (0.8, "0.1", 0.1)}, "RawOptions.ratios must be three numbers (train, valid, test shares), got (0.8, "
                                    "'0.1', 0.1)"),
])
def test_raw_options_of_the_wrong_type_are_one_line(tmp_path: Path, options: dict, message: str) -> None:
    """Fuzz round 5, T4: sep=5, min_rating='3' and k_core=2.5 ended in a TypeError, columns='user,item' was read
    one character per column, and k_core=True was read as 1."""
    (tmp_path / "log.csv").write_text("user,item,rating,timestamp\n0,1,5,10\n")
    with pytest.raises(InvalidArgument) as info:
        process_raw(tmp_path / "log.csv", options=RawOptions(**options))
    assert str(info.value) == message


def test_process_raw_arguments_of_the_wrong_type_are_one_line(tmp_path: Path) -> None:
    """Fuzz round 5, T4: a list of features ended in AttributeError, a number as the log in TypeError."""
    (tmp_path / "log.csv").write_text("user,item\n0,1\n")
    with pytest.raises(InvalidArgument) as info:
        process_raw(tmp_path / "log.csv", ["x"])  # type: ignore[arg-type]
    assert str(info.value) == "process_raw.features must be a {modality: file} mapping, or None, got ['x']"
    with pytest.raises(InvalidArgument) as info:
        process_raw(tmp_path / "log.csv", {"image": 5})  # type: ignore[dict-item]
    assert str(info.value) == "process_raw.features must be a {modality: file} mapping, or None, got {'image': 5}"
    with pytest.raises(InvalidArgument) as info:
        process_raw(5)  # type: ignore[arg-type]
    assert str(info.value) == "process_raw.log must be the path of a CSV/TSV log, got 5"


@pytest.mark.parametrize(("options", "message"), [
    ({"user_col": "item"}, "user_col and item_col both name column 'item'"),
    ({"rating_col": "timestamp", "time_col": "timestamp"}, "rating_col and time_col both name column 'timestamp'"),
    ({"rating_col": "user"}, "user_col and rating_col both name column 'user'"),
    ({"time_col": "item"}, "item_col and time_col both name column 'item'"),
    ({"user_col": "timestamp"}, "user_col and time_col (by default) both name column 'timestamp'"),
    ({"item_col": "rating"}, "item_col and rating_col (by default) both name column 'rating'"),
    ({"time_col": "rating"}, "rating_col (by default) and time_col both name column 'rating'"),
])
def test_a_raw_log_column_is_read_in_one_role_only(tmp_path: Path, options: dict, message: str) -> None:
    """Fuzz round 4, S2: only user vs item was checked; '--rating-col timestamp --time-col timestamp' read one
    column as both, and '--user-col timestamp' read the users' ids as times too (time_col's default)."""
    (tmp_path / "log.csv").write_text("user,item,rating,timestamp\n0,1,5,10\n")
    with pytest.raises(ConfigError) as info:
        process_raw(tmp_path / "log.csv", options=RawOptions(**options))
    assert str(info.value) == message


def test_a_mirror_that_is_no_folder_or_url_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^load_dataset.mirror must be a folder or URL of dataset files, got 5$"):
        load_dataset("gowalla", mirror=5, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def test_raw_options_that_are_no_raw_options_are_one_line(tmp_path: Path) -> None:
    """Fuzz round 4, T1: a dict of options ended in AttributeError: 'dict' object has no attribute 'check'."""
    (tmp_path / "log.csv").write_text("user,item\n0,1\n")
    rule = "must be a RawOptions (recplug.core.data.formats.raw.RawOptions(sep=',', ...)), got {'sep': ','}"
    with pytest.raises(ConfigError) as info:
        load_dataset(tmp_path / "log.csv", raw_options={"sep": ","}, cache_dir=tmp_path / "cache")
    assert str(info.value) == f"load_dataset.raw_options {rule}"
    with pytest.raises(ConfigError) as info:
        process_raw(tmp_path / "log.csv", options={"sep": ","})  # type: ignore[arg-type]
    assert str(info.value) == f"process_raw.options {rule}"
    assert not (tmp_path / "cache").exists()


def test_a_validation_split_asked_of_a_raw_log_that_has_one_names_the_log(tmp_path: Path) -> None:
    """Fuzz round 5, M8: the error named the processed copy in the cache, not the log given."""
    log = tmp_path / "log.csv"
    log.write_text("user,item\n" + "\n".join(f"u{u},i{i}" for u in range(6) for i in range(5)) + "\n")
    with pytest.raises(ConfigError) as info:
        load_dataset(log, valid_ratio=0.2, cache_dir=tmp_path / "cache")
    assert str(info.value) == f"valid_ratio: {log} already has a validation split; set it to 0"


def test_a_path_with_a_nul_character_is_named_with_it(tmp_path: Path) -> None:
    """Fuzz round 5, M8: load_dataset('a\\0b') said 'a b: no such dataset folder', the NUL shown as a space."""
    for path in ("a\0b", tmp_path / "a\0b.csv"):
        with pytest.raises(ConfigError) as info:
            load_dataset(path, cache_dir=tmp_path / "cache")
        assert str(info.value) == f"load_dataset.path {str(path)!r} holds a NUL character, which no file or dataset " \
            "name has"


def test_raw_options_for_what_is_no_raw_log_are_refused(tiny_folder: Path, tmp_path: Path) -> None:
    """Fuzz round 5, S3: load_dataset dropped raw_options (k_core=50, min_rating=4) silently for a dataset folder,
    'default' or a registered name, where the CLI refuses --k-core."""
    lightgcn = write(tmp_path / "lg", {"train.txt": "0 0\n1 1\n", "test.txt": "0 1\n1 0\n"})
    cases = [(tiny_folder, "a dataset folder (mmrec)"), (lightgcn, "a dataset folder (lightgcn)"),
             ("default", "the embedded MMRec dataset"), ("gowalla", "a registered dataset")]
    for path, what in cases:
        with pytest.raises(ConfigError) as info:
            load_dataset(path, raw_options=RawOptions(k_core=50), cache_dir=tmp_path / "cache")
        assert str(info.value) == f"load_dataset.raw_options: options of a raw log, but {path} is {what}; they do " \
            "not apply"
    assert not (tmp_path / "cache").exists()


def test_a_quote_left_open_on_the_last_line_is_named_as_such(tmp_path: Path) -> None:
    """Fuzz round 4, M7: a last line '"3,7' was 'expected 2 fields, got 1'; a stray quote inside a field, and a
    quoted field that closes with a newline in it, are still read."""
    (tmp_path / "log.csv").write_text('user,item\n0,1\n1,0\n"2,1\n')
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "log.csv")
    assert str(info.value) == f"{tmp_path / 'log.csv'}:4: a quote opened on this line is never closed"
    (tmp_path / "ok.csv").write_text('user,item,note\n0,0,a\n0,1,b"c\n1,0,x\n1,1,"d\n"\n')
    data = process_raw(tmp_path / "ok.csv")
    assert data.user_ids == ["0", "1"] and sum(data.num_interactions(s) for s in data.splits) == 4


def test_bytes_that_are_not_utf8_are_named_as_such_by_the_byte_readers(tmp_path: Path) -> None:
    """Fuzz round 4, M8: a latin-1 byte in an MMRec .inter was 'userID must be a non-negative integer, got 'caf\ufffd''
    where the text readers say it is not UTF-8; an ignored column is read as text too."""
    header = b"userID\titemID\trating\ttimestamp\tx_label\n"
    for row in (b"caf\xe9\t0\t1\t0\t2\n", b"0\t1\t1\t\xe9\t2\n"):
        folder = tmp_path / f"m{len(row)}"
        folder.mkdir()
        (folder / "d.inter").write_bytes(header + b"0\t0\t1\t0\t0\n" + row)
        with pytest.raises(DataError) as info:
            read_mmrec(folder)
        assert str(info.value) == f"{folder / 'd.inter'}:3: byte 0xe9 is not UTF-8; save the file as UTF-8"
    (tmp_path / "lg").mkdir()
    (tmp_path / "lg" / "train.txt").write_bytes(b"0 0 1\n1 \xff1\n")
    (tmp_path / "lg" / "test.txt").write_bytes(b"0 1\n")
    with pytest.raises(DataError, match=r"train\.txt:2: byte 0xff is not UTF-8; save the file as UTF-8$"):
        read_lightgcn(tmp_path / "lg")


def test_a_path_that_is_no_regular_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    """Fuzz round 4, M6: a FIFO was 'no such dataset folder or file' and a dangling link 'no such dataset folder'."""
    fifo, dangling = tmp_path / "fifo.csv", tmp_path / "dangling.csv"
    os.mkfifo(fifo)
    dangling.symlink_to("nowhere.csv")
    nowhere = "is a symbolic link to nowhere.csv, which leads nowhere (a loop or a missing target)"
    cases = [
        (fifo, "auto", f"{fifo}: dataset is not a regular file (a FIFO, a socket or a device)"),
        (fifo, "raw", f"{fifo}: log file is not a regular file (a FIFO, a socket or a device)"),
        (dangling, "auto", f"{dangling}: dataset {nowhere}"),
        (dangling, "raw", f"{dangling}: log file {nowhere}"),
        (tmp_path / "none.csv", "raw", f"{tmp_path / 'none.csv'}: log file not found"),
    ]
    for path, format, message in cases:
        with pytest.raises(DataError) as info:
            load_dataset(path, format=format, cache_dir=tmp_path / "cache")
        assert str(info.value) == message
    with pytest.raises(DataError, match=f"^{re.escape(str(dangling))}: dataset is a symbolic link"):
        detect_format(dangling)
    (tmp_path / "log.csv").write_text("user,item\n0,1\n")
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "log.csv", {"image": tmp_path})
    assert str(info.value) == f"{tmp_path}: feature file of modality 'image' is a folder, not a file"
    lightgcn = write(tmp_path / "lg", {"train.txt": "0 0\n1 1\n", "test.txt": "0 1\n1 0\n"})
    os.mkfifo(lightgcn / "valid.txt")  # was taken for no validation file, silently
    with pytest.raises(DataError) as info:
        read_lightgcn(lightgcn)
    assert str(info.value) == f"{lightgcn / 'valid.txt'}: valid file is not a regular file (a FIFO, a socket or a " \
        "device)"


def test_dataset_folder_files_that_are_no_regular_files_say_what_they_are(
    tiny_data: InteractionData, tmp_path: Path
) -> None:
    """Fuzz round 5, S2 and M4: a dangling item map was taken for none (raw ids lost, silently); a dangling feature
    file was 'not found', a folder named like one 'cannot read'; a dangling or device train.txt made the folder
    'unknown dataset format'; a dangling .inter was 'cannot read'."""
    nowhere = "is a symbolic link to /nonexistent, which leads nowhere (a loop or a missing target)"
    cases = []
    for name, what in (("item_map.tsv", "item map"), ("user_map.tsv", "user map"), ("notes.txt", "notes file"),
                       ("image_feat.npy", "feature file of modality 'image'"), ("x.inter", "interaction file")):
        folder = write_mmrec(tiny_data, tmp_path / f"m-{name}")
        (folder / name).unlink(missing_ok=True)
        if name == "x.inter":
            next(folder.glob("*.inter")).unlink()
        (folder / name).symlink_to("/nonexistent")
        cases.append((folder, f"{folder / name}: {what} {nowhere}"))
    folder = write_mmrec(tiny_data, tmp_path / "m-folder")
    (folder / "image_feat.npy").unlink(missing_ok=True)
    (folder / "image_feat.npy").mkdir()
    cases.append((folder, f"{folder / 'image_feat.npy'}: feature file of modality 'image' is a folder, not a file"))
    for target, problem in (("/nonexistent", nowhere), ("/dev/zero", "is not a regular file (a FIFO, a socket or a "
                                                                      "device)")):
        lightgcn = write(tmp_path / f"lg{len(cases)}", {"test.txt": "0 1\n1 0\n"})
        (lightgcn / "train.txt").symlink_to(target)
        cases.append((lightgcn, f"{lightgcn / 'train.txt'}: train file {problem}"))
    for path, message in cases:
        with pytest.raises(DataError) as info:
            load_dataset(path, cache_dir=tmp_path / "cache")
        assert str(info.value) == message


def test_temporal_split_needs_a_time_column(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user,item\n" + "\n".join(f"{u},{i}" for u in range(3) for i in range(3)) + "\n")
    with pytest.raises(DataError, match=r"log\.csv:1: split 'temporal' needs a time column"):
        process_raw(tmp_path / "log.csv", options=RawOptions(split="temporal"))
