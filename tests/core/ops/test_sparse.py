"""Sparse propagation: exact against dense algebra, backward without transposing, both backends equal."""

from __future__ import annotations

import sys

import pytest
import torch

from recplug.core.errors import ConfigError
from recplug.core.ops.sparse import check_backend, coo_to_csr, normalized_adjacency, row_normalized


def dense_adjacency(users, items, num_users, num_items):
    a = torch.zeros(num_users + num_items, num_users + num_items)
    a[users, items + num_users] = 1.0
    a[items + num_users, users] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_dense(tiny_data):
    users, items = tiny_data.split("train")
    op = normalized_adjacency(users, items, tiny_data.num_users, tiny_data.num_items)
    expected = dense_adjacency(users, items, tiny_data.num_users, tiny_data.num_items)
    torch.testing.assert_close(op.to_dense(), expected)
    assert op.symmetric and not hasattr(op, "t_crow")


def test_duplicate_pairs_count_once():
    users, items = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0])
    op = normalized_adjacency(users, items, 2, 2)
    torch.testing.assert_close(op.to_dense(), dense_adjacency(torch.tensor([0, 1]), torch.tensor([1, 0]), 2, 2))


def test_coo_to_csr_sums_duplicates():
    crow, col, values = coo_to_csr(torch.tensor([1, 0, 1]), torch.tensor([2, 0, 2]), torch.tensor([1.0, 2.0, 3.0]), 2, 3)
    dense = torch.sparse_csr_tensor(crow, col, values, (2, 3)).to_dense()
    torch.testing.assert_close(dense, torch.tensor([[2.0, 0, 0], [0, 0, 4.0]]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_forward_and_backward_equal_dense(tiny_data, symmetric):
    users, items = tiny_data.split("train")
    build = normalized_adjacency if symmetric else row_normalized
    op = build(users, items, tiny_data.num_users, tiny_data.num_items)
    dense = op.to_dense()
    x = torch.randn(op.shape[1], 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    weight = torch.randn(op.shape[0], 8)
    y, y_ref = op(x), dense @ x_ref
    (y * weight).sum().backward()
    (y_ref * weight).sum().backward()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_no_grad_input_gives_plain_product(tiny_data):
    users, items = tiny_data.split("train")
    op = row_normalized(users, items, tiny_data.num_users, tiny_data.num_items)
    x = torch.randn(tiny_data.num_items, 4)
    torch.testing.assert_close(op(x), op.to_dense() @ x)
    torch.testing.assert_close(op.to_dense().sum(1)[torch.bincount(users, minlength=tiny_data.num_users) > 0],
                               torch.ones(int((torch.bincount(users) > 0).sum())))


def test_operator_has_no_state_and_moves_with_module(tiny_data):
    users, items = tiny_data.split("train")
    op = row_normalized(users, items, tiny_data.num_users, tiny_data.num_items)
    assert op.state_dict() == {}
    assert op.double().values.dtype == torch.float64
    assert "nnz=" in repr(op) and "backend='torch'" in repr(op)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="choose one of"):
        check_backend("scipy")


def test_missing_torch_sparse_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sparse", None)
    with pytest.raises(ConfigError, match=r"recplug\[sparse\]"):
        check_backend("torch_sparse")


@pytest.mark.sparse
@pytest.mark.parametrize("symmetric", [True, False])
def test_backends_give_equal_results(tiny_data, symmetric):
    pytest.importorskip("torch_sparse")
    users, items = tiny_data.split("train")
    ops = {}
    for backend in ("torch", "torch_sparse"):
        if symmetric:
            ops[backend] = normalized_adjacency(users, items, tiny_data.num_users, tiny_data.num_items, backend)
        else:
            ops[backend] = row_normalized(users, items, tiny_data.num_users, tiny_data.num_items, backend)
    x = torch.randn(ops["torch"].shape[1], 16)
    outs, grads = [], []
    for op in ops.values():
        leaf = x.clone().requires_grad_(True)
        y = op(leaf)
        (y * torch.arange(y.numel()).reshape(y.shape).float().sin()).sum().backward()
        outs.append(y.detach())
        grads.append(leaf.grad)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
