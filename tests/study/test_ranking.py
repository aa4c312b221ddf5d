"""Ranking and bootstrap of the evaluation study against hand-computed examples and slow loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from custom_nets.study.ranking import (
    average_rank,
    bootstrap_ranks,
    dataset_scores,
    rank_frequencies,
    rank_methods,
    tied_ranks,
)
from custom_nets.evaluation.summary import summarise


def test_ranks_by_hand_with_shared_ties():
    # 0.9 is best (1); two methods tie at 0.8 for positions 2 and 3 -> 2.5 each; 0.7 is 4th
    assert tied_ranks([0.8, 0.9, 0.7, 0.8]).tolist() == [2.5, 1.0, 4.0, 2.5]
    # three-way tie for positions 1..3 -> 2 each
    assert tied_ranks([0.5, 0.5, 0.5, 0.1]).tolist() == [2.0, 2.0, 2.0, 4.0]
    # lower is better (e.g. ranking average ranks)
    assert tied_ranks([2.0, 1.0, 2.0], higher_is_better=False).tolist() == [2.5, 1.0, 2.5]
    assert rank_methods({"scratch": 0.70, "s3d": 0.72, "mae": 0.70}) == {"scratch": 2.5, "s3d": 1.0, "mae": 2.5}


def test_ranks_match_a_slow_oracle_and_sum_to_a_constant():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 4, size=6) / 4.0  # many ties
        ranks = tied_ranks(scores)
        for i, s in enumerate(scores):
            positions = [p + 1 for p, j in enumerate(np.argsort(-scores, kind="stable")) if scores[j] == s]
            assert ranks[i] == pytest.approx(np.mean(positions))
        assert ranks.sum() == pytest.approx(6 * 7 / 2)


def test_nan_scores_and_mismatched_datasets_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        rank_methods({"a": 0.5, "b": math.nan})
    with pytest.raises(ValueError, match="every method on every dataset"):
        average_rank({"d1": {"a": 1.0, "b": 2.0}, "d2": {"a": 1.0}})


def test_average_rank_by_hand():
    # Table-4-like example: D1 a>b>c, D2 b>a=c (tie shared: 2.5), D3 c>b>a
    d1 = rank_methods({"a": 0.9, "b": 0.8, "c": 0.7})
    d2 = rank_methods({"a": 0.6, "b": 0.7, "c": 0.6})
    d3 = rank_methods({"a": 0.1, "b": 0.2, "c": 0.3})
    result = average_rank({"D1": d1, "D2": d2, "D3": d3})
    assert result == pytest.approx({"a": (1 + 2.5 + 3) / 3, "b": (2 + 1 + 2) / 3, "c": (3 + 2.5 + 1) / 3})


def test_dataset_score_equals_the_evaluation_summary():
    rng = np.random.default_rng(1)
    values = rng.random((5, 3))
    values[0, 1] = values[3, 1] = math.nan  # class 1 absent from two cases
    values[:, 2] = math.nan  # class 2 absent everywhere: left out of the mean
    results = [{"case": f"c{i}", "dsc": dict(zip("xyz", row)), "nsd": dict(zip("xyz", row))} for i, row in enumerate(values)]
    summary = summarise(results, list("xyz"), {n: 2.0 for n in "xyz"})
    assert dataset_scores(values[None]) == pytest.approx(summary["mean_dsc"])
    # by hand: class means over defined cases, then the mean of the two defined classes
    expected = (values[:, 0].mean() + np.nanmean(values[:, 1])) / 2
    assert dataset_scores(values[None]) == pytest.approx(expected)
    # two seeds: mean of the per-seed scores
    other = rng.random((5, 3))
    assert dataset_scores(np.stack([values, other])) == pytest.approx((expected + other.mean()) / 2)


def _slow_bootstrap(values, indices):
    """Obvious loop: per sample and method, resampled per-class means, mean over classes and seeds, then ranks."""
    ranks = []
    for sample in indices:
        scores = []
        for method in values:
            per_seed = []
            for seed_values in method:
                drawn = seed_values[sample]
                class_means = [np.nanmean(drawn[:, k]) for k in range(drawn.shape[1]) if not np.all(np.isnan(drawn[:, k]))]
                per_seed.append(np.mean(class_means))
            scores.append(np.mean(per_seed))
        ranks.append(tied_ranks(scores))
    return np.array(ranks)


def test_bootstrap_matches_a_slow_loop_with_the_same_draws():
    rng = np.random.default_rng(2)
    values = rng.random((3, 2, 6, 2))
    values[1, 0, 2, 1] = math.nan
    values[2] = values[0]  # identical methods tie in every sample
    ranks = bootstrap_ranks(values, n_samples=40, seed=7, dataset="brain")
    indices = np.random.default_rng([7, __import__("zlib").crc32(b"brain")]).integers(0, 6, size=(40, 6))
    np.testing.assert_allclose(ranks, _slow_bootstrap(values, indices))
    assert np.all(ranks[:, 0] == ranks[:, 2])
    assert np.all(ranks.sum(axis=1) == 6.0)


def test_bootstrap_is_seeded_per_dataset_and_default_1000_samples():
    values = np.random.default_rng(3).random((2, 1, 8, 1))
    a = bootstrap_ranks(values, seed=0, dataset="x")
    assert a.shape == (1000, 2)
    np.testing.assert_array_equal(a, bootstrap_ranks(values, seed=0, dataset="x"))
    assert not np.array_equal(a, bootstrap_ranks(values, seed=0, dataset="y"))
    # a method better on every case is first in every sample
    dominant = np.stack([values[0] + 1.0, values[0]])
    assert np.all(bootstrap_ranks(dominant, n_samples=100)[:, 0] == 1.0)


def test_bootstrap_of_two_cases_by_hand():
    # method a wins case 0 (1.0 vs 0.0), b wins case 1 (1.0 vs 0.5). Draws of 2 cases:
    # {0,0}: a first; {1,1}: b first; {0,1} or {1,0}: means a 0.75, b 0.5 -> a first. So a is first with p 3/4.
    values = np.array([[[[1.0], [0.5]]], [[[0.0], [1.0]]]])
    ranks = bootstrap_ranks(values, n_samples=4000, seed=1)
    assert np.mean(ranks[:, 0] == 1.0) == pytest.approx(0.75, abs=0.03)


def test_rank_frequencies_split_ties_by_hand():
    ranks = np.array([[1.0, 2.0, 3.0], [1.5, 1.5, 3.0], [2.0, 2.0, 2.0], [3.0, 1.0, 2.0]])
    expected = np.array([
        # positions 1, 2, 3 of method a: 1 + 1/2 + 1/3 + 0, 0 + 1/2 + 1/3 + 0, 0 + 0 + 1/3 + 1
        [1 + 0.5 + 1 / 3, 0.5 + 1 / 3, 1 / 3 + 1],
        [0.5 + 1 / 3 + 1, 1 + 0.5 + 1 / 3, 1 / 3],
        [1 / 3, 1 / 3 + 1, 1 + 1 + 1 / 3],
    ]) / 4
    result = rank_frequencies(ranks)
    np.testing.assert_allclose(result, expected)
    np.testing.assert_allclose(result.sum(axis=0), 1.0)
    np.testing.assert_allclose(result.sum(axis=1), 1.0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_rank_frequencies_of_all_orders_are_uniform(n):
    ranks = np.array([[p.index(m) + 1.0 for m in range(n)] for p in itertools.permutations(range(n))])
    np.testing.assert_allclose(rank_frequencies(ranks), np.full((n, n), 1.0 / n))
