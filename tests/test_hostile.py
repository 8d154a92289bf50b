"""Hostile input: random files for every reader and broken configs for the CLI. Every case must end in a
correct result or a clear one-line error (DataError / exit 2) — never a traceback from library internals, a
hang, or a silently shortened dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recplug.core.dataset import InteractionData
from recplug.core.errors import DataError
from recplug.core.readers import load_features, read_lightgcn, read_mmrec, read_any

ROOT = Path(__file__).resolve().parents[1]
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


FEATURE_CASES = {
    "nan": np.full((4, 3), np.nan, dtype=np.float32),
    "inf": np.array([[1, 2], [np.inf, 0], [0, 0], [1, 1]], dtype=np.float64),
    "too-few-rows": np.zeros((3, 3), dtype=np.float32),
    "one-dimensional": np.zeros(4, dtype=np.float32),
    "strings": np.array([["a"], ["b"], ["c"], ["d"]]),
    "objects": np.array([[object()]] * 4, dtype=object),
}


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_bad_feature_matrices_are_refused_with_the_file_named(tmp_path, case: str) -> None:
    path = tmp_path / "image_feat.npy"
    np.save(path, FEATURE_CASES[case], allow_pickle=True)
    with pytest.raises(DataError) as info:
        load_features(path, 4, "image")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_feature_file_is_refused(tmp_path) -> None:
    path = tmp_path / "text_feat.npy"
    np.save(path, np.zeros((4, 8), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="text_feat.npy"):
        load_features(path, 4, "text")


def test_directory_of_nothing_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=str(tmp_path)):
        read_any(tmp_path)


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
    from recplug.core.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG_CASES[case])
    try:
        code = main(["fit", "--config", str(config), "--trainer.fast_dev_run=true", "--trainer.logger=false",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar=false"])
    except SystemExit as exit_:
        code = exit_.code
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
