"""Per-case results of a study's finished pairs, stacked into arrays for ranking, tables and tests.

:func:`collect_results` reads every method's and seed's ``evaluation/metrics_per_case.csv`` of one dataset and
training-set size, checks that they scored the same test cases and classes, and returns one array of shape
``(methods, seeds, cases, classes)`` per metric of the registry (``custom_nets.evaluation.metrics.METRICS``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_nets.evaluation.metrics import METRICS
from custom_nets.study.pairs import pair_done
from custom_nets.study.schema import Pair, Study

__all__ = ["DatasetResults", "case_means", "collect_results", "read_per_case"]


@dataclass(frozen=True)
class DatasetResults:
    """Per-case values of one dataset and training-set size.

    Attributes:
        cases: the test case ids, per seed.
        classes: the scored class names.
        values: ``{metric name: (methods, seeds, cases, classes) array}``, NaN for a class undefined in a case.
    """

    cases: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...]
    values: dict[str, np.ndarray]


def read_per_case(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{case: {class: {metric: value}}}`` of every registered metric, from an evaluation's
    ``metrics_per_case.csv``.

    Raises:
        ValueError: the file has no column for a registered metric (evaluated before that metric was added).
    """
    names = METRICS.names
    cases: dict[str, dict[str, dict[str, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        absent = [n for n in names if n not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(
                f"{path} has no column {absent} of the registered metrics {names}: it was evaluated before they were "
                f"added; delete its folder '{path.parent}' and run the study again to re-evaluate the pair"
            )
        for row in reader:
            cases.setdefault(row["case"], {})[row["class"]] = {n: float(row[n]) for n in names}
    return cases


def collect_results(study: Study, dataset: str, size: int | None) -> DatasetResults | None:
    """Stack the per-case results of every method and seed; None when some pair is not done.

    Args:
        study: the study.
        dataset: the dataset's name.
        size: the low-data training-set size, None for the full training set.

    Raises:
        ValueError: methods were evaluated on different test cases or classes, or seeds on different numbers of
            test cases.
    """
    tables = {}
    for method in study.method_names:
        for seed in study.seeds:
            run_dir = Pair(dataset, method, seed, size).run_dir(study)
            if not pair_done(run_dir):
                return None
            tables[method, seed] = read_per_case(run_dir / "evaluation" / "metrics_per_case.csv")
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
    values = {name: np.full(shape, np.nan) for name in METRICS.names}
    for m, method in enumerate(study.method_names):
        for s, seed in enumerate(study.seeds):
            for c, case in enumerate(cases_per_seed[s]):
                for k, name in enumerate(classes):
                    for metric, value in tables[method, seed][case][name].items():
                        values[metric][m, s, c, k] = value
    return DatasetResults(tuple(cases_per_seed), classes, values)


def case_means(values: np.ndarray) -> np.ndarray:
    """Mean over the defined classes of each case: ``(..., classes) -> (...)`` (NaN when none is defined)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(defined, values, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)
