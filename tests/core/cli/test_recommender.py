"""`recplug.Recommender` (issue 16): the notebook API returns `recplug predict`'s lists in the dataset's ids, its
fold-in and similar items follow their definitions, and bad ids or k raise one recplug line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recplug
from recplug import InvalidArgument
from recplug.core.data.resolve import load_dataset


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
])
def test_unknown_ids_and_bad_k_raise_one_line(rec, call, message) -> None:
    with pytest.raises(InvalidArgument) as info:
        call(rec)
    assert str(info.value) == message


def test_an_unknown_excluded_split_is_refused(mf_run) -> None:
    with pytest.raises(recplug.ConfigError, match=r"^exclude: unknown split\(s\) \['tests'\]; choose from "):
        recplug.Recommender.from_checkpoint(mf_run.ckpt, exclude=["tests"])
