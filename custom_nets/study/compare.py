"""Paired comparison of two methods of a study: Wilcoxon signed-rank tests of their per-case scores.

:func:`compare_methods` (``python -m custom_nets study compare study.yaml methodA methodB``) tests the per-case
mean of the primary metric (DSC, the first of ``custom_nets.evaluation.metrics.METRICS``) per dataset and pooled,
with :func:`custom_nets.study.significance.wilcoxon_signed_rank`, and writes ``results/compare_<a>_vs_<b>.md``
and ``.csv``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.metrics import METRICS
from custom_nets.evaluation.summary import csv_text
from custom_nets.study.pairs import as_study
from custom_nets.study.results import case_means, collect_results
from custom_nets.study.schema import Study
from custom_nets.study.significance import wilcoxon_signed_rank

__all__ = ["compare_methods", "comparison_stem"]

logger = logging.getLogger(__name__)


def comparison_stem(method_a: str, method_b: str) -> str:
    """File name (without suffix) of a comparison in ``results/``: ``compare_<a>_vs_<b>``."""
    return f"compare_{method_a}_vs_{method_b}"


def compare_methods(study: Study | str | os.PathLike, method_a: str, method_b: str) -> str:
    """Paired Wilcoxon signed-rank tests of two methods' per-case mean DSC, per dataset and pooled.

    A pair of observations is one test case of one seed on the full training set, scored by the mean DSC (the
    primary metric) over the classes defined in that case; cases without a defined class in either method are
    dropped.

    Returns:
        The Markdown report (also written to ``results/compare_<a>_vs_<b>.md`` with a CSV beside it).

    Raises:
        ValueError: a method is not in the study, both are the same, or a dataset is not finished.
    """
    study = as_study(study)
    for name in (method_a, method_b):
        if name not in study.method_names:
            raise ValueError(f"method '{name}' is not in the study {study.path}: choose from {study.method_names}")
    if method_a == method_b:
        raise ValueError(f"compare two different methods, got '{method_a}' twice")
    metric = METRICS.primary
    a, b = study.method_names.index(method_a), study.method_names.index(method_b)
    diffs = {}
    for dataset in study.dataset_names:
        results = collect_results(study, dataset, None)
        if results is None:
            raise ValueError(f"dataset '{dataset}' is not finished for every method and seed: run the study first")
        values = results.values[metric.name]
        x, y = case_means(values[a]).ravel(), case_means(values[b]).ravel()
        keep = ~(np.isnan(x) | np.isnan(y))
        diffs[dataset] = (x[keep], y[keep])
    diffs["all datasets"] = tuple(np.concatenate([v[i] for v in diffs.values()]) for i in (0, 1))
    score = f"mean {metric.display_name}"
    lines = [f"Paired Wilcoxon signed-rank test, {method_a} vs {method_b}: per-case {score} (two-sided; exact "
             "distribution up to 50 non-zero differences, normal approximation above).", "",
             f"| dataset | cases | {score} {method_a} | {score} {method_b} | mean difference | W+ | W- | p | test |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [["dataset", "n", f"mean_{method_a}", f"mean_{method_b}", "mean_difference", "w_plus", "w_minus",
             "pvalue", "method"]]
    for dataset, (x, y) in diffs.items():
        try:
            result = wilcoxon_signed_rank(x, y)
            stats = [f"{result.w_plus:g}", f"{result.w_minus:g}", f"{result.pvalue:.4g}", result.method]
            raw = [repr(result.w_plus), repr(result.w_minus), repr(result.pvalue), result.method]
        except ValueError as error:  # no non-zero difference
            logger.warning("%s: %s", dataset, error)
            stats, raw = ["-", "-", "-", "identical"], ["", "", "", "identical"]
        mean_x, mean_y = (float(np.mean(v)) if v.size else math.nan for v in (x, y))
        lines.append(f"| {dataset} | {x.size} | {metric.format(mean_x)} | {metric.format(mean_y)} | "
                     f"{metric.format(mean_x - mean_y)} | " + " | ".join(stats) + " |")
        rows.append([dataset, x.size, repr(mean_x), repr(mean_y), repr(mean_x - mean_y), *raw])
    text = "\n".join(lines) + "\n"
    stem = comparison_stem(method_a, method_b)
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.md"), text)
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.csv"), csv_text(rows))
    return text
