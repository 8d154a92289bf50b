"""`recplug.Recommender` (issue 16): the notebook API returns `recplug predict`'s lists in the dataset's ids, its
fold-in and similar items follow their definitions, and bad ids or k raise one recplug line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import recplug
from recplug import CheckpointError, ConfigError, InvalidArgument
from recplug.core.cli.main import main
from recplug.core.data.resolve import load_dataset

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def rec(mf_recommender) -> recplug.Recommender:
    return mf_recommender


def test_recommend_gives_predicts_top20_for_every_user(rec, mf_run, tie_swaps) -> None:
    users = list(mf_run.top20)
    assert len(users) == rec.num_users == load_dataset("default").num_users
    ranked = rec.recommend(users, k=20)
    swapped = [u for u, r in zip(users, ranked) if tie_swaps([str(i) for i in r.items], mf_run.top20[u][0], int(u))]
    assert len(swapped) <= len(users) // 100
    np.testing.assert_allclose(ranked[0].scores, mf_run.top20[users[0]][1], rtol=1e-4)


def test_ids_are_the_datasets_and_seen_items_are_left_out_only_when_asked(rec, tie_swaps) -> None:
    data = load_dataset("default")
    indptr, seen = data.user_csr(("train", "valid"))
    user = int(torch.argmax(indptr[1:] - indptr[:-1]))
    seen_of_user = set(seen[indptr[user]:indptr[user + 1]].tolist())
    assert rec.recommend([str(user)], k=20) == rec.recommend(user, k=20)  # the default keeps no raw ids
    kept, everything = rec.recommend([user], k=rec.num_items)[0], rec.recommend([user], rec.num_items, False)[0]
    assert len(everything.items) == rec.num_items and len(kept.items) == rec.num_items - len(seen_of_user)
    assert kept.items == [item for item in everything.items if item not in seen_of_user]
    order = np.argsort(-rec.score([user], list(range(rec.num_items)))[0], kind="stable")
    assert len(tie_swaps([str(i) for i in everything.items], [str(i) for i in order], user)) <= 4


def test_a_new_users_profile_is_folded_in_as_the_mean_of_its_items(rec) -> None:
    profile = [5, 17, 400]
    ranked = rec.recommend_profile(profile, k=30)
    expected = rec.items[profile].mean(0) @ rec.items.T
    expected[profile] = -np.inf
    assert ranked.items == torch.topk(expected, 30).indices.tolist()
    mean_similarity = (rec.items[ranked.items] @ rec.items[profile].T).mean(1)  # score(j) = mean_i <e_i, e_j>
    np.testing.assert_allclose(ranked.scores, mean_similarity.numpy(), rtol=1e-5)
    for similar, item in zip(rec.similar_items([5, 17], k=10), [5, 17]):  # the one-item profile
        alone = rec.recommend_profile([item], k=10)
        assert similar.items == alone.items
        np.testing.assert_allclose(similar.scores, alone.scores, rtol=1e-5)
    assert 5 not in rec.similar_items([5], k=10)[0].items


def test_score_is_the_matrix_of_inner_products(rec) -> None:
    scores = rec.score([0, 9], [1, 2, 3])
    assert scores.shape == (2, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, (rec.users[[0, 9]] @ rec.items[[1, 2, 3]].T).numpy())


USERS, ITEMS = "must be user ids of the dataset (4000 users), got", "must be item ids of the dataset (2500 items), got"
K = "must be in [1, 2500] (the number of items), got"


@pytest.mark.parametrize("call, message", [
    (lambda r: r.recommend(["nobody"]), f"recommend.user_ids {USERS} 'nobody'"),
    (lambda r: r.recommend([0, -1, 4000]), f"recommend.user_ids {USERS} [-1, 4000]"),
    (lambda r: r.recommend([0], k=0), f"recommend.k {K} 0"),
    (lambda r: r.recommend([0], k=2501), f"recommend.k {K} 2501"),
    (lambda r: r.similar_items([0], k=1.5), "similar_items.k must be an integer in [1, 2500] (the number of items), "
                                            "got 1.5"),
    (lambda r: r.recommend_profile([]), "recommend_profile.item_ids must be a non-empty list of item ids, got []"),
    (lambda r: r.recommend_profile([2500]), f"recommend_profile.item_ids {ITEMS} 2500"),
    (lambda r: r.score([0], ["x"]), f"score.item_ids {ITEMS} 'x'"),
    (lambda r: r.recommend([0], exclude_seen="no"), "recommend.exclude_seen must be True or False, got 'no'"),
    (lambda r: r.recommend([0], exclude_seen=None), "recommend.exclude_seen must be True or False, got None"),
])
def test_unknown_ids_and_bad_k_raise_one_line(rec, call, message) -> None:
    with pytest.raises(InvalidArgument) as info:
        call(rec)
    assert str(info.value) == message


def test_an_unknown_excluded_split_is_refused(mf_run) -> None:
    with pytest.raises(recplug.ConfigError, match=r"^exclude: unknown split\(s\) \['tests'\]; choose from "):
        recplug.Recommender.from_checkpoint(mf_run.ckpt, exclude=["tests"])


NO_LIST = "must be a list of {} ids (or one id), got"


@pytest.mark.parametrize("call, message", [
    (lambda r: r.recommend(None), f"recommend.user_ids {NO_LIST.format('user')} None"),
    (lambda r: r.recommend(1.0), f"recommend.user_ids {NO_LIST.format('user')} 1.0"),
    (lambda r: r.recommend(b"12"), f"recommend.user_ids {NO_LIST.format('user')} b'12'"),
    (lambda r: r.recommend({"1": 2}), f"recommend.user_ids {NO_LIST.format('user')} {{'1': 2}}"),
    (lambda r: r.recommend(np.array(1)), f"recommend.user_ids {NO_LIST.format('user')} array(1)"),
    (lambda r: r.recommend(torch.tensor(1)), f"recommend.user_ids {NO_LIST.format('user')} tensor(1)"),
    (lambda r: r.recommend_profile(None), f"recommend_profile.item_ids {NO_LIST.format('item')} None"),
    (lambda r: r.score(None, None), f"score.user_ids {NO_LIST.format('user')} None"),
])
def test_what_is_no_id_nor_list_of_ids_is_refused(rec, call, message) -> None:
    with pytest.raises(ConfigError) as info:
        call(rec)
    assert str(info.value) == message


def test_ids_may_be_a_1d_array_or_tensor(rec) -> None:
    assert rec.recommend(np.array([1, 2]), k=3) == rec.recommend(torch.tensor([1, 2]), k=3) == rec.recommend([1, 2], 3)
    with pytest.raises(ConfigError, match=r"^recommend.user_ids must be a list of user ids \(or one id\), got \{"):
        rec.recommend({1, 2}, k=3)  # a set has no order to answer in


@pytest.mark.parametrize("arguments, message", [
    ((torch.randn(3, 4), torch.randn(5, 6)), "Recommender.items must have the width of users (4), got shape [5, 6]"),
    ((torch.randn(3), torch.randn(5, 3)), "Recommender.users must be a 2-d tensor [num_users, d], got shape [3]"),
    ((torch.randn(3, 4), [[0.0] * 4]),
     "Recommender.items must be a 2-d tensor [num_items, d], got [[0.0, 0.0, 0.0, 0.0]]"),
    ((torch.randn(3, 4), torch.randn(5, 4), ["a"]),
     "Recommender.user_ids must hold one id per row of users (3), got 1"),
    ((torch.randn(3, 4), torch.randn(5, 4), list("abcd")),
     "Recommender.user_ids must hold one id per row of users (3), got 4"),
    ((torch.randn(3, 4), torch.randn(2, 4), None, [1, "1"]),
     "Recommender.item_ids must be distinct (ids are matched as text), got 1 twice"),
    ((torch.randn(3, 4), torch.randn(2, 4), None, None, (torch.tensor([0, 0]), torch.tensor([], dtype=torch.long))),
     "Recommender.seen must be a CSR whose indptr has num_users + 1 (4) entries, got [2]"),
    ((torch.randn(3, 4), torch.empty(0, 4)), "Recommender.items must hold at least one item, got shape [0, 4]"),
    ((torch.randn(3, 4), torch.randn(5, 4), "abc"), "Recommender.user_ids must be a list of ids, one per row of "
                                                    "users, got 'abc'"),
    ((torch.randn(3, 4), torch.randn(5, 4), 5), "Recommender.user_ids must be a list of ids, one per row of users, "
                                                "got 5"),
    ((torch.randn(3, 4, dtype=torch.complex64), torch.randn(5, 4)),
     "Recommender.users must be a dense real floating-point tensor, got a torch.complex64 strided tensor on cpu"),
    ((torch.randn(3, 4), torch.empty(5, 4, device="meta")),
     "Recommender.items must be a dense real floating-point tensor, got a torch.float32 strided tensor on meta"),
    ((torch.randn(3, 4).to_sparse(), torch.randn(5, 4)),  # fuzz round 5: accepted, then failed to rank
     "Recommender.users must be a dense real floating-point tensor, got a torch.float32 sparse_coo tensor on cpu"),
    ((torch.ones(3, 4, dtype=torch.long), torch.randn(5, 4)),
     "Recommender.users must be a dense real floating-point tensor, got a torch.int64 strided tensor on cpu"),
    ((torch.randn(3, 0), torch.randn(5, 0)), "Recommender.users must have at least one column (d >= 1), got shape "
                                             "[3, 0]"),
])
def test_a_recommender_of_mismatched_embeddings_or_ids_is_refused(arguments, message) -> None:
    with pytest.raises(ConfigError) as info:
        recplug.Recommender(*arguments)
    assert str(info.value) == message


CSR_OF = "Recommender.seen must be a CSR whose indptr starts at 0, never decreases and ends at the number of item"


@pytest.mark.parametrize("keywords, message", [
    ({"seen": (torch.tensor([0, 1, 2, 3]), torch.tensor([99]))}, f"{CSR_OF} indices (1), got [0, 1, 2, 3]"),
    ({"seen": (torch.tensor([0, 2, 1, 1]), torch.tensor([0, 1]))}, f"{CSR_OF} indices (2), got [0, 2, 1, 1]"),
    ({"seen": (torch.tensor([1, 1, 1, 1]), torch.tensor([0]))}, f"{CSR_OF} indices (1), got [1, 1, 1, 1]"),
    ({"seen": (torch.tensor([0, 1, 1, 1]), torch.tensor([-1]))},
     "Recommender.seen must hold item indices in [0, 5) (the number of items), got -1"),
    ({"seen": (torch.tensor([0, 1, 1, 1]), torch.tensor([5]))},
     "Recommender.seen must hold item indices in [0, 5) (the number of items), got 5"),
    ({"seen": 5}, "Recommender.seen must be a CSR (indptr [num_users + 1], item indices): two 1-d integer tensors, "
                  "got 5"),
    ({"seen": (torch.tensor([0, 0, 0, 1]), torch.tensor([1.0]))}, "Recommender.seen must be a CSR (indptr "
     "[num_users + 1], item indices): two 1-d integer tensors, got (tensor([0, 0, 0, 1]), tensor([1.]))"),
    ({"config": [1, 2]}, "Recommender.config must be a mapping (or None), got [1, 2]"),
    ({"provenance": "x"}, "Recommender.provenance must be a mapping (or None), got 'x'"),
    ({"exclude": 5}, "Recommender.exclude must be a split or a list of splits (train, valid, test), got 5"),
    ({"exclude": ["tain"]}, "Recommender.exclude: unknown split(s) ['tain']; choose from train, valid, test"),
    ({"exclude": ["train", "train"]}, "Recommender.exclude: 'train' is given twice"),  # fuzz round 5: kept twice
])
def test_a_recommender_of_a_bad_seen_config_or_exclude_is_refused(keywords, message) -> None:
    with pytest.raises(ConfigError) as info:
        recplug.Recommender(torch.randn(3, 4), torch.randn(5, 4), **keywords)
    assert str(info.value) == message


def test_seen_may_be_integer_arrays_ids_arrays_and_exclude_one_split() -> None:
    rec = recplug.Recommender(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([5, 6, 7]),
                              np.array([10, 11, 12, 13, 14]), (np.array([0, 0, 0, 0]), np.array([])), exclude="train")
    assert rec.user_ids == [5, 6, 7] and rec.exclude == ("train",)
    assert len(rec.recommend([6], k=5)[0].items) == 5 and rec.recommend_profile([12], k=4).items[0] in (10, 11, 13, 14)
    seen = recplug.Recommender(torch.randn(3, 4), torch.randn(5, 4),
                               seen=(np.array([0, 1, 1, 2], dtype=np.int32), np.array([4, 0])))
    assert 4 not in seen.recommend([0], k=5)[0].items and 0 not in seen.recommend([2], k=5)[0].items


def test_a_long_unknown_id_is_quoted_cut() -> None:
    rec = recplug.Recommender(torch.randn(3, 4), torch.randn(5, 4))
    with pytest.raises(InvalidArgument) as info:
        rec.recommend(["a" * 10**6, "b"], k=2)
    assert str(info.value) == (f"recommend.user_ids must be user ids of the dataset (3 users), got "
                               f"[{'a' * 80!r}... (1000000 characters), 'b']")


@pytest.mark.parametrize("keywords, message", [
    ({"ckpt_path": ""}, "ckpt_path is empty; give a checkpoint's path or URL"),
    ({"ckpt_path": None}, "ckpt_path must be a checkpoint's path or URL, got None"),
    ({"config": ""}, "config is empty; give a YAML config's path, or leave it out for the one the checkpoint records"),
    ({"config": 5}, "config must be a YAML config's path, got 5"),
])
def test_an_empty_or_no_path_is_refused_by_name(mf_run, keywords, message) -> None:
    with pytest.raises(ConfigError) as info:
        recplug.Recommender.from_checkpoint(**{"ckpt_path": mf_run.ckpt, **keywords})
    assert str(info.value) == message


def test_one_excluded_split_may_be_given_alone(mf_run) -> None:
    assert recplug.Recommender.from_checkpoint(mf_run.ckpt, exclude="train").exclude == ("train",)
    with pytest.raises(ConfigError, match=r"^exclude must be a split or a list of splits \(train, valid, test\), "
                                          r"got 5$"):
        recplug.Recommender.from_checkpoint(mf_run.ckpt, exclude=5)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_no_checkpoint_file() -> None:
    with pytest.raises(CheckpointError, match="^/dev/null: a device or pipe, not a checkpoint file$"):
        recplug.Recommender.from_checkpoint("/dev/null")


@pytest.mark.parametrize("config, message", [
    ("none.yaml", "Parser key \"config\": File does not exist: '{tmp}/none.yaml'"),
    (".", "Parser key \"config\": Path is not a file: '{tmp}'"),
    ("unknown.yaml", "Group 'model' does not accept option 'nosuch'"),
])
def test_a_config_the_parser_refuses_raises_its_line_in_python_and_exits_2_on_the_command_line(
    mf_run, tmp_path, capsys, config, message,
) -> None:
    (tmp_path / "unknown.yaml").write_text("model:\n  nosuch: 1\n")
    path, message = tmp_path / config, message.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as info:  # not the parser's SystemExit
        recplug.Recommender.from_checkpoint(mf_run.ckpt, config=path)
    assert str(info.value) == message and "error:" not in capsys.readouterr().err
    export = ["export", "--ckpt_path", str(mf_run.ckpt), "--config", str(path), "--out", str(tmp_path / "out")]
    assert main(export) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_a_config_of_other_components_than_the_checkpoints_is_refused(mf_run) -> None:
    wrong = r"trained with model\.encoders \['IdEmbedding'\], but the config has \['UserItemGraph'\]; use the config"
    with pytest.raises(ConfigError, match=rf"^ckpt_path {re.escape(str(mf_run.ckpt))}: {wrong} it was trained with"):
        recplug.Recommender.from_checkpoint(mf_run.ckpt, config=ROOT / "configs" / "lightgcn.yaml")
