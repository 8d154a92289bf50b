"""Sparse propagation: constant sparse matrices applied to dense embeddings, fast on CPU.

Graph encoders multiply a fixed sparse matrix ``A`` (a normalised adjacency, a kNN graph, a user-profile
matrix) by dense embeddings ``X``. Autograd only flows into ``X``; its gradient is ``Aᵀ G``. PyTorch's own
sparse autograd transposes ``A`` on every backward (a sort of all non-zeros), which dominates a LightGCN
step. :class:`SparseOperator` instead keeps ``Aᵀ`` precomputed, and for a symmetric ``A`` (the normalised
bipartite adjacency ``D^-1/2 A D^-1/2`` of LightGCN, He et al., SIGIR 2020) reuses ``A`` itself.

Backends: ``"torch"`` (native CSR, the default) and ``"torch_sparse"`` (``torch_sparse.SparseTensor``, from
the ``sparse`` extra: ``pip install recplug[sparse]``). Both give the same results.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from recplug.core.errors import ConfigError

BACKENDS = ("torch", "torch_sparse")
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is usable here, else raise :class:`ConfigError` saying how to fix it."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown sparse backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "torch_sparse":
        try:
            import torch_sparse  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "sparse backend 'torch_sparse' needs the torch-sparse package: pip install 'recplug[sparse]' "
                f"(or set backend: torch) [{exc}]"
            ) from None
    return backend


def coo_to_csr(rows: Tensor, cols: Tensor, values: Tensor, num_rows: int, num_cols: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort ``(rows, cols, values)`` into CSR ``(crow [R+1], col, values)``; duplicate entries are summed."""
    key = rows * num_cols + cols
    key, order = torch.sort(key)
    values = values[order]
    unique, inverse = torch.unique_consecutive(key, return_inverse=True)
    if unique.numel() != key.numel():
        values = torch.zeros(unique.numel(), dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    rows, cols = unique // num_cols, unique % num_cols
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return crow, cols, values


class _SparseMatmul(torch.autograd.Function):
    """``A @ x`` with ``dx = Aᵀ @ dA`` from the operator's precomputed transpose (no transpose at backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, op: SparseOperator) -> Tensor:
        ctx.op = op
        return op.apply_matrix(x.detach(), transpose=False)  # detached: torch_sparse would prepare a transpose

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.op.apply_matrix(grad.contiguous(), transpose=True), None


class SparseOperator(nn.Module):
    """A constant sparse matrix ``A`` (``R x C``), applied as ``op(x) = A @ x`` with gradients for ``x``.

    The matrix lives in non-persistent buffers (rebuilt from data, never checkpointed; moved with the module).

    Args:
        crow: CSR row pointers ``[R+1]``.
        col: CSR column indices.
        values: CSR values.
        shape: ``(R, C)``.
        symmetric: ``A == Aᵀ`` (then the backward reuses ``A``); otherwise ``Aᵀ`` is built once here.
        backend: ``"torch"`` or ``"torch_sparse"``.
        transpose: ``Aᵀ``'s CSR ``(crow, col, values)`` when the caller has it (no sort here).
    """

    def __init__(
        self, crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int], symmetric: bool = False,
        backend: str = "torch", transpose: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        self.symmetric = symmetric
        self.backend = check_backend(backend)
        self.register_buffer("crow", crow, persistent=False)
        self.register_buffer("col", col, persistent=False)
        self.register_buffer("values", values, persistent=False)
        if not symmetric:
            if transpose is None:
                rows = torch.repeat_interleave(torch.arange(self.shape[0], device=crow.device), crow.diff())
                transpose = coo_to_csr(col, rows, values, self.shape[1], self.shape[0])
            t_crow, t_col, t_values = transpose
            self.register_buffer("t_crow", t_crow, persistent=False)
            self.register_buffer("t_col", t_col, persistent=False)
            self.register_buffer("t_values", t_values, persistent=False)

    @classmethod
    def from_coo(
        cls, rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int], symmetric: bool = False,
        backend: str = "torch",
    ) -> SparseOperator:
        """Build from COO triplets (duplicates summed)."""
        crow, col, vals = coo_to_csr(rows, cols, values, shape[0], shape[1])
        return cls(crow, col, vals, shape, symmetric, backend)

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def extra_repr(self) -> str:
        return f"shape={self.shape}, nnz={self.nnz}, symmetric={self.symmetric}, backend={self.backend!r}"

    def to_dense(self) -> Tensor:
        """The matrix as a dense tensor (for tests on small graphs)."""
        return self._csr(False).to_dense()

    def _csr(self, transpose: bool) -> Tensor:
        if transpose and not self.symmetric:
            crow, col, values, shape = self.t_crow, self.t_col, self.t_values, self.shape[::-1]
        else:
            crow, col, values, shape = self.crow, self.col, self.values, self.shape
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)

    def apply_matrix(self, x: Tensor, transpose: bool = False) -> Tensor:
        """``A @ x`` (or ``Aᵀ @ x``) without autograd bookkeeping."""
        values = self.values if not transpose or self.symmetric else self.t_values
        if values.dtype != x.dtype:
            x = x.to(values.dtype)
        if self.backend == "torch":
            return self._csr(transpose) @ x
        from torch_sparse import SparseTensor, matmul

        if transpose and not self.symmetric:
            crow, col, shape = self.t_crow, self.t_col, self.shape[::-1]
        else:
            crow, col, shape = self.crow, self.col, self.shape
        matrix = SparseTensor(rowptr=crow, col=col, value=values, sparse_sizes=shape, is_sorted=True, trust_data=True)
        return matmul(matrix, x, reduce="sum")

    def forward(self, x: Tensor) -> Tensor:
        if not x.requires_grad:
            return self.apply_matrix(x)
        return _SparseMatmul.apply(x, self)


def distinct_pairs(rows: Tensor, cols: Tensor, num_cols: int) -> tuple[Tensor, Tensor]:
    """The ``(rows, cols)`` pairs de-duplicated and sorted row-major (each pair once, however often it occurs)."""
    keys = torch.unique(rows * num_cols + cols)
    return keys // num_cols, keys % num_cols


def normalized_adjacency(
    users: Tensor, items: Tensor, num_users: int, num_items: int, backend: str = "torch"
) -> SparseOperator:
    """LightGCN's ``Â = D^-1/2 A D^-1/2`` on the ``(M+N)``-node user-item graph, no self-loops (symmetric).

    Duplicate ``(user, item)`` pairs count once; degrees come from the given pairs, so a pruned edge list gives
    the renormalised graph FREEDOM uses (Zhou & Shen, MM 2023).
    """
    users, items = distinct_pairs(users, items, num_items)
    deg_u = torch.bincount(users, minlength=num_users).float()
    deg_i = torch.bincount(items, minlength=num_items).float()
    weight = (deg_u[users] * deg_i[items]).rsqrt()
    rows = torch.cat([users, items + num_users])
    cols = torch.cat([items + num_users, users])
    size = num_users + num_items
    return SparseOperator.from_coo(rows, cols, torch.cat([weight, weight]), (size, size), True, backend)


def row_normalized(
    rows: Tensor, cols: Tensor, num_rows: int, num_cols: int, backend: str = "torch"
) -> SparseOperator:
    """The 0/1 matrix of ``(rows, cols)`` with each non-empty row divided by its count (a mean operator)."""
    rows, cols = distinct_pairs(rows, cols, num_cols)
    count = torch.bincount(rows, minlength=num_rows).clamp_(min=1).float()
    return SparseOperator.from_coo(rows, cols, 1.0 / count[rows], (num_rows, num_cols), False, backend)
