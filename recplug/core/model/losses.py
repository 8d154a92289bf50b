"""Loss formulas shared by the skeleton and the built-in plugins, written once."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bpr_loss(users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
    """BPR (Rendle et al., UAI 2009) on dot-product scores: ``mean softplus(u·n - u·p)`` = ``-mean log σ(u·p - u·n)``.

    ``users``, ``pos_items`` and ``neg_items`` are ``[B, d]`` embeddings of a batch's triples, row by row.
    """
    pos = (users * pos_items).sum(-1)
    neg = (users * neg_items).sum(-1)
    return F.softplus(neg - pos).mean()
