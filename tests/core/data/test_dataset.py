"""The one scan of feature values, as the readers (numpy) and ``InteractionData`` (torch) use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recplug.core.data.dataset import InteractionData, first_nonfinite_row
from recplug.core.errors import DataError


@pytest.mark.parametrize("as_tensor", [np.asarray, torch.as_tensor], ids=["numpy", "torch"])
def test_the_first_row_with_a_nan_or_an_infinity_is_found(as_tensor) -> None:
    matrix = np.zeros((5, 3), dtype=np.float32)
    assert first_nonfinite_row(as_tensor(matrix)) is None
    matrix[3, 2], matrix[4, 0] = np.inf, np.nan
    assert first_nonfinite_row(as_tensor(matrix)) == 3
    assert first_nonfinite_row(as_tensor(np.zeros((0, 3), dtype=np.float32))) is None


def test_features_built_in_memory_are_checked_too() -> None:
    features = torch.ones(3, 2)
    features[2, 1] = float("nan")
    splits = {"train": (torch.tensor([0, 1]), torch.tensor([0, 2])), "test": (torch.tensor([0]), torch.tensor([1]))}
    with pytest.raises(DataError, match=r"^mem: modality 'image' has NaN or inf features \(first bad row 2\)$"):
        InteractionData("mem", 2, 3, splits, {"image": features}, source="mem")
