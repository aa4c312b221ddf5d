"""Wilcoxon signed-rank test against hand-computed values, brute-force enumeration and (if present) scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from custom_nets.study.significance import wilcoxon_signed_rank


def test_exact_p_values_by_hand():
    # all five differences positive: W+ = 15 is the largest of 2^5 = 32 equally likely sums -> p = 2/32
    result = wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (result.w_plus, result.w_minus, result.statistic, result.n) == (15.0, 0.0, 0.0, 5)
    assert result.pvalue == pytest.approx(2 / 32) and result.method == "exact"
    # one negative difference of rank 2: W- = 2; sign patterns with W- <= 2 are {}, {1}, {2} -> 3/32 per side
    result = wilcoxon_signed_rank([0.6, 0.3, 0.9, 0.9, 0.8], [0.5, 0.5, 0.6, 0.5, 0.3])
    assert (result.w_plus, result.w_minus) == (13.0, 2.0)
    assert result.pvalue == pytest.approx(6 / 32)
    assert wilcoxon_signed_rank([1, -2, 3, 4, 5], alternative="greater").pvalue == pytest.approx(3 / 32)
    assert wilcoxon_signed_rank([1, -2, 3, 4, 5], alternative="less").pvalue == pytest.approx(30 / 32)


def test_zero_differences_are_dropped_and_ties_share_ranks():
    # d = [0, 1, -1, 2]: zero dropped; |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3; W+ = 4.5, W- = 1.5
    result = wilcoxon_signed_rank([0.0, 1.0, -1.0, 2.0])
    assert (result.n, result.n_zero, result.w_plus, result.w_minus) == (3, 1, 4.5, 1.5)
    # exact over the 8 sign patterns of ranks (1.5, 1.5, 3): W+ sums 0,1.5,1.5,3,3,4.5,4.5,6 -> P(W+ >= 4.5) = 3/8
    assert result.pvalue == pytest.approx(2 * 3 / 8)


def test_normal_approximation_by_hand():
    # n = 5, W+ = 13: mean 7.5, variance 5*6*11/24 = 13.75, z = 5.5 / sqrt(13.75)
    result = wilcoxon_signed_rank([1, -2, 3, 4, 5], method="approx")
    z = 5.5 / math.sqrt(13.75)
    assert result.zstatistic == pytest.approx(z)
    assert result.pvalue == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert result.pvalue == pytest.approx(0.13801, abs=1e-5)
    corrected = wilcoxon_signed_rank([1, -2, 3, 4, 5], method="approx", correction=True)
    assert corrected.zstatistic == pytest.approx(5.0 / math.sqrt(13.75))
    # tie correction: ranks (1.5, 1.5, 3) -> variance 3*4*7/24 - (2^3 - 2)/48 = 3.5 - 0.125
    tied = wilcoxon_signed_rank([1.0, -1.0, 2.0], method="approx")
    assert tied.zstatistic == pytest.approx((4.5 - 3.0) / math.sqrt(3.375))


def test_exact_matches_enumeration_of_every_sign_pattern():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.integers(-4, 5, size=int(rng.integers(3, 10))).astype(float)
        d[d == 0] = 1.0
        result = wilcoxon_signed_rank(d)
        magnitude = np.abs(d)
        ranks = np.array([np.mean([p + 1 for p, v in enumerate(sorted(magnitude)) if v == m]) for m in magnitude])
        sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=d.size)]
        w = ranks[d > 0].sum()
        lower = np.mean([s <= w + 1e-9 for s in sums])
        upper = np.mean([s >= w - 1e-9 for s in sums])
        assert result.pvalue == pytest.approx(min(1.0, 2 * min(lower, upper)))


def test_large_samples_use_the_normal_approximation():
    rng = np.random.default_rng(1)
    x = rng.random(80)
    result = wilcoxon_signed_rank(x + 0.05, x + rng.normal(0, 0.1, 80))
    assert result.method == "approx" and result.n == 80 and 0 <= result.pvalue <= 1
    exact = wilcoxon_signed_rank(x + 0.05, x + rng.normal(0, 0.1, 80), method="exact")
    assert exact.method == "exact"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        wilcoxon_signed_rank([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="all 3 differences are zero"):
        wilcoxon_signed_rank([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        wilcoxon_signed_rank([1, math.nan])
    with pytest.raises(ValueError, match="alternative"):
        wilcoxon_signed_rank([1, 2], alternative="two_sided")


def test_agrees_with_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    x, y = rng.random(20), rng.random(20)
    ours, theirs = wilcoxon_signed_rank(x, y, method="exact"), stats.wilcoxon(x, y, method="exact")
    assert ours.statistic == pytest.approx(theirs.statistic) and ours.pvalue == pytest.approx(theirs.pvalue)
    x, y = rng.random(70), rng.random(70)
    ours, theirs = wilcoxon_signed_rank(x, y, method="approx"), stats.wilcoxon(x, y, method="approx")
    assert ours.pvalue == pytest.approx(theirs.pvalue)
