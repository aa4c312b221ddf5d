"""Paired Wilcoxon signed-rank test, for per-case comparisons of two methods (no scipy needed).

Given paired scores ``x[i]``, ``y[i]`` of the same test case under two methods, the differences
``d = x - y`` are tested for a median of zero:

1. zero differences are dropped (Wilcoxon's original rule; scipy's default ``zero_method="wilcox"``);
2. the remaining ``n`` absolute differences are ranked 1..n, ties sharing their average rank;
3. ``W+`` is the sum of the ranks of the positive differences, ``W-`` that of the negative ones
   (``W+ + W- = n (n + 1) / 2``); the reported statistic is ``min(W+, W-)`` for the two-sided test.

The p-value comes from one of two distributions of ``W+`` under the null hypothesis (every sign equally
likely and independent):

* **exact**: all ``2^n`` sign patterns of the observed ranks, counted by dynamic programming over the
  doubled ranks (which are integers even with ties), so ties are handled exactly, conditional on the ranks;
* **normal approximation**: mean ``n (n + 1) / 4``, variance ``n (n + 1) (2n + 1) / 24`` minus
  ``sum(t^3 - t) / 48`` over tie groups of size ``t``; optional continuity correction of 0.5.

``method="auto"`` uses the exact distribution for ``n <= 50`` and the approximation above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from custom_nets.study.ranking import tied_ranks

__all__ = ["WilcoxonResult", "wilcoxon_signed_rank"]

EXACT_MAX_N = 50
_ALTERNATIVES = ("two-sided", "greater", "less")
_METHODS = ("auto", "exact", "approx")


@dataclass(frozen=True)
class WilcoxonResult:
    """Outcome of :func:`wilcoxon_signed_rank`.

    Attributes:
        statistic: ``min(W+, W-)`` for two-sided tests, ``W+`` for one-sided ones (as scipy reports).
        pvalue: probability under the null hypothesis of a result at least as extreme.
        w_plus: sum of ranks of the positive differences.
        w_minus: sum of ranks of the negative differences.
        n: number of non-zero differences used.
        n_zero: number of zero differences dropped.
        method: "exact" or "approx", the distribution used.
        zstatistic: standardised ``W+`` of the normal approximation (NaN for the exact test).
    """

    statistic: float
    pvalue: float
    w_plus: float
    w_minus: float
    n: int
    n_zero: int
    method: str
    zstatistic: float = math.nan


def _exact_pvalue(ranks: np.ndarray, w_plus: float, alternative: str) -> float:
    """P-value of ``W+`` from its exact distribution over the ``2^n`` sign patterns of ``ranks``."""
    doubled = np.rint(2.0 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
    total = int(doubled.sum())
    counts = np.zeros(total + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in doubled:  # counts[s] = number of sign patterns whose positive ranks sum to s / 2
        counts[r:] = counts[r:] + counts[: total + 1 - r].copy()
    probabilities = counts / counts.sum()
    observed = int(round(2.0 * w_plus))
    lower = float(probabilities[: observed + 1].sum())  # P(W+ <= observed)
    upper = float(probabilities[observed:].sum())  # P(W+ >= observed)
    if alternative == "greater":
        return upper
    if alternative == "less":
        return lower
    return min(1.0, 2.0 * min(lower, upper))


def _normal_pvalue(ranks: np.ndarray, w_plus: float, alternative: str, correction: bool) -> tuple[float, float]:
    """(p-value, z) of ``W+`` under the normal approximation with tie correction."""
    n = ranks.size
    mean = n * (n + 1) / 4.0
    _, tie_sizes = np.unique(ranks, return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(tie_sizes**3 - tie_sizes)) / 48.0
    if variance <= 0:
        return 1.0, 0.0
    difference = w_plus - mean
    if correction:
        if alternative == "two-sided":
            difference = math.copysign(max(abs(difference) - 0.5, 0.0), difference)
        elif alternative == "greater":
            difference -= 0.5
        else:
            difference += 0.5
    z = difference / math.sqrt(variance)
    if alternative == "greater":
        return 0.5 * math.erfc(z / math.sqrt(2.0)), z
    if alternative == "less":
        return 0.5 * math.erfc(-z / math.sqrt(2.0)), z
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0))), z


def wilcoxon_signed_rank(
    x: Sequence[float],
    y: Sequence[float] | None = None,
    alternative: str = "two-sided",
    method: str = "auto",
    correction: bool = False,
) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``x - y`` (or of ``x`` alone when ``y`` is None).

    Args:
        x: scores of method A per case, shape ``(n,)``; or the differences when ``y`` is None.
        y: scores of method B for the same cases in the same order, shape ``(n,)``. Default None.
        alternative: "two-sided" (default), "greater" (A better than B) or "less".
        method: "auto" (exact for up to 50 non-zero differences, else normal), "exact" or "approx".
        correction: continuity correction of 0.5 in the normal approximation. Default False (as scipy).

    Returns:
        A :class:`WilcoxonResult`.

    Raises:
        ValueError: different lengths, NaN values, an unknown ``alternative``/``method``, or no non-zero
            difference (nothing to test).
    """
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r} must be one of {_ALTERNATIVES}")
    if method not in _METHODS:
        raise ValueError(f"method={method!r} must be one of {_METHODS}")
    a = np.asarray(x, dtype=np.float64)
    if y is not None:
        b = np.asarray(y, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"x and y must be paired (same length), got {a.shape} and {b.shape}")
        d = a - b
    else:
        d = a
    if d.ndim != 1:
        raise ValueError(f"x and y must be 1-D sequences of per-case scores, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("x or y contain NaN: drop the cases without a score from both methods first")
    nonzero = d[d != 0]
    n, n_zero = int(nonzero.size), int(d.size - nonzero.size)
    if n == 0:
        raise ValueError(f"all {d.size} differences are zero: the two methods cannot be told apart by this test")
    ranks = tied_ranks(np.abs(nonzero), higher_is_better=False)
    w_plus = float(ranks[nonzero > 0].sum())
    w_minus = float(ranks[nonzero < 0].sum())
    statistic = min(w_plus, w_minus) if alternative == "two-sided" else w_plus
    if method == "exact" or (method == "auto" and n <= EXACT_MAX_N):
        return WilcoxonResult(statistic, _exact_pvalue(ranks, w_plus, alternative), w_plus, w_minus, n, n_zero, "exact")
    pvalue, z = _normal_pvalue(ranks, w_plus, alternative, correction)
    return WilcoxonResult(statistic, pvalue, w_plus, w_minus, n, n_zero, "approx", z)
