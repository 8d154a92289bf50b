"""The shared loss formulas: BPR against its definition, written out by hand."""

from __future__ import annotations

import math

import torch

from recplug.core.model.losses import bpr_loss


def test_bpr_is_minus_the_mean_log_sigmoid_of_the_score_gap() -> None:
    users = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, -1.0]])
    pos = torch.tensor([[2.0, 1.0], [1.0, 1.0], [3.0, 0.5]])
    neg = torch.tensor([[0.0, 3.0], [2.0, 3.0], [1.0, 1.0]])
    gaps = [sum(u * (p - n) for u, p, n in zip(*rows)) for rows in zip(users.tolist(), pos.tolist(), neg.tolist())]
    expected = -sum(math.log(1 / (1 + math.exp(-g))) for g in gaps) / len(gaps)
    assert gaps == [2.0, -4.5, 0.5]
    assert math.isclose(float(bpr_loss(users, pos, neg)), expected, rel_tol=1e-6)


def test_bpr_stays_finite_for_large_score_gaps() -> None:
    users = torch.tensor([[100.0]])
    loss = bpr_loss(users, torch.tensor([[-100.0]]), torch.tensor([[100.0]]))  # gap -20000: log σ underflows
    assert math.isclose(float(loss), 20000.0, rel_tol=1e-6)
