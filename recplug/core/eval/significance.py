"""Paired significance tests on per-user metrics, Holm-corrected across comparisons.

The field's protocol for "model A beats model B": the same users, one metric value per user for each model (here
the mean over seeds), a paired test on the differences. Two tests are reported side by side (their behaviour on
ranking metrics: Urbano et al., "Statistical Significance Testing in Information Retrieval: An Empirical Analysis
of Type I, Type II and Type III Errors", SIGIR 2019): the Wilcoxon signed-rank test (no normality assumption;
zero differences dropped, Wilcoxon's own convention) and the paired t-test. With several comparisons against
one model, the p-values of each test are corrected with Holm's step-down procedure (Holm, "A Simple Sequentially
Rejective Multiple Test Procedure", Scand. J. Stat. 1979), which controls the family-wise error rate without
Bonferroni's loss of power. The statistics are scipy's and statsmodels' (``pip install 'recplug[benchmark]'``),
not ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from recplug.core.errors import ConfigError


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise ConfigError("significance tests need scipy: pip install 'recplug[benchmark]'") from None
    return stats


@dataclass(frozen=True)
class PairedTest:
    """Two-sided p-values of ``a`` vs ``b`` over ``users`` paired values (``nan`` where a test is undefined:
    fewer than two users, or every difference zero)."""

    users: int
    mean_difference: float
    wilcoxon_p: float
    ttest_p: float


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """The Wilcoxon signed-rank and paired t-tests of per-user values ``a[u]`` against ``b[u]`` (same users,
    same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-d arrays of one length, got shapes {a.shape} and {b.shape}")
    stats = _scipy_stats()
    difference = a - b
    if a.size < 2 or not np.any(difference):
        return PairedTest(int(a.size), float(difference.mean()) if a.size else math.nan, math.nan, math.nan)
    wilcoxon = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    ttest = stats.ttest_rel(a, b, alternative="two-sided")
    return PairedTest(int(a.size), float(difference.mean()), float(wilcoxon.pvalue), float(ttest.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the order given; ``nan`` entries stay ``nan`` and are not counted."""
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        raise ConfigError("the Holm correction needs statsmodels: pip install 'recplug[benchmark]'") from None
    values = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(values.shape, math.nan)
    finite = ~np.isnan(values)
    if finite.any():
        adjusted[finite] = multipletests(values[finite], method="holm")[1]
    return [float(p) for p in adjusted]
