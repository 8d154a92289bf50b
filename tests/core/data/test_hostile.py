"""Hostile input: random files for every reader and broken configs for the CLI. Every case must end in a
correct result or a clear one-line error (DataError / exit 2) — never a traceback from library internals, a
hang, or a silently shortened dataset."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recplug.core.data.datamodule import RecDataModule
from recplug.core.data.dataset import InteractionData
from recplug.core.errors import ConfigError, DataError
from recplug.core.data.formats.features import load_features, read_keyed_features
from recplug.core.data.formats.lightgcn import read_lightgcn
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec
from recplug.core.data.formats.raw import process_raw
from recplug.core.data.formats.text import QUOTE_LIMIT
from recplug.core.data.resolve import load_dataset

ROOT = Path(__file__).resolve().parents[3]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# tokens that look almost right: ids, negatives, floats, junk, separators
TOKEN = st.sampled_from(["0", "1", "2", "3", "7", "-1", "1.5", "x", "", "00", "2147483648", "1e3", "\t", " "])
LINE = st.lists(TOKEN, min_size=0, max_size=6).map(lambda ts: "".join(ts))
TEXT = st.lists(LINE, min_size=0, max_size=12).map("\n".join)


def check_result(data: InteractionData) -> None:
    """A dataset that loaded must satisfy every invariant (InteractionData re-validates)."""
    data.validate()
    for users, items in data.splits.values():
        assert users.dtype == items.dtype == torch.long


def expect_clean(read, *args) -> None:
    try:
        check_result(read(*args))
    except DataError as exc:
        message = str(exc)
        assert message and "\n" not in message, message


@FAST
@given(body=TEXT, header=st.sampled_from(["userID\titemID\trating\ttimestamp\tx_label", "userID\titemID\tx_label",
                                          "user\titem", ""]))
def test_mmrec_reader_on_random_files(tmp_path_factory, body: str, header: str) -> None:
    folder = tmp_path_factory.mktemp("mmrec")
    (folder / "d.inter").write_text(header + "\n" + body)
    expect_clean(read_mmrec, folder)


@FAST
@given(train=TEXT, test=TEXT)
def test_lightgcn_reader_on_random_files(tmp_path_factory, train: str, test: str) -> None:
    folder = tmp_path_factory.mktemp("lightgcn")
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    expect_clean(read_lightgcn, folder)


@FAST
@given(raw=st.binary(max_size=200))
def test_binary_garbage_is_refused_by_every_reader(tmp_path_factory, raw: bytes) -> None:
    folder = tmp_path_factory.mktemp("garbage")
    (folder / "d.inter").write_bytes(raw)
    expect_clean(read_mmrec, folder)
    other = tmp_path_factory.mktemp("garbage-lightgcn")
    (other / "train.txt").write_bytes(raw)
    (other / "test.txt").write_bytes(raw[::-1])
    expect_clean(read_lightgcn, other)


# ------------------------------------------------------------------------------------------- line ends
# The same lines with every line end a reader must accept. In ``mixed``, a lone CR is never followed by the LF
# of an empty next line: that pair is one CRLF line end, so the text would have one line fewer.
ENDINGS = st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12, max_size=12)


def line_end_variants(lines: list[str], mixed: list[str]) -> dict[str, str]:
    """``{variant: text}`` of ``lines`` joined by LF, CRLF, CR, a per-line mix, and LF after a UTF-8 BOM."""
    mixed = [
        "\r\n" if end == "\r" and k + 1 < len(lines) and lines[k + 1] == "" and mixed[k + 1] != "\r" else end
        for k, end in enumerate(mixed[: max(len(lines) - 1, 0)])
    ]
    joined = lines[0] + "".join(end + line for end, line in zip(mixed, lines[1:])) if lines else ""
    return {"lf": "\n".join(lines), "crlf": "\r\n".join(lines), "cr": "\r".join(lines), "mixed": joined,
            "bom": "\ufeff" + "\n".join(lines)}


def outcome(read, *args) -> tuple:
    """What a reader made of a file: every split, the counts, features and notes, or its one-line error."""
    try:
        data = read(*args)
    except DataError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return ("error", message)
    check_result(data)
    return ("data", data.num_users, data.num_items, data.notes, data.user_ids, data.item_ids,
            {s: tuple(t.tolist() for t in cols) for s, cols in data.splits.items()},
            {m: f.tolist() for m, f in data.features.items()})


LINES = st.lists(LINE, min_size=0, max_size=12)


@FAST
@given(lines=LINES, ends=ENDINGS)
def test_mmrec_reader_gives_the_same_result_for_every_line_end(tmp_path_factory, lines, ends) -> None:
    folder = tmp_path_factory.mktemp("mmrec-ends")
    results = {}
    for variant, text in line_end_variants(["userID\titemID\tx_label", *lines], ["\n", *ends]).items():
        (folder / "d.inter").write_bytes(text.encode())
        results[variant] = outcome(read_mmrec, folder)
    assert all(r == results["lf"] for r in results.values()), results


@FAST
@given(train=LINES, test=LINES, ends=ENDINGS)
def test_lightgcn_reader_gives_the_same_result_for_every_line_end(tmp_path_factory, train, test, ends) -> None:
    folder = tmp_path_factory.mktemp("lightgcn-ends")
    results = {}
    for (variant, train_text), test_text in zip(line_end_variants(train, ends).items(),
                                                line_end_variants(test, ends[::-1]).values()):
        (folder / "train.txt").write_bytes(train_text.encode())
        (folder / "test.txt").write_bytes(test_text.encode())
        results[variant] = outcome(read_lightgcn, folder)
    assert all(r == results["lf"] for r in results.values()), results


RAW_TOKEN = st.sampled_from(["u1", "u2", "7", "i1", "i2", "3", "", "\t", ",", '"', " ", "x"])
RAW_LINE = st.lists(RAW_TOKEN, min_size=0, max_size=6).map("".join)


@FAST
@given(lines=st.lists(RAW_LINE, min_size=0, max_size=12), ends=ENDINGS,
       features=st.lists(st.sampled_from(["i1\t0.5", "i2\t1", "7\t2", "3\t1e39", "id\tf", "", "i1\t2\t3"]),
                         max_size=4))
def test_raw_log_and_keyed_features_give_the_same_result_for_every_line_end(
    tmp_path_factory, lines, ends, features
) -> None:
    folder = tmp_path_factory.mktemp("raw-ends")
    results = {}
    for (variant, log), feats in zip(line_end_variants(["user\titem", *lines], ["\n", *ends]).items(),
                                     line_end_variants(features, ends).values()):
        (folder / "log.tsv").write_bytes(log.encode())
        (folder / "f.tsv").write_bytes(feats.encode())
        results[variant] = outcome(process_raw, folder / "log.tsv", {"f": folder / "f.tsv"})
    assert all(r == results["lf"] for r in results.values()), results


def test_cr_only_files_are_read_line_by_line(tmp_path) -> None:
    """Issue 14: ``printf '0 1 2 3\\r1 0 2\\r2 3 1\\r' > train.txt`` was read as one user with 6 items."""
    (tmp_path / "train.txt").write_bytes(b"0 1 2 3\r1 0 2\r2 3 1\r")
    (tmp_path / "test.txt").write_bytes(b"0 0\r1 1\r2 2\r")
    data = read_lightgcn(tmp_path)
    assert (data.num_users, data.num_items) == (3, 4)
    assert data.split("train")[0].tolist() == [0, 0, 0, 1, 1, 2, 2]
    (tmp_path / "test.txt").write_bytes(b"0 0\r1 1\r2 x\r")
    with pytest.raises(DataError, match=r"test\.txt:3: item id must be a non-negative integer, got 'x'$"):
        read_lightgcn(tmp_path)
    mmrec = tmp_path / "mmrec"
    mmrec.mkdir()
    (mmrec / "d.inter").write_bytes(b"userID\titemID\tx_label\r0\t0\t0\r0\t1\t2\r1\t1\t0\r1\t0\t2\r")
    assert read_mmrec(mmrec).split("test")[1].tolist() == [1, 0]


def test_side_files_use_the_same_line_ends_and_name_the_bad_line(tiny_data, tmp_path) -> None:
    tiny_data = dataclasses.replace(tiny_data, item_ids=[f"B{i:03d}" for i in range(tiny_data.num_items)])
    folder = write_mmrec(tiny_data, tmp_path / "d")  # a copy: the session's tiny_data stays without raw ids
    item_map = folder / "item_map.tsv"
    lf = item_map.read_bytes()
    item_map.write_bytes(lf.replace(b"\n", b"\r"))
    assert read_mmrec(folder).item_ids == tiny_data.item_ids
    item_map.write_bytes(lf.replace(b"B002\t2", b"B002\t7"))
    with pytest.raises(DataError, match=r"item_map\.tsv:4: expected 'raw_id<TAB>2', got 'B002\\t7'$"):
        read_mmrec(folder)
    item_map.write_bytes(lf.replace(b"B002", b"B\xff02"))
    with pytest.raises(DataError, match=r"item_map\.tsv:4: byte 0xff is not UTF-8"):
        read_mmrec(folder)


# ------------------------------------------------------------------------------------------- long content
HUGE = "x" * 100_000  # below the csv module's field limit (131072), which refuses longer fields in one line


@pytest.mark.parametrize("case", ["mmrec-header", "mmrec-field", "lightgcn-token", "raw-header", "raw-rating",
                                  "raw-missing-feature", "keyed-id", "keyed-duplicate"])
def test_error_messages_quote_at_most_a_short_piece_of_the_file(tmp_path, case: str) -> None:
    files = {
        "mmrec-header": {"d.inter": HUGE + "\r0\t0\t0\r"},
        "mmrec-field": {"d.inter": f"userID\titemID\tx_label\n0\t{HUGE}\t0\n"},
        "lightgcn-token": {"train.txt": f"0 1\r1 {HUGE}\r", "test.txt": "0 0\n"},
        "raw-header": {"log.tsv": HUGE + "\n0\t1\n", "f.tsv": "1\t0\n"},
        "raw-rating": {"log.tsv": f"user\titem\trating\n0\t1\t{HUGE}\n", "f.tsv": "1\t0\n"},
        "raw-missing-feature": {"log.tsv": f"user\titem\n0\t{HUGE}\n", "f.tsv": "1\t0\n"},
        "keyed-id": {"log.tsv": "user\titem\n0\t1\n", "f.tsv": f"id\tf\n{HUGE}\n"},
        "keyed-duplicate": {"log.tsv": "user\titem\n0\t1\n", "f.tsv": f"{HUGE}\t1\n{HUGE}\t2\n"},
    }[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    read = {"d.inter": read_mmrec, "train.txt": read_lightgcn}.get(next(iter(files)))
    with pytest.raises(DataError) as info:
        read(tmp_path) if read else process_raw(tmp_path / "log.tsv", {"f": tmp_path / "f.tsv"})
    message = str(info.value)
    assert "\n" not in message and "xxxxx" in message
    assert len(message) < len(str(tmp_path)) + 2 * QUOTE_LIMIT + 160, message
    assert "(100000 characters)" in message, message


@FAST
@given(raw=st.binary(max_size=200))
def test_binary_garbage_is_refused_by_the_text_readers(tmp_path_factory, raw: bytes) -> None:
    folder = tmp_path_factory.mktemp("garbage-text")
    (folder / "log.csv").write_bytes(raw)
    expect_clean(process_raw, folder / "log.csv")
    (folder / "f.tsv").write_bytes(raw)
    try:
        read_keyed_features(folder / "f.tsv", "f")
    except DataError as exc:
        assert "\n" not in str(exc)
    mmrec = folder / "mmrec"
    mmrec.mkdir()
    (mmrec / "d.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n0\t0\t2\n")
    (mmrec / "item_map.tsv").write_bytes(raw)
    (mmrec / "notes.txt").write_bytes(raw[::-1])
    expect_clean(read_mmrec, mmrec)


FEATURE_CASES = {  # (matrix for 4 items, a fragment of the message)
    "nan": (np.full((4, 3), np.nan, dtype=np.float32), "row 0: NaN or inf values in modality 'image'"),
    "inf": (np.array([[1, 2], [np.inf, 0], [0, 0], [1, 1]], dtype=np.float64), "row 1: NaN or inf"),
    "too-few-rows": (np.zeros((3, 3), dtype=np.float32), "shape (3, 3), expected (4, d)"),
    "one-dimensional": (np.zeros(4, dtype=np.float32), "shape (4,)"),
    "strings": (np.array([["a"], ["b"], ["c"], ["d"]]), "dtype <U1, expected numbers"),
    "objects": (np.array([[object()]] * 4, dtype=object), "Object arrays cannot be loaded when allow_pickle=False"),
    "booleans": (np.ones((4, 2), dtype=bool), "dtype bool, expected numbers"),
    "durations": (np.zeros((4, 2), dtype="m8[s]"), "dtype timedelta64[s], expected numbers"),
    "zero-columns": (np.zeros((4, 0), dtype=np.float32), "modality 'image' has 0 columns"),
    "complex": (np.full((4, 2), 1 + 2j, dtype=np.complex64), "complex dtype complex64"),
    "beyond-float32": (np.full((4, 2), 1e39), "row 0: values beyond float32's range"),
}


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_bad_feature_matrices_are_refused_with_the_file_named(tmp_path, case: str) -> None:
    path = tmp_path / "image_feat.npy"
    array, fragment = FEATURE_CASES[case]
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError) as info:
        load_features(path, 4, "image")
    message = str(info.value)
    assert message.startswith(f"{path}:") and "\n" not in message and fragment in message, message


def npy_header_claiming(shape: tuple[int, ...]) -> bytes:
    """An ``.npy`` header for a float32 array of ``shape`` followed by 64 bytes: a file far shorter than it says."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(64)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


FEATURE_FILES = {  # (file bytes, a fragment of the message)
    "empty": (b"", "cannot read feature matrix (No data left in file)"),
    "truncated": (npy_header_claiming((4, 8)), "cannot read feature matrix (Failed to read all data"),
    "a-header-claiming-terabytes": (npy_header_claiming((10**6, 10**6)), "cannot read feature matrix"),
    "not-a-zip": (b"PK\x03\x04" + bytes(range(200)), "cannot read feature matrix (File is not a zip file)"),
    "truncated-npz": (npz_bytes(x=np.ones((4, 2)))[:-30], "cannot read feature matrix"),
    "npz-of-two-arrays": (npz_bytes(ids=np.arange(4), features=np.ones((4, 2))),
                          "an .npz with arrays \"['ids', 'features']\"; modality 'image' takes one matrix"),
    "npz-of-objects": (npz_bytes(x=np.array([[object()]] * 4, dtype=object)), "Object arrays cannot be loaded"),
}


@pytest.mark.parametrize("case", list(FEATURE_FILES))
def test_unreadable_feature_files_are_one_line_errors(tmp_path, case: str) -> None:
    path = tmp_path / "image_feat.npy"
    raw, fragment = FEATURE_FILES[case]
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        load_features(path, 4, "image")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and fragment in message, message


def test_an_npz_holding_one_matrix_loads_like_the_npy(tiny_data, tmp_path) -> None:
    """``data.feature_files`` may name an ``.npz`` (``np.savez_compressed``) when it holds exactly one array."""
    folder = write_mmrec(tiny_data, tmp_path / "d")
    np.savez_compressed(folder / "image.npz", image=tiny_data.features["image"].numpy())
    data = read_mmrec(folder, {"image": "image.npz", "text": "text_feat.npy"})
    assert torch.equal(data.features["image"], tiny_data.features["image"])
    np.savez(folder / "both.npz", a=np.ones((tiny_data.num_items, 2)), b=np.ones((tiny_data.num_items, 2)))
    with pytest.raises(DataError, match=r"both\.npz: an \.npz with arrays \"\['a', 'b'\]\"; modality 'image'"):
        read_mmrec(folder, {"image": "both.npz"})


KEYED_CASES = {  # (ids, features, a fragment of the message)
    "zero-columns": (np.array(["a", "b"]), np.zeros((2, 0)), "modality 'image' has 0 columns"),
    "complex": (np.array(["a", "b"]), np.ones((2, 2), dtype=complex), "complex dtype complex128"),
    "strings": (np.array(["a", "b"]), np.array([["x"], ["y"]]), "dtype <U1, expected numbers"),
    "beyond-float32": (np.array(["a", "b"]), np.array([[1.0], [-1e39]]), "row 1 (id 'b'): values beyond float32"),
}


@pytest.mark.parametrize("case", list(KEYED_CASES))
def test_bad_keyed_feature_matrices_are_refused(tmp_path, case: str) -> None:
    ids, features, fragment = KEYED_CASES[case]
    np.savez(tmp_path / "f.npz", ids=ids, features=features)
    with pytest.raises(DataError) as info:
        read_keyed_features(tmp_path / "f.npz", "image")
    assert str(info.value).startswith(f"{tmp_path / 'f.npz'}: ") and fragment in str(info.value), str(info.value)
    (tmp_path / "f.tsv").write_text("id\tx\na\t1\nb\t-1e39\n")
    with pytest.raises(DataError, match=r"f\.tsv:3 \(item 'b'\): values beyond float32's range"):
        read_keyed_features(tmp_path / "f.tsv", "image")
    np.save(tmp_path / "plain.npy", np.ones((2, 2)))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(DataError, match=r"plain\.npz: expected an \.npz with arrays 'ids' and 'features'"):
        read_keyed_features(tmp_path / "plain.npz", "image")


def test_directory_of_nothing_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=str(tmp_path)):
        load_dataset(tmp_path)


PATH_RULE = "a dataset folder, a raw log, a registered name or 'default'"
BAD_LOAD_ARGUMENTS = {
    "path-none": ({"path": None}, f"path must be {PATH_RULE}, got None"),
    "path-empty": ({"path": " "}, f"path is empty; give {PATH_RULE}"),
    "feature-files-string": ({"feature_files": "image_feat.npy"},
                             "feature_files must be a {modality: file name} mapping, got 'image_feat.npy'"),
    "feature-files-list": ({"feature_files": ["image_feat.npy"]},
                           "feature_files must be a {modality: file name} mapping, got ['image_feat.npy']"),
    "feature-files-escaping": ({"feature_files": {"../esc": "x.npz"}},
                               "feature_files: modality '../esc' is not a plain name (no '/', '\\', leading '.' or "
                               "control characters; it names the file <modality>_feat.npy)"),
    "format": ({"format": "csv"}, "format must be one of auto, mmrec, lightgcn, raw, got 'csv'"),
    "cache-dir-number": ({"cache_dir": 5}, "cache_dir must be a folder, got 5"),
    "valid-ratio-nan": ({"valid_ratio": math.nan}, "valid_ratio must be in [0, 1), got nan"),
    "valid-ratio-negative": ({"valid_ratio": -0.1}, "valid_ratio must be in [0, 1), got -0.1"),
    "valid-ratio-one": ({"valid_ratio": 1.0}, "valid_ratio must be in [0, 1), got 1.0"),
    "valid-ratio-text": ({"valid_ratio": "0.1"}, "valid_ratio must be in [0, 1), got '0.1'"),
    "cold-items-nan": ({"cold_items": math.nan}, "cold_items must be in [0, 1), got nan"),
    "split-seed-float": ({"split_seed": 2.5}, "split_seed must be an integer in [0, 4294967295], got 2.5"),
    "cold-seed-negative": ({"cold_seed": -1}, "cold_seed must be in [0, 4294967295], got -1"),
}
"""``load_dataset``/``RecDataModule`` arguments that were ignored (NaN, negative ratios), or failed deep inside
pathlib or the feature reader -> the message after ``<owner>.``."""


@pytest.mark.parametrize("case", list(BAD_LOAD_ARGUMENTS))
def test_a_bad_load_argument_is_refused_naming_it(case: str, tiny_folder: Path) -> None:
    arguments, expected = BAD_LOAD_ARGUMENTS[case]
    arguments = {"path": tiny_folder, **arguments}
    for owner, load in (("load_dataset", load_dataset), ("data", RecDataModule)):
        with pytest.raises(ConfigError) as info:
            load(**arguments)
        assert str(info.value) == f"{owner}.{expected}"


BAD_DATAMODULE_ARGUMENTS = {
    "batch-size-float": ({"batch_size": 2.5}, "data.batch_size must be an integer >= 1, got 2.5"),
    "eval-batch-size-bool": ({"eval_batch_size": True}, "data.eval_batch_size must be an integer >= 1, got True"),
    "seed-float": ({"seed": 1.0}, "data.seed must be an integer in [0, 4294967295], got 1.0"),
    "cold-negatives-string": ({"cold_negatives": "no"}, "data.cold_negatives must be true or false, got 'no'"),
}


@pytest.mark.parametrize("case", list(BAD_DATAMODULE_ARGUMENTS))
def test_a_bad_datamodule_argument_is_refused_naming_it(case: str, tiny_folder: Path) -> None:
    arguments, expected = BAD_DATAMODULE_ARGUMENTS[case]
    with pytest.raises(ConfigError) as info:
        RecDataModule(path=str(tiny_folder), **arguments)
    assert str(info.value) == expected


# ------------------------------------------------------------------------------------------- caches
def _knn_cache_cases() -> dict[str, object]:
    """Ways a cached kNN graph file goes bad: each maps the good file's bytes and contents to the bad file's
    bytes, or to what is saved in it."""
    return {
        "empty": lambda raw, good: b"",
        "truncated": lambda raw, good: raw[: len(raw) // 2],
        "random-bytes": lambda raw, good: bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "a-tensor": lambda raw, good: good["cols"],
        "wrong-keys": lambda raw, good: {"indices": good["cols"]},
        "wrong-shape": lambda raw, good: {**good, "cols": good["cols"][:-3]},
        "float-cols": lambda raw, good: {**good, "cols": good["cols"].float()},
        "cols-out-of-range": lambda raw, good: {**good, "cols": good["cols"] + 1000},
        "other-rows": lambda raw, good: {**good, "rows": good["rows"].flip(0)},
        "other-values": lambda raw, good: {**good, "values": good["values"] * 2},
        "a-string": lambda raw, good: {**good, "values": "0.25"},
    }


KNN_CACHE_CASES = _knn_cache_cases()


@pytest.mark.parametrize("case", list(KNN_CACHE_CASES))
def test_a_corrupted_knn_cache_is_reported_rebuilt_and_rewritten(tiny_data, tmp_path, case: str) -> None:
    from recplug.core.ops.knn import cached_knn_coo, knn_cache_key, knn_coo

    weights = {"image": 0.5, "text": 0.5}
    expected = knn_coo(tiny_data.features, 3, weights)
    cached_knn_coo(tiny_data.features, 3, weights, tmp_path)
    path = tmp_path / "knn" / f"{knn_cache_key(tiny_data.features, 3, weights)}.pt"
    good = torch.load(path, weights_only=True)
    bad = KNN_CACHE_CASES[case](path.read_bytes(), good)
    if isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        torch.save(bad, path)
    with pytest.warns(UserWarning) as caught:
        got = cached_knn_coo(tiny_data.features, 3, weights, tmp_path)
    messages = [str(w.message) for w in caught if "kNN" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith(f"{path}: corrupted kNN graph cache (")
    assert messages[0].endswith("); rebuilding it") and "\n" not in messages[0]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    stored = torch.load(path, weights_only=True)  # rewritten: the next run reads it without a warning
    assert all(torch.equal(stored[k], v) for k, v in zip(("rows", "cols", "values"), expected))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cached_knn_coo(tiny_data.features, 3, weights, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again, expected))


def test_one_knn_cache_file_serves_the_modalities_in_any_order(tiny_data, tmp_path) -> None:
    """Two configs listing the same modality weights in other orders share the cache file; the second read it
    as corrupted and rebuilt it (every run, when runs alternated)."""
    from recplug.core.ops.knn import cached_knn_coo

    def summed(coo: tuple[torch.Tensor, ...]) -> torch.Tensor:
        rows, cols, values = coo
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values).coalesce().to_dense()

    first = cached_knn_coo(tiny_data.features, 3, {"image": 0.7, "text": 0.3}, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = cached_knn_coo(tiny_data.features, 3, {"text": 0.3, "image": 0.7}, tmp_path)
    assert torch.equal(summed(first), summed(second)) and len(list((tmp_path / "knn").iterdir())) == 1


def test_a_damaged_processed_dataset_state_is_a_data_error() -> None:
    for state in ({}, "not a dict", {"name": "x"}, [1, 2]):
        with pytest.raises(DataError, match="not a processed dataset"):
            InteractionData.from_state(state)


def _ablation_run(tmp_path: Path, name: str):
    from recplug.core.cli.ablate import Run, Variant

    return Run(Variant(name, {}), 0, tmp_path / "runs" / name / "seed0", ["fit"], spec_sha256="spec")


def _result(run) -> dict:
    provenance = dict.fromkeys(("recplug", "torch", "pytorch_lightning", "python", "data", "config_sha256",
                                "data_sha256"), "x")
    return {"variant": run.variant.name, "levels": {}, "seed": run.seed, "monitor": "val/recall@20", "epoch": 1,
            "val": {"val/recall@20": 0.5}, "test": {"test/recall@20": 0.25}, "seconds": 1.0,
            "provenance": {**provenance, "plugins": []}, "spec_sha256": run.spec_sha256}


RESULT_CASES = {  # result.json bytes (given a good result) and a fragment of the warning
    "truncated": (lambda good: json.dumps(good).encode()[:40], "unreadable (JSONDecodeError)"),
    "empty": (lambda good: b"", "unreadable (JSONDecodeError)"),
    "not-utf8": (lambda good: b"\xff\xfe{}", "unreadable (UnicodeDecodeError)"),
    "a-list": (lambda good: b"[1, 2]", "a JSON list, not an object"),
    "no-test": (lambda good: json.dumps({**good, "test": None}).encode(), "missing or mistyped test"),
    "text-metric": (lambda good: json.dumps({**good, "val": {"val/recall@20": "high"}}).encode(),
                    "a non-numeric val metric"),
    "no-torch-version": (lambda good: json.dumps({**good, "provenance": {
        k: v for k, v in good["provenance"].items() if k != "torch"}}).encode(), "provenance lacks torch"),
}


@pytest.mark.parametrize("case", list(RESULT_CASES))
def test_a_corrupted_ablation_result_is_rerun_with_a_warning(tmp_path, monkeypatch, case: str) -> None:
    """``recplug ablate`` resumes by reading each run's ``result.json``; a damaged one means: run it again."""
    from recplug.core.cli import ablate

    broken, intact = _ablation_run(tmp_path, "broken"), _ablation_run(tmp_path, "intact")
    for run in (broken, intact):
        run.directory.mkdir(parents=True)
        (run.directory / "result.json").write_text(json.dumps(_result(run)))
    to_bytes, fragment = RESULT_CASES[case]
    (broken.directory / "result.json").write_bytes(to_bytes(_result(broken)))
    fitted = []
    monkeypatch.setattr(ablate, "fit_one", lambda run, after=None: fitted.append(run.variant.name) or _result(run))
    with pytest.warns(UserWarning) as caught:
        results, failures, interrupted = ablate.execute([broken, intact], "test/recall@20")
    path = broken.directory / "result.json"
    messages = {str(w.message) for w in caught}
    assert messages == {f"{path}: {fragment}; the run counts as unfinished and is run again"}, messages
    assert fitted == ["broken"] and not failures and not interrupted
    assert [r["variant"] for r in results] == ["broken", "intact"]


# ------------------------------------------------------------------------------------------- the CLI
CONFIG_CASES = {
    "not-yaml": "model: [unclosed\n",
    "list-at-top": "- 1\n- 2\n",
    "wrong-type": "model:\n  embedding_dim: sixty-four\n",
    "unknown-top-key": "modle:\n  embedding_dim: 8\n",
    "unknown-class": "model:\n  fusion: {class_path: recplug.NoSuchThing}\n",
    "python-tag": "model: !!python/object/apply:os.system ['echo pwned']\n",
    "negative-batch": "data:\n  batch_size: -5\n",
    "empty-encoders": "model:\n  encoders: []\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_hostile_configs_end_in_one_line_errors(tmp_path, case: str, capsys) -> None:
    from recplug.core.cli.main import main

    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG_CASES[case])
    code = main(["fit", "--config", str(config), "--trainer.fast_dev_run=true", "--trainer.logger=false",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"{case}: exit {code}"
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "pwned").exists()


def test_a_huge_id_is_refused_without_allocating_for_it(tmp_path) -> None:
    """Found by the random-file test above: one id of 2^34 must not allocate a 160 GB count array."""
    (tmp_path / "train.txt").write_text("0 1\n1 0\n")
    (tmp_path / "test.txt").write_text("21474836480 0\n")
    with pytest.raises(DataError, match="user id values are not contiguous: id 2 never occurs"):
        read_lightgcn(tmp_path)
