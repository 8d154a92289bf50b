"""FastMetrics against a brute-force NumPy reference: ties, negative scores, -inf masks, 0/1 held-out items,
K larger than the catalogue, batch splits and DDP-style state merges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recplug.core.eval.metrics import METRICS, FastMetrics, hit_matrix, per_user_metrics, ranking_metrics


def numpy_reference(scores: np.ndarray, truth: np.ndarray, ks: list[int], metrics=METRICS) -> dict[str, float]:
    """Per user, one item at a time: rank by score (ties: lower id first), drop -inf, apply the textbook
    formulas (LightGCN recall/NDCG, MMRec MAP), average over users with held-out items."""
    per_user: dict[str, list[float]] = {f"{m}@{k}": [] for m in metrics for k in ks}
    for u in range(scores.shape[0]):
        relevant = {int(i) for i in np.flatnonzero(truth[u])}
        if not relevant:
            continue
        order = np.argsort(-scores[u], kind="stable")
        ranked = order[scores[u, order] != -np.inf][: max(ks)].tolist()
        n = len(relevant)
        for k in ks:
            hits = [1 if i in relevant else 0 for i in ranked[:k]]
            values = {
                "recall": sum(hits) / n,
                "precision": sum(hits) / k,
                "hit": float(any(hits)),
                "ndcg": sum(h / math.log2(i + 2) for i, h in enumerate(hits))
                / sum(1 / math.log2(i + 2) for i in range(min(n, k))),
                "mrr": next((1 / (i + 1) for i, h in enumerate(hits) if h), 0.0),
                "map": sum(hits[i] * sum(hits[: i + 1]) / (i + 1) for i in range(len(hits))) / min(n, k),
            }
            for m in metrics:
                per_user[f"{m}@{k}"].append(values[m])
    return {key: (float(np.mean(v)) if v else float("nan")) for key, v in per_user.items()}


def assert_close(ours: dict[str, float], reference: dict[str, float], tol: float = 1e-9) -> None:
    assert list(ours) == list(reference)
    for key in reference:
        if math.isnan(reference[key]):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(reference[key], abs=tol), key


@st.composite
def ranking_cases(draw):
    """Small score matrices: integer scores (many ties, negatives), -inf masks, sparse truth, any K."""
    rows, items = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    integer = draw(st.booleans())
    value = st.integers(-3, 3).map(float) if integer else st.floats(-100, 100, allow_nan=False, width=32)
    scores = np.array(draw(st.lists(value, min_size=rows * items, max_size=rows * items)), dtype=np.float32)
    scores = scores.reshape(rows, items)
    masked = np.array(draw(st.lists(st.booleans(), min_size=rows * items, max_size=rows * items))).reshape(rows, items)
    scores[masked & draw(st.booleans())] = -np.inf
    truth_rate = draw(st.sampled_from([0.0, 0.1, 0.3, 0.8]))
    truth = np.array(draw(st.lists(st.floats(0, 1), min_size=rows * items, max_size=rows * items)))
    truth = truth.reshape(rows, items) < truth_rate
    if draw(st.booleans()):  # one row with exactly one held-out item
        truth[0] = False
        truth[0, draw(st.integers(0, items - 1))] = True
    ks = sorted(set(draw(st.lists(st.integers(1, items + 5), min_size=1, max_size=3))))
    return scores, truth, ks


@settings(max_examples=300, deadline=None)
@given(ranking_cases())
def test_ranking_metrics_equal_the_numpy_reference(case) -> None:
    scores, truth, ks = case
    ours = ranking_metrics(torch.from_numpy(scores), torch.from_numpy(truth), ks)
    assert_close(ours, numpy_reference(scores, truth, ks))


@settings(max_examples=100, deadline=None)
@given(ranking_cases(), st.integers(1, 4))
def test_batches_and_merged_process_states_sum_to_the_whole(case, parts: int) -> None:
    scores, truth, ks = case
    s, t = torch.from_numpy(scores), torch.from_numpy(truth)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    hits = t.gather(1, order) & (s.gather(1, order) > float("-inf"))
    width = max(ks)
    hits = torch.cat([hits, hits.new_zeros(hits.shape[0], max(0, width - hits.shape[1]))], 1)[:, :width]
    whole = FastMetrics(ks)
    whole.update(hits, t.sum(1))
    # each "process" sees a shard of users in several batches; states merge by summing (as DDP's reduce does)
    shards = [FastMetrics(ks) for _ in range(parts)]
    for p, metric in enumerate(shards):
        rows = torch.arange(hits.shape[0])[p::parts]
        for batch in rows.split(2):
            metric.update(hits[batch], t[batch].sum(1))
    for other in shards[1:]:
        shards[0].merge_state(other)
    expected = {k: float(v) for k, v in whole.compute().items()}
    assert_close({k: float(v) for k, v in shards[0].compute().items()}, expected, tol=1e-12)


def test_known_values_by_hand() -> None:
    # one user, held-out {0, 2}; ranking 0, 1, 2 (hit, miss, hit)
    hits = torch.tensor([[True, False, True]])
    values = per_user_metrics(hits, torch.tensor([2]), [1, 3], METRICS)[:, :, 0]
    by_name = dict(zip(METRICS, values.tolist()))
    assert by_name["recall"] == pytest.approx([0.5, 1.0])
    assert by_name["precision"] == pytest.approx([1.0, 2 / 3])
    assert by_name["hit"] == [1.0, 1.0]
    assert by_name["ndcg"] == pytest.approx([1.0, (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))])
    assert by_name["mrr"] == [1.0, 1.0]
    assert by_name["map"] == pytest.approx([1.0, (1 + 2 / 3) / 2])


def test_users_without_held_out_items_are_excluded() -> None:
    metric = FastMetrics([1], ["recall"])
    metric.update(torch.tensor([[True], [False]]), torch.tensor([1, 0]))
    assert float(metric.compute()["recall@1"]) == 1.0
    assert float(metric.users) == 1


def test_hit_matrix_matches_set_membership() -> None:
    generator = torch.Generator().manual_seed(3)
    topk = torch.randint(-1, 30, (7, 5), generator=generator)
    rows, items = torch.randint(0, 7, (40,), generator=generator), torch.randint(0, 30, (40,), generator=generator)
    pairs = set(zip(rows.tolist(), items.tolist()))
    expected = [[(b, i) in pairs and i >= 0 for i in row] for b, row in enumerate(topk.tolist())]
    assert hit_matrix(topk, rows, items, 30).tolist() == expected
    assert not hit_matrix(topk, rows[:0], items[:0], 30).any()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        FastMetrics([10], ["recall", "auc"])
    with pytest.raises(ValueError, match=">= 1"):
        FastMetrics([0, 10])
    with pytest.raises(ValueError, match="fewer than k"):
        FastMetrics([5]).update(torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[True, False]]))


def test_keys_are_metric_major_and_ks_sorted() -> None:
    metric = FastMetrics([20, 10], ["ndcg", "recall"])
    metric.update(torch.zeros(1, 20, dtype=torch.bool), torch.tensor([1]))
    assert list(metric.compute()) == ["ndcg@10", "ndcg@20", "recall@10", "recall@20"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"ks": 10}, "ks must be a list, e.g. [10, 20], got 10"),
    ({"metrics": "recall"}, "metrics must be a list, e.g. [recall, ndcg], got 'recall'"),  # was read letter by letter
])
def test_cut_offs_or_metrics_not_given_as_a_list_are_refused(arguments, message) -> None:
    from recplug.core.errors import ConfigError
    from recplug.core.eval.metrics import check_metric_args

    settings = {"ks": [10, 20], "metrics": ["recall"], **arguments}
    with pytest.raises(ConfigError) as info:
        check_metric_args(settings["ks"], settings["metrics"])
    assert str(info.value) == message
    assert check_metric_args(iter([20, 10]), ("ndcg",)) == ([10, 20], ["ndcg"])  # any iterable
