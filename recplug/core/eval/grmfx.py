"""GRMF-X: a model's ranking metrics relative to matrix factorisation of the same representation size.

GRecX (Cai et al., arXiv 2111.10342) announces GRMF-X as a metric "to provide a unified benchmark for the fair
comparison of different complex GNN-based recommendation models" but neither the readable part of the paper nor
any version of its code defines it. This is **our construction**, read from GRecX's benchmark plots (each method
labelled by its final representation size, e.g. ``NGCF(64->256)`` beside ``MF(256)``, with MF(64) as a reference
line), not GRecX's formula:

    GRMF-X[m@k](model) = m@k(model) / m@k(MF-X)

where ``X`` is the width of the vectors whose inner product scores items (for NGCF's concatenation, 4 x 64 =
256), and MF-X is plain MF-BPR with ``X``-dimensional ID embeddings trained and evaluated under the same
protocol (split, negatives, loss, epoch budget, early stopping and hyper-parameter search on validation, test at
the best validation epoch). Above 1: the model beats a plain MF given the same representation budget.
See docs/evaluation.md for caveats.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from recplug.core.eval.evaluator import EmbeddingModel


def representation_size(module: EmbeddingModel) -> int:
    """``X``: the width of a ``RecModule``'s final user/item embeddings (what its scores are inner products of)."""
    users, items = module.cached_embeddings()
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user and item representations differ in width: {users.shape[1]} vs {items.shape[1]}")
    return int(users.shape[1])


def grmfx(
    model_metrics: Mapping[str, float | Tensor],
    mf_metrics: Mapping[str, float | Tensor],
    model_dim: int,
    mf_dim: int,
) -> dict[str, float]:
    """``{key: model[key] / mf[key]}`` for every metric key of the model (e.g. ``test/recall@20``).

    Args:
        model_metrics: the model's metrics, e.g. ``trainer.callback_metrics`` after ``trainer.test``.
        mf_metrics: MF-X's metrics under the same protocol, with the same keys.
        model_dim: the model's final representation size ``X`` (see :func:`representation_size`).
        mf_dim: MF's embedding size; must equal ``model_dim``: that is what makes the comparison GRMF-X.

    A ratio whose MF-X value is 0 is ``nan`` (undefined), never ``inf``.
    """
    if model_dim != mf_dim:
        raise ValueError(f"GRMF-X compares equal representation sizes: the model has X={model_dim}, MF has {mf_dim}")
    keys = [key for key in model_metrics if "@" in key]
    missing = [key for key in keys if key not in mf_metrics]
    if missing:
        raise KeyError(f"MF-{mf_dim} metrics lack {missing}")
    ratios = {}
    for key in keys:
        model, base = float(model_metrics[key]), float(mf_metrics[key])
        ratios[key] = model / base if base != 0 else float("nan")
    return ratios
