"""Reports of an evaluation study: results table, rank stability, per-case rows, low-data curves, comparison.

:func:`report_study` reads the finished pairs (:mod:`custom_nets.study.results`) and writes
``<output_dir>/results/``: ``table.md``/``table.csv`` (every registered metric per dataset, their means over
datasets, ranks per dataset by the primary metric, average rank), ``per_case.csv``, ``rank_stability.{csv,md,png}``,
``low_data.{csv,png}`` and ``compare_<a>_vs_<b>.{md,csv}`` (:func:`custom_nets.study.compare.compare_methods`).
The metrics are those of ``custom_nets.evaluation.metrics.METRICS`` (DSC and NSD), in registry order; the first
(DSC) ranks the methods, with the rules of :mod:`custom_nets.study.ranking`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.metrics import METRICS
from custom_nets.evaluation.summary import csv_text
from custom_nets.study.compare import compare_methods, comparison_stem
from custom_nets.study.pairs import as_study, training_cases
from custom_nets.study.plots import line_plot, rank_heatmap
from custom_nets.study.ranking import (
    average_rank,
    bootstrap_ranks,
    dataset_scores,
    rank_frequencies,
    rank_methods,
    tied_ranks,
)
from custom_nets.study.results import DatasetResults, collect_results
from custom_nets.study.schema import Pair, Study

__all__ = ["report_study"]

logger = logging.getLogger(__name__)


def _scores(results: DatasetResults) -> dict[str, np.ndarray]:
    """``{metric name: (methods,) dataset scores}`` of one dataset (see :func:`dataset_scores`)."""
    return {m.name: dataset_scores(results.values[m.name], m.aggregation) for m in METRICS}


def _results_table(study: Study, results: dict[str, DatasetResults]) -> tuple[str, str, dict[str, float]]:
    """Markdown and CSV of the Table-4-like results, and the average rank of every method."""
    datasets, methods, metrics, primary = list(results), study.method_names, list(METRICS), METRICS.primary
    scores = {d: {name: dict(zip(methods, values.tolist())) for name, values in _scores(results[d]).items()}
              for d in datasets}
    ranks = {d: rank_methods(scores[d][primary.name], primary.higher_is_better) for d in datasets}
    mean_rank = average_rank(ranks)
    means = {m.name: {method: float(np.mean([scores[d][m.name][method] for d in datasets])) for method in methods}
             for m in metrics}
    sign = -1.0 if primary.higher_is_better else 1.0
    order = sorted(methods, key=lambda method: (mean_rank[method], sign * means[primary.name][method]))
    head = ["method", *[f"{d} {m.display_name}" for d in datasets for m in metrics],
            *[f"mean {m.display_name}" for m in metrics], *[f"rank {d}" for d in datasets], "average rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [["method", *[f"{d}_{m.name}" for d in datasets for m in metrics], *[f"mean_{m.name}" for m in metrics],
             *[f"{d}_rank" for d in datasets], "average_rank"]]
    for method in order:
        cells = [method, *[m.format(scores[d][m.name][method]) for d in datasets for m in metrics],
                 *[m.format(means[m.name][method]) for m in metrics],
                 *[f"{ranks[d][method]:g}" for d in datasets], f"{mean_rank[method]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        rows.append([method, *[repr(scores[d][m.name][method]) for d in datasets for m in metrics],
                     *[repr(means[m.name][method]) for m in metrics], *[repr(ranks[d][method]) for d in datasets],
                     repr(mean_rank[method])])
    return "\n".join(lines) + "\n", csv_text(rows), mean_rank


def _rank_stability(study: Study, results: dict[str, DatasetResults], observed: dict) -> tuple[str, str, dict]:
    """Bootstrapped ranks per dataset and of the average rank: CSV of rank frequencies, Markdown summary, and
    the frequency arrays for the heat map."""
    methods, primary = study.method_names, METRICS.primary
    per_dataset = {d: bootstrap_ranks(r.values[primary.name], study.bootstrap_samples, study.bootstrap_seed, d,
                                      primary.higher_is_better, primary.aggregation)
                   for d, r in results.items()}
    averages = np.mean(np.stack(list(per_dataset.values())), axis=0)  # (samples, methods)
    overall = np.stack([tied_ranks(row, higher_is_better=False) for row in averages])
    frequencies = {d: rank_frequencies(r) for d, r in per_dataset.items()}
    frequencies["average rank"] = rank_frequencies(overall)
    rows = [["dataset", "method", "rank", "fraction"]]
    for name, array in frequencies.items():
        for m, method in enumerate(methods):
            rows += [[name, method, p + 1, repr(float(array[m, p]))] for p in range(len(methods))]
    lines = [
        f"Rank stability: {study.bootstrap_samples} bootstrap samples of the test cases per dataset "
        f"(seed {study.bootstrap_seed}).", "",
        "| method | average rank | bootstrap mean | 95% interval | first overall |", "|---|---|---|---|---|",
    ]
    for m in sorted(range(len(methods)), key=lambda i: observed[methods[i]]):
        low, high = np.percentile(averages[:, m], [2.5, 97.5])
        lines.append(f"| {methods[m]} | {observed[methods[m]]:.2f} | {averages[:, m].mean():.2f} | "
                     f"{low:.2f} - {high:.2f} | {100 * frequencies['average rank'][m, 0]:.1f}% |")
    return "\n".join(lines) + "\n", csv_text(rows), frequencies


def _per_case_rows(study: Study, results_by_size: dict) -> str:
    names = METRICS.names
    rows = [["dataset", "training_cases", "seed", "method", "case", "class", *names]]
    for (dataset, size), results in results_by_size.items():
        for m, method in enumerate(study.method_names):
            for s, seed in enumerate(study.seeds):
                n_train = training_cases(study, Pair(dataset, method, seed, size))
                for c, case in enumerate(results.cases[s]):
                    for k, name in enumerate(results.classes):
                        rows.append([dataset, n_train, seed, method, case, name,
                                     *[repr(float(results.values[n][m, s, c, k])) for n in names]])
    return csv_text(rows)


def _low_data(study: Study, results_by_size: dict, path: Path) -> str:
    """Low-data CSV (every metric) and plot (the primary metric) against the number of training cases."""
    primary = METRICS.primary
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    rows = [["dataset", "method", "training_cases", *[f"mean_{m.name}" for m in METRICS]]]
    for (dataset, size), results in sorted(results_by_size.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        scores = _scores(results)
        for m, method in enumerate(study.method_names):
            n_train = training_cases(study, Pair(dataset, method, study.seeds[0], size))
            plotted = float(scores[primary.name][m]) * (100 if primary.unit == "%" else 1)
            curves.setdefault(dataset, {}).setdefault(method, []).append((n_train, plotted))
            rows.append([dataset, method, n_train, *[repr(float(scores[name][m])) for name in METRICS.names]])
    line_plot(curves, path, "training cases", f"mean {primary.label}",
              title=f"{primary.display_name} vs number of training cases")
    return csv_text(rows)


def _write_results(study: Study, written: dict, name: str, text: str) -> None:
    path = Path(study.output_dir, "results", name)
    atomic_write_text(path, text)
    written[name] = path


def report_study(study: Study | str | os.PathLike) -> dict[str, Path]:
    """Write the study's reports from the finished pairs (see the module docstring for the files).

    The table and the rank stability need every method and seed on a dataset; datasets that are not complete
    are left out with a warning. The low-data plot uses every complete (dataset, size).

    Returns:
        ``{file name: path}`` of the files written.
    """
    study = as_study(study)
    written: dict[str, Path] = {}
    results_by_size = {}
    for size in (None, *study.low_data):
        for dataset in study.dataset_names:
            results = collect_results(study, dataset, size)
            if results is None:
                logger.warning("dataset '%s' (%s) is not complete yet: left out of the reports", dataset,
                               "full" if size is None else f"{size} cases")
            else:
                results_by_size[dataset, size] = results
    full = {d: r for (d, size), r in results_by_size.items() if size is None}
    if not full:
        logger.warning("no dataset is complete: nothing to report yet")
        return written
    table_md, table_csv, mean_rank = _results_table(study, full)
    _write_results(study, written, "table.md", table_md)
    _write_results(study, written, "table.csv", table_csv)
    _write_results(study, written, "per_case.csv", _per_case_rows(study, results_by_size))
    stability_md, stability_csv, frequencies = _rank_stability(study, full, mean_rank)
    _write_results(study, written, "rank_stability.md", stability_md)
    _write_results(study, written, "rank_stability.csv", stability_csv)
    path = Path(study.output_dir, "results", "rank_stability.png")
    rank_heatmap(frequencies, study.method_names, path,
                 title=f"Rank stability ({study.bootstrap_samples} bootstrap samples of the test cases)")
    written["rank_stability.png"] = path
    path = Path(study.output_dir, "results", "low_data.png")
    _write_results(study, written, "low_data.csv", _low_data(study, results_by_size, path))
    written["low_data.png"] = path
    if study.compare is not None and len(full) == len(study.datasets):
        compare_methods(study, *study.compare)
        stem = comparison_stem(*study.compare)
        written[f"{stem}.md"] = Path(study.output_dir, "results", f"{stem}.md")
    logger.info("Study results (table, CSVs, plots) in %s", Path(study.output_dir, "results"))
    return written
