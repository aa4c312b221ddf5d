"""Reports of an evaluation study: results table, rank stability, per-case rows, low-data curves, comparisons.

:func:`report_study` reads the finished pairs (:mod:`custom_nets.evaluation.study` runs them, the study file is
read by :mod:`custom_nets.evaluation.study_schema`) and writes ``<output_dir>/results/``: ``table.md``/``table.csv``
(DSC and NSD per dataset, means, ranks per dataset, average rank), ``per_case.csv``,
``rank_stability.{csv,md,png}``, ``low_data.{csv,png}`` and ``compare_<a>_vs_<b>.{md,csv}``
(:func:`compare_methods`). The ranking rules are those of :mod:`custom_nets.evaluation.ranking`. The demo study
and the command line are in :mod:`custom_nets.evaluation.study_demo`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.plots import line_plot, rank_heatmap
from custom_nets.evaluation.ranking import (
    average_rank,
    bootstrap_ranks,
    dataset_scores,
    rank_frequencies,
    rank_methods,
    tied_ranks,
)
from custom_nets.evaluation.significance import wilcoxon_signed_rank
from custom_nets.evaluation.study import _as_study, _pair_settings, pair_done
from custom_nets.evaluation.study_schema import Pair, Study

__all__ = ["compare_methods", "report_study"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ results


def _read_per_case(path: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """``{case: {class: (dsc, nsd)}}`` from an evaluation's ``metrics_per_case.csv``."""
    cases: dict[str, dict[str, tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cases.setdefault(row["case"], {})[row["class"]] = (float(row["dsc"]), float(row["nsd"]))
    return cases


def _training_cases(study: Study, pair: Pair) -> int:
    """Number of training cases of a pair (low-data size, or the training list of its split file)."""
    if pair.low_data is not None:
        return pair.low_data
    settings = _pair_settings(study, pair)
    splits = json.loads(Path(settings["split_file"]).read_text(encoding="utf-8"))
    if "folds" in splits:
        return len(splits["folds"][int(settings.get("fold") or 0)]["train"])
    return len(splits["train"])


@dataclass(frozen=True)
class _DatasetResults:
    """Per-case values of one dataset and training-set size: arrays ``(methods, seeds, cases, classes)``."""

    cases: tuple[tuple[str, ...], ...]  # per seed
    classes: tuple[str, ...]
    dsc: np.ndarray
    nsd: np.ndarray


def _collect(study: Study, dataset: str, size: int | None) -> _DatasetResults | None:
    """Stack the per-case results of every method and seed; None when some pair is not done."""
    tables = {}
    for method in study.method_names:
        for seed in study.seeds:
            run_dir = Pair(dataset, method, seed, size).run_dir(study)
            if not pair_done(run_dir):
                return None
            tables[method, seed] = _read_per_case(run_dir / "evaluation" / "metrics_per_case.csv")
    cases_per_seed, classes = [], None
    for seed in study.seeds:
        reference = tables[study.method_names[0], seed]
        cases = tuple(sorted(reference))
        for method in study.method_names:
            table = tables[method, seed]
            if tuple(sorted(table)) != cases:
                raise ValueError(
                    f"dataset '{dataset}', seed {seed}: method '{method}' was evaluated on other test cases than "
                    f"'{study.method_names[0]}'; the methods must share the split: delete the run folders of this "
                    "dataset and run the study again"
                )
            found = tuple(sorted({k for row in table.values() for k in row}))
            if classes is None:
                classes = found
            elif found != classes:
                raise ValueError(f"dataset '{dataset}': method '{method}' scored classes {found}, others {classes}")
        cases_per_seed.append(cases)
    n_cases = {len(c) for c in cases_per_seed}
    if len(n_cases) != 1:
        raise ValueError(f"dataset '{dataset}': the seeds' splits have different numbers of test cases {n_cases}")
    shape = (len(study.methods), len(study.seeds), n_cases.pop(), len(classes))
    dsc, nsd = np.full(shape, np.nan), np.full(shape, np.nan)
    for m, method in enumerate(study.method_names):
        for s, seed in enumerate(study.seeds):
            for c, case in enumerate(cases_per_seed[s]):
                for k, name in enumerate(classes):
                    dsc[m, s, c, k], nsd[m, s, c, k] = tables[method, seed][case][name]
    return _DatasetResults(tuple(cases_per_seed), classes, dsc, nsd)


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _results_table(study: Study, results: dict[str, _DatasetResults]) -> tuple[str, str, dict]:
    """Markdown and CSV of the Table-4-like results, and the numbers behind them."""
    datasets, methods = list(results), study.method_names
    dsc = {d: dict(zip(methods, dataset_scores(results[d].dsc).tolist())) for d in datasets}
    nsd = {d: dict(zip(methods, dataset_scores(results[d].nsd).tolist())) for d in datasets}
    ranks = {d: rank_methods(dsc[d]) for d in datasets}
    mean_rank = average_rank(ranks)
    mean_dsc = {m: float(np.mean([dsc[d][m] for d in datasets])) for m in methods}
    mean_nsd = {m: float(np.mean([nsd[d][m] for d in datasets])) for m in methods}
    order = sorted(methods, key=lambda m: (mean_rank[m], -mean_dsc[m]))
    head = ["method", *[f"{d} {metric}" for d in datasets for metric in ("DSC", "NSD")], "mean DSC", "mean NSD",
            *[f"rank {d}" for d in datasets], "average rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [["method", *[f"{d}_{metric}" for d in datasets for metric in ("dsc", "nsd")], "mean_dsc", "mean_nsd",
             *[f"{d}_rank" for d in datasets], "average_rank"]]
    for m in order:
        cells = [m, *[_pct(v) for d in datasets for v in (dsc[d][m], nsd[d][m])], _pct(mean_dsc[m]),
                 _pct(mean_nsd[m]), *[f"{ranks[d][m]:g}" for d in datasets], f"{mean_rank[m]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        rows.append([m, *[repr(v) for d in datasets for v in (dsc[d][m], nsd[d][m])], repr(mean_dsc[m]),
                     repr(mean_nsd[m]), *[repr(ranks[d][m]) for d in datasets], repr(mean_rank[m])])
    numbers = {"dsc": dsc, "nsd": nsd, "ranks": ranks, "average_rank": mean_rank, "mean_dsc": mean_dsc}
    return "\n".join(lines) + "\n", _csv_text(rows), numbers


def _rank_stability(study: Study, results: dict[str, _DatasetResults], observed: dict) -> tuple[str, str, dict]:
    """Bootstrapped ranks per dataset and of the average rank: CSV of rank frequencies, Markdown summary, and
    the frequency arrays for the heat map."""
    methods = study.method_names
    per_dataset = {d: bootstrap_ranks(r.dsc, study.bootstrap_samples, study.bootstrap_seed, d)
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
    return "\n".join(lines) + "\n", _csv_text(rows), frequencies


def _per_case_rows(study: Study, results_by_size: dict) -> str:
    rows = [["dataset", "training_cases", "seed", "method", "case", "class", "dsc", "nsd"]]
    for (dataset, size), results in results_by_size.items():
        for m, method in enumerate(study.method_names):
            for s, seed in enumerate(study.seeds):
                n_train = _training_cases(study, Pair(dataset, method, seed, size))
                for c, case in enumerate(results.cases[s]):
                    for k, name in enumerate(results.classes):
                        rows.append([dataset, n_train, seed, method, case, name,
                                     repr(float(results.dsc[m, s, c, k])), repr(float(results.nsd[m, s, c, k]))])
    return _csv_text(rows)


def _case_means(values: np.ndarray) -> np.ndarray:
    """Mean over the defined classes of each case: ``(..., classes) -> (...)`` (NaN when none is defined)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(defined, values, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)


def _write_results(study: Study, written: dict, name: str, text: str) -> None:
    path = Path(study.output_dir, "results", name)
    atomic_write_text(path, text)
    written[name] = path


def compare_methods(study: Study | str | os.PathLike, method_a: str, method_b: str) -> str:
    """Paired Wilcoxon signed-rank tests of two methods' per-case mean DSC, per dataset and pooled.

    A pair of observations is one test case of one seed on the full training set, scored by the mean DSC over
    the classes defined in that case; cases without a defined class in either method are dropped.

    Returns:
        The Markdown report (also written to ``results/compare_<a>_vs_<b>.md`` with a CSV beside it).
    """
    study = _as_study(study)
    for name in (method_a, method_b):
        if name not in study.method_names:
            raise ValueError(f"method '{name}' is not in the study {study.path}: choose from {study.method_names}")
    if method_a == method_b:
        raise ValueError(f"compare two different methods, got '{method_a}' twice")
    a, b = study.method_names.index(method_a), study.method_names.index(method_b)
    diffs = {}
    for dataset in study.dataset_names:
        results = _collect(study, dataset, None)
        if results is None:
            raise ValueError(f"dataset '{dataset}' is not finished for every method and seed: run the study first")
        x, y = _case_means(results.dsc[a]).ravel(), _case_means(results.dsc[b]).ravel()
        keep = ~(np.isnan(x) | np.isnan(y))
        diffs[dataset] = (x[keep], y[keep])
    diffs["all datasets"] = tuple(np.concatenate([v[i] for v in diffs.values()]) for i in (0, 1))
    lines = [f"Paired Wilcoxon signed-rank test, {method_a} vs {method_b}: per-case mean DSC (two-sided; exact "
             "distribution up to 50 non-zero differences, normal approximation above).", "",
             f"| dataset | cases | mean DSC {method_a} | mean DSC {method_b} | mean difference | W+ | W- | p | test |",
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
        lines.append(f"| {dataset} | {x.size} | {_pct(mean_x)} | {_pct(mean_y)} | {_pct(mean_x - mean_y)} | "
                     + " | ".join(stats) + " |")
        rows.append([dataset, x.size, repr(mean_x), repr(mean_y), repr(mean_x - mean_y), *raw])
    text = "\n".join(lines) + "\n"
    stem = f"compare_{method_a}_vs_{method_b}"
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.md"), text)
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.csv"), _csv_text(rows))
    return text


def report_study(study: Study | str | os.PathLike) -> dict[str, Path]:
    """Write the study's reports from the finished pairs (see the module docstring for the files).

    The table and the rank stability need every method and seed on a dataset; datasets that are not complete
    are left out with a warning. The low-data plot uses every complete (dataset, size).

    Returns:
        ``{file name: path}`` of the files written.
    """
    study = _as_study(study)
    written: dict[str, Path] = {}
    results_by_size = {}
    for size in (None, *study.low_data):
        for dataset in study.dataset_names:
            results = _collect(study, dataset, size)
            if results is None:
                logger.warning("dataset '%s' (%s) is not complete yet: left out of the reports", dataset,
                               "full" if size is None else f"{size} cases")
            else:
                results_by_size[dataset, size] = results
    full = {d: r for (d, size), r in results_by_size.items() if size is None}
    if not full:
        logger.warning("no dataset is complete: nothing to report yet")
        return written
    table_md, table_csv, numbers = _results_table(study, full)
    _write_results(study, written, "table.md", table_md)
    _write_results(study, written, "table.csv", table_csv)
    _write_results(study, written, "per_case.csv", _per_case_rows(study, results_by_size))
    stability_md, stability_csv, frequencies = _rank_stability(study, full, numbers["average_rank"])
    _write_results(study, written, "rank_stability.md", stability_md)
    _write_results(study, written, "rank_stability.csv", stability_csv)
    path = Path(study.output_dir, "results", "rank_stability.png")
    rank_heatmap(frequencies, study.method_names, path,
                 title=f"Rank stability ({study.bootstrap_samples} bootstrap samples of the test cases)")
    written["rank_stability.png"] = path
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    rows = [["dataset", "method", "training_cases", "mean_dsc", "mean_nsd"]]
    for (dataset, size), results in sorted(results_by_size.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        scores_dsc, scores_nsd = dataset_scores(results.dsc), dataset_scores(results.nsd)
        for m, method in enumerate(study.method_names):
            n_train = _training_cases(study, Pair(dataset, method, study.seeds[0], size))
            curves.setdefault(dataset, {}).setdefault(method, []).append((n_train, 100 * float(scores_dsc[m])))
            rows.append([dataset, method, n_train, repr(float(scores_dsc[m])), repr(float(scores_nsd[m]))])
    _write_results(study, written, "low_data.csv", _csv_text(rows))
    path = Path(study.output_dir, "results", "low_data.png")
    line_plot(curves, path, "training cases", "mean DSC (%)", title="DSC vs number of training cases")
    written["low_data.png"] = path
    if study.compare is not None and len(full) == len(study.datasets):
        compare_methods(study, *study.compare)
        stem = f"compare_{study.compare[0]}_vs_{study.compare[1]}"
        written[f"{stem}.md"] = Path(study.output_dir, "results", f"{stem}.md")
    logger.info("Study results (table, CSVs, plots) in %s", Path(study.output_dir, "results"))
    return written
