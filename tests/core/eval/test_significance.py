"""Paired tests and Holm's correction against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recplug.core.eval.significance import holm, paired_test

pytest.importorskip("scipy")
pytest.importorskip("statsmodels")


def test_wilcoxon_all_positive_differences_is_the_exact_tail():
    # ten users, every difference positive and distinct: W- = 0, the exact two-sided p is 2 / 2^10
    a = np.arange(1, 11, dtype=float)
    test = paired_test(a, np.zeros(10))
    assert test.wilcoxon_p == pytest.approx(2 / 2**10)
    assert test.users == 10 and test.mean_difference == pytest.approx(5.5)


def test_paired_t_by_hand():
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = 3.873 with 3 degrees of freedom,
    # whose two-sided p from the t table is 0.0305
    a, b = np.array([2.0, 4.0, 6.0, 8.0]), np.array([1.0, 2.0, 3.0, 4.0])
    t = 2.5 / (math.sqrt(5 / 3) / 2)
    assert t == pytest.approx(3.873, abs=1e-3)
    assert paired_test(a, b).ttest_p == pytest.approx(0.0305, abs=5e-4)


def test_no_difference_is_undefined_not_significant():
    test = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert math.isnan(test.wilcoxon_p) and math.isnan(test.ttest_p)


def test_unpaired_shapes_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_test([1.0, 2.0], [1.0])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06; original order back
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # capped at 1, nan kept out of the family
    adjusted = holm([0.6, math.nan, 0.7])
    assert adjusted[0] == pytest.approx(1.0) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(1.0)
