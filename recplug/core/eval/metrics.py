"""FastMetrics: full-ranking metrics for a whole batch of users at once (GRecX, arXiv 2111.10342).

Every metric is computed from the ``[B, K]`` hit matrix of the top-``K`` lists and the number of held-out items
of each user, with cumulative sums over the ``K`` positions and no per-user Python loop. Definitions follow
LightGCN (He et al., SIGIR 2020) and MMRec/RecBole, for user ``u`` with held-out set ``T_u`` (``n_u = |T_u|``)
and ``hit_i = 1`` when the item ranked ``i``-th is in ``T_u``:

* ``recall@k    = sum_{i<=k} hit_i / n_u``                                (denominator: all held-out items)
* ``precision@k = sum_{i<=k} hit_i / k``
* ``hit@k       = 1 if any hit_i (i<=k) else 0``
* ``ndcg@k      = sum_{i<=k} hit_i / log2(i+1)  /  sum_{i<=min(n_u,k)} 1 / log2(i+1)``
* ``mrr@k       = 1 / (rank of the first hit)`` if it is ``<= k``, else 0
* ``map@k       = sum_{i<=k} hit_i * precision@i / min(n_u, k)``

Users with no held-out item are excluded from the mean. Positions with no item (index ``-1``: the catalogue
minus the masked items is shorter than ``k``) are misses; ``precision@k`` still divides by ``k``, as GRecX does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral
from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from recplug.core.errors import ConfigError

METRICS: tuple[str, ...] = ("recall", "ndcg", "precision", "hit", "mrr", "map")


def check_metric_args(ks: Sequence[int], metrics: Sequence[str], key: str = "") -> tuple[list[int], list[str]]:
    """Validated copies of ``ks`` (positive, sorted, de-duplicated) and ``metrics`` (known names); errors name
    ``<key>ks`` and ``<key>metrics`` (``key="eval."`` for the CLI's evaluator)."""
    for name, value in (("ks", ks), ("metrics", metrics)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise ConfigError(f"{key}{name} must be a list, e.g. {'[10, 20]' if name == 'ks' else '[recall, ndcg]'}, "
                              f"got {value!r}")
    ks, metrics = list(ks), list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"{key}metrics: unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    if not metrics:
        raise ConfigError(f"{key}metrics is empty; choose from {', '.join(METRICS)}")
    if not ks:
        raise ConfigError(f"{key}ks is empty; give at least one cut-off, e.g. [10, 20]")
    if any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
        raise ConfigError(f"{key}ks: every k must be an integer >= 1, got {list(ks)}")
    return sorted({int(k) for k in ks}), list(dict.fromkeys(metrics))


def hit_matrix(topk: Tensor, truth_rows: Tensor, truth_items: Tensor, num_items: int) -> Tensor:
    """``hits[b, i]``: is item ``topk[b, i]`` one of row ``b``'s held-out items? (``-1`` entries never hit).

    Args:
        topk: ``LongTensor[B, K]`` ranked item ids per query row; ``-1`` for empty positions.
        truth_rows: ``LongTensor[E]`` row (``0..B-1``) of each held-out pair.
        truth_items: ``LongTensor[E]`` item of each held-out pair.
        num_items: catalogue size (items are ``0..num_items-1``).
    """
    truth_keys = torch.sort(truth_rows * num_items + truth_items).values
    rows = torch.arange(topk.shape[0], device=topk.device).unsqueeze(1)
    keys = rows * num_items + topk.clamp(min=0)
    if truth_keys.numel() == 0:
        return torch.zeros_like(topk, dtype=torch.bool)
    pos = torch.searchsorted(truth_keys, keys).clamp(max=truth_keys.numel() - 1)
    return (truth_keys[pos] == keys) & (topk >= 0)


def per_user_metrics(hits: Tensor, num_truth: Tensor, ks: Sequence[int], metrics: Sequence[str]) -> Tensor:
    """``[len(metrics), len(ks), B]`` float64 scores of each user (formulas in the module docstring).

    Args:
        hits: ``BoolTensor[B, K]`` with ``K >= max(ks)`` (see :func:`hit_matrix`).
        num_truth: ``LongTensor[B]`` number of held-out items of each user (``>= 1``).
    """
    width = hits.shape[1]
    if max(ks) > width:
        raise ValueError(f"hit matrix has {width} positions, fewer than k={max(ks)}")
    h = hits.to(torch.float64)
    n = num_truth.to(torch.float64).unsqueeze(1)
    position = torch.arange(1, width + 1, dtype=torch.float64, device=hits.device)
    discount = 1.0 / torch.log2(position + 1.0)
    ideal = torch.cat([discount.new_zeros(1), discount.cumsum(0)])  # ideal[j] = IDCG of j relevant items
    cum_hits = h.cumsum(1)
    columns = torch.tensor([k - 1 for k in ks], device=hits.device)
    kk = columns.to(torch.float64) + 1.0
    found = cum_hits[:, columns]  # [B, len(ks)]
    n_or_k = torch.minimum(n, kk)
    out: dict[str, Tensor] = {}
    for name in metrics:
        if name == "recall":
            out[name] = found / n
        elif name == "precision":
            out[name] = found / kk
        elif name == "hit":
            out[name] = (found > 0).to(torch.float64)
        elif name == "ndcg":
            dcg = (h * discount).cumsum(1)[:, columns]
            out[name] = dcg / ideal[n_or_k.long()]
        elif name == "mrr":
            first = torch.where(hits.any(1), hits.to(torch.uint8).argmax(1), width).unsqueeze(1).to(torch.float64)
            out[name] = torch.where(first < kk, 1.0 / (first + 1.0), 0.0)
        elif name == "map":
            out[name] = (h * cum_hits / position).cumsum(1)[:, columns] / n_or_k
    return torch.stack([out[name].T for name in metrics])


class FastMetrics(Metric):
    """Recall, NDCG, Precision, HitRate, MRR and MAP at several ``k`` from top-k hit matrices.

    States are sums over users (and a user count), reduced with ``sum`` across batches and DDP processes, so
    :meth:`compute` gives the mean over every evaluated user exactly once however the users were sharded.

    Args:
        ks: cut-offs, e.g. ``[10, 20]``.
        metrics: names among :data:`METRICS`.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, ks: Sequence[int] = (10, 20), metrics: Sequence[str] = METRICS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ks, self.metrics = check_metric_args(ks, metrics)
        self.add_state("totals", torch.zeros(len(self.metrics), len(self.ks), dtype=torch.float64), "sum")
        self.add_state("users", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, hits: Tensor, num_truth: Tensor) -> None:
        """Add a batch: ``hits`` ``BoolTensor[B, K>=max(ks)]``, ``num_truth`` ``LongTensor[B]``.

        Users with ``num_truth == 0`` are skipped (excluded from the mean)."""
        keep = num_truth > 0
        if not bool(keep.all()):
            hits, num_truth = hits[keep], num_truth[keep]
        self.totals += per_user_metrics(hits, num_truth, self.ks, self.metrics).sum(-1)
        self.users += hits.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``{"recall@10": mean, ...}`` metric-major; NaN when no user was evaluated."""
        means = self.totals / self.users
        return {f"{m}@{k}": means[i, j] for i, m in enumerate(self.metrics) for j, k in enumerate(self.ks)}


def ranking_metrics(
    scores: Tensor, truth: Tensor, ks: Sequence[int] = (10, 20), metrics: Sequence[str] = METRICS
) -> dict[str, float]:
    """Reference path: metrics from a dense score matrix by a full stable sort (ties: lower item id first).

    Args:
        scores: ``FloatTensor[B, N]``; ``-inf`` marks items that must not be recommended (seen items).
        truth: ``BoolTensor[B, N]`` held-out items of each row; rows with none are excluded.
    """
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    ks, metrics = check_metric_args(ks, metrics)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    hits = truth.gather(1, order) & (scores.gather(1, order) > float("-inf"))
    width = max(ks)
    if hits.shape[1] < width:
        hits = torch.cat([hits, hits.new_zeros(hits.shape[0], width - hits.shape[1])], 1)
    metric = FastMetrics(ks, metrics)
    metric.update(hits[:, :width], truth.sum(1))
    return {name: float(value) for name, value in metric.compute().items()}
