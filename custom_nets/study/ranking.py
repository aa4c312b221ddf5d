"""Ranking of methods across datasets, and rank stability by bootstrapping test cases.

The comparison protocol of the S3D paper (Table 4) and of the OpenMind benchmark:

1. **Dataset score.** For one method on one dataset the score is the mean DSC (the primary metric of
   ``custom_nets.evaluation.metrics.METRICS``), computed as the evaluation bundle writes it (``summary.json``'s
   ``mean_dsc``, nnU-Net's convention): per class the mean over the test cases where the class is defined (NaN =
   class absent from prediction and reference, left out), then the mean over classes. With several seeds the
   score is the mean over seeds of that number. A metric aggregated by its median takes the per-class median.
2. **Rank per dataset.** Methods are ranked by their dataset score, 1 = highest DSC. Methods with the same
   score share the ranks they occupy: two methods tied for first both get (1 + 2) / 2 = 1.5, and the next
   method gets 3 (fractional "average" ranks, so every dataset hands out the same total 1 + ... + M).
3. **Average rank.** The mean of a method's ranks over all datasets; the table is sorted by it.
4. **Rank stability.** Per dataset the test cases are resampled with replacement (the same resampled cases
   for every method and seed, so the comparison stays paired), the dataset scores are recomputed from the
   resampled cases and the methods re-ranked. 1000 samples by default, drawn from a generator seeded by the
   study seed and the dataset name (so a dataset's samples do not depend on which other datasets are in the
   study). Sample ``b`` of every dataset together gives one bootstrapped average rank.

Per-case values are held in arrays of shape ``(methods, seeds, cases, classes)``: ``values[m, s, c, k]`` is
the DSC of class ``k`` on test case ``c`` for method ``m`` fine-tuned with seed ``s`` (NaN for an empty class).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from custom_nets.evaluation.metric_registry import AGGREGATIONS

__all__ = [
    "average_rank",
    "bootstrap_ranks",
    "dataset_scores",
    "rank_frequencies",
    "rank_methods",
    "tied_ranks",
]


def tied_ranks(scores: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Ranks 1..n of ``scores`` with ties sharing the average of the ranks they occupy.

    Args:
        scores: one finite number per method, shape ``(n,)``.
        higher_is_better: rank 1 goes to the highest score (DSC, NSD). Default True.

    Returns:
        float array of shape ``(n,)``; e.g. scores ``[0.8, 0.9, 0.8]`` give ranks ``[2.5, 1.0, 2.5]``.

    Raises:
        ValueError: a score is NaN or infinite (a missing result cannot be ranked).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be one number per method (1-D), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"scores {values.tolist()} contain NaN or infinity: every ranked method needs a result")
    return _tied_ranks_rows(values[None, :], higher_is_better)[0]


def _tied_ranks_rows(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Average ranks along the last axis of a ``(rows, n)`` array (vectorised over rows)."""
    keys = -values if higher_is_better else values
    # rank of x = (number strictly better) + (number equal + 1) / 2, which is the average of the tied positions
    better = (keys[:, None, :] < keys[:, :, None]).sum(axis=2)
    equal = (keys[:, None, :] == keys[:, :, None]).sum(axis=2)
    return better + (equal + 1) / 2.0


def rank_methods(scores: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank the methods of one dataset by score (1 = best, ties shared); see :func:`tied_ranks`.

    Args:
        scores: ``{method: dataset score}``.
        higher_is_better: Default True (DSC).

    Returns:
        ``{method: rank}`` in the order of ``scores``.
    """
    if not scores:
        raise ValueError("scores is empty: rank at least one method")
    names = list(scores)
    try:
        ranks = tied_ranks([scores[n] for n in names], higher_is_better)
    except ValueError as error:
        raise ValueError(f"cannot rank {dict(scores)}: {error}") from None
    return {name: float(rank) for name, rank in zip(names, ranks)}


def average_rank(ranks: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean rank of every method over the datasets.

    Args:
        ranks: ``{dataset: {method: rank}}``; every dataset must rank the same methods.

    Returns:
        ``{method: mean rank}`` in the order of the first dataset.

    Raises:
        ValueError: no datasets, or datasets that rank different sets of methods (the message names them).
    """
    if not ranks:
        raise ValueError("ranks is empty: give at least one dataset's ranks")
    datasets = list(ranks)
    methods = list(ranks[datasets[0]])
    for dataset in datasets[1:]:
        if set(ranks[dataset]) != set(methods):
            raise ValueError(
                f"dataset '{dataset}' ranks methods {sorted(ranks[dataset])} but '{datasets[0]}' ranks "
                f"{sorted(methods)}: an average rank needs every method on every dataset"
            )
    return {m: float(np.mean([ranks[d][m] for d in datasets])) for m in methods}


def _per_class(values: np.ndarray, aggregation: str) -> np.ndarray:
    """``(..., cases, classes) -> (..., classes)``: the NaN-ignoring mean or median over cases (NaN if none)."""
    if aggregation == "median":
        with warnings.catch_warnings():  # an all-NaN class is NaN, as with the mean
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(values, axis=-2)
    defined = ~np.isnan(values)
    counts = defined.sum(axis=-2)
    sums = np.where(defined, values, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def dataset_scores(values: np.ndarray, aggregation: str = "mean") -> np.ndarray:
    """Dataset score(s) from per-case values: per class the NaN-ignoring mean (or median) over cases, then the
    mean over the classes that have one, then the mean over seeds.

    Args:
        values: ``(..., seeds, cases, classes)`` per-case values (NaN = class undefined in that case).
        aggregation: "mean" or "median" over cases, the metric's ``aggregation``. Default "mean".

    Returns:
        ``(...)`` scores; NaN where a seed has no defined class at all.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 3:
        raise ValueError(f"values must have shape (..., seeds, cases, classes), got {values.shape}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} must be one of {AGGREGATIONS}")
    per_class = _per_class(values, aggregation)  # (..., seeds, classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_defined = ~np.isnan(per_class)
        n_classes = class_defined.sum(axis=-1)
        per_seed = np.where(
            n_classes > 0, np.where(class_defined, per_class, 0.0).sum(axis=-1) / np.maximum(n_classes, 1), np.nan
        )
    return per_seed.mean(axis=-1)


def _dataset_generator(seed: int, dataset: str) -> np.random.Generator:
    # crc32 is stable across processes and Python versions (unlike hash() of a str)
    return np.random.default_rng([int(seed), zlib.crc32(dataset.encode("utf-8"))])


def bootstrap_ranks(
    values: np.ndarray,
    n_samples: int = 1000,
    seed: int = 0,
    dataset: str = "",
    higher_is_better: bool = True,
    aggregation: str = "mean",
) -> np.ndarray:
    """Ranks of the methods on ``n_samples`` bootstrap resamples of one dataset's test cases.

    Every sample draws ``cases`` case indices with replacement and uses them for every method and seed
    (paired resampling), recomputes :func:`dataset_scores` and ranks the methods with shared ties.

    Args:
        values: ``(methods, seeds, cases, classes)`` per-case values of one dataset.
        n_samples: bootstrap samples. Default 1000 (the paper's number).
        seed: study seed; with ``dataset`` it fixes the samples.
        dataset: dataset name, mixed into the generator's seed.
        higher_is_better: Default True (DSC).
        aggregation: "mean" or "median" over cases (see :func:`dataset_scores`). Default "mean".

    Returns:
        ``(n_samples, methods)`` float array of ranks. A method whose resampled score is NaN (no defined
        class in the drawn cases) ranks last, tied with the other such methods.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 4:
        raise ValueError(f"values must have shape (methods, seeds, cases, classes), got {values.shape}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r} must be a positive integer, e.g. 1000")
    n_cases = values.shape[2]
    if n_cases == 0:
        raise ValueError(f"dataset '{dataset}' has no test cases to bootstrap")
    indices = _dataset_generator(seed, dataset).integers(0, n_cases, size=(int(n_samples), n_cases))
    resampled = values[:, :, indices, :]  # (methods, seeds, samples, cases, classes)
    scores = dataset_scores(np.moveaxis(resampled, 2, 0), aggregation)  # (samples, methods)
    worst = -math.inf if higher_is_better else math.inf
    return _tied_ranks_rows(np.where(np.isnan(scores), worst, scores), higher_is_better)


def rank_frequencies(ranks: np.ndarray) -> np.ndarray:
    """How often each method takes each rank position over bootstrap samples, ties split evenly.

    A group of ``k`` methods tied at average rank ``r`` occupies positions ``r - (k-1)/2 ... r + (k-1)/2``;
    each of them is credited ``1/k`` of each position, so every row and every column sums to 1.

    Args:
        ranks: ``(samples, methods)`` ranks from :func:`bootstrap_ranks`.

    Returns:
        ``(methods, methods)`` array: ``[m, p]`` is the fraction of samples in which method ``m`` took
        position ``p + 1``.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 2 or ranks.shape[0] == 0:
        raise ValueError(f"ranks must have shape (samples, methods) with samples >= 1, got {ranks.shape}")
    n_samples, n_methods = ranks.shape
    frequencies = np.zeros((n_methods, n_methods))
    for row in ranks:
        for m, rank in enumerate(row):
            k = int(np.sum(row == rank))
            first = int(round(rank - (k - 1) / 2.0))
            frequencies[m, first - 1 : first - 1 + k] += 1.0 / k
    return frequencies / n_samples
