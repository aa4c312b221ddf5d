"""Aggregate per-case metric values into per-class and overall numbers, and write the report files.

Every metric of the registry (``custom_nets.evaluation.metrics.METRICS``: DSC and NSD) is aggregated the same
way, following nnU-Net's ``summary.json``: a class's statistics are taken over the cases where the class is
defined (NaN values, i.e. class absent from both prediction and reference, are left out and counted), and the
overall score ``mean_<metric>`` (``mean_dsc``, ``mean_nsd``) is the mean over classes of the per-class
``aggregation`` of the metric ("mean" for DSC and NSD; classes that are NaN in every case are left out of it).
Standard deviations are population standard deviations (``ddof=0``) over the cases.

Files written to the output folder (atomically: temporary file, then ``os.replace``), one column (group) per
metric in registry order:

* ``metrics_per_case.csv``: one row per case and class, columns ``case, class, dsc, nsd``
  (``nan`` for an empty class);
* ``summary.json``: the dict returned by :func:`summarise` (NaN written as ``null``);
* ``summary.csv``: one row per class plus a last ``mean`` row with the overall scores; columns ``class,
  tolerance_mm`` and ``<metric>_mean, _median, _std, _n, _n_nan`` per metric.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.metrics import METRICS

__all__ = ["STATISTICS", "csv_text", "empty_class_rule", "summarise", "write_reports"]

#: Per-class statistics of every metric, in ``summary.json`` and as ``<metric>_<statistic>`` in ``summary.csv``.
STATISTICS = ("mean", "median", "std", "n", "n_nan")


def empty_class_rule() -> str:
    """How empty classes were scored, recorded in ``summary.json`` for a reader of the numbers.

    With DSC and NSD: "class absent from prediction and reference: DSC = NSD = NaN, left out of means and counted
    in n_nan; class in only one of them: 0; missing prediction (allow_missing=True): 0 for every class".
    """
    metrics = list(METRICS)
    worst = {m.worst for m in metrics}
    if len(worst) == 1:
        worst_text = f"{worst.pop():g}"
    else:
        worst_text = ", ".join(f"{m.display_name} {m.worst:g}" for m in metrics)
    return (
        f"class absent from prediction and reference: {' = '.join(m.display_name for m in metrics)} = NaN, left "
        f"out of means and counted in n_nan; class in only one of them: {worst_text}; missing prediction "
        f"(allow_missing=True): {worst_text} for every class"
    )


def _stats(values: Sequence[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    valid = array[~np.isnan(array)]
    if valid.size == 0:
        return {"mean": math.nan, "median": math.nan, "std": math.nan, "n": 0, "n_nan": int(array.size)}
    return {
        "mean": float(valid.mean()),
        "median": float(np.median(valid)),
        "std": float(valid.std(ddof=0)),
        "n": int(valid.size),
        "n_nan": int(array.size - valid.size),
    }


def _mean_of_means(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(
    results: list[dict],
    class_names: Sequence[str],
    tolerances_mm: dict[str, float],
    missing_cases: Sequence[str] = (),
) -> dict:
    """Per-class statistics and overall scores of per-case results, for every registered metric.

    Args:
        results: one dict per case, ``{"case": id, "dsc": {class: value}, "nsd": {class: value}}`` (one entry per
            registered metric; missing cases included, with their worst scores).
        class_names: scored classes, in report order.
        tolerances_mm: NSD tolerance (mm) per class name.
        missing_cases: ids of cases that had no prediction (scored worst).

    Returns:
        ``{"n_cases", "n_missing", "missing_cases", "classes", "tolerance_mm", "per_class",
        "mean_dsc", "mean_nsd", "n_nan", "empty_class_rule"}`` (a ``mean_<metric>`` per metric);
        ``per_class[name][metric]`` holds ``mean, median, std, n, n_nan``; ``n_nan`` totals NaN values per metric.

    Raises:
        ValueError: a case lacks the values of a registered metric.
    """
    metrics = list(METRICS)
    for case in results:
        absent = [m.name for m in metrics if m.name not in case]
        if absent:
            raise ValueError(
                f"case {case.get('case')!r} has no values of the registered metrics {absent}: score every case with "
                "custom_nets.evaluation.evaluate_case (it computes every metric of METRICS)"
            )
    per_class = {
        name: {m.name: _stats([case[m.name][name] for case in results]) for m in metrics}
        for name in class_names
    }
    summary = {
        "n_cases": len(results),
        "n_missing": len(missing_cases),
        "missing_cases": list(missing_cases),
        "classes": list(class_names),
        "tolerance_mm": {name: float(tolerances_mm[name]) for name in class_names},
        "per_class": per_class,
    }
    for m in metrics:
        summary[f"mean_{m.name}"] = _mean_of_means([per_class[n][m.name][m.aggregation] for n in class_names])
    summary["n_nan"] = {m.name: sum(per_class[n][m.name]["n_nan"] for n in class_names) for m in metrics}
    summary["empty_class_rule"] = empty_class_rule()
    return summary


def _nan_to_none(value):
    """Replace NaN floats by None recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def csv_text(rows: list[list]) -> str:
    """Rows as CSV text with ``\n`` line ends (the results files of the evaluation and of the studies)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value: float) -> str:
    """Full-precision text for a float (``repr``), ``nan`` for NaN."""
    return "nan" if math.isnan(value) else repr(float(value))


def write_reports(results: list[dict], summary: dict, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``metrics_per_case.csv``, ``summary.json`` and ``summary.csv`` into ``output_dir``.

    Args:
        results: per-case dicts as given to :func:`summarise`.
        summary: the dict returned by :func:`summarise`.
        output_dir: folder for the three files (created if needed).

    Returns:
        The paths written, keyed ``per_case``, ``summary_json``, ``summary_csv``.
    """
    output_dir = Path(output_dir)
    names = summary["classes"]
    metrics = [m.name for m in METRICS]
    per_case = [["case", "class", *metrics]]
    for case in results:
        for name in names:
            per_case.append([case["case"], name, *[_number(case[m][name]) for m in metrics]])
    rows = [["class", "tolerance_mm", *[f"{m}_{statistic}" for m in metrics for statistic in STATISTICS]]]
    for name in names:
        row = [name, _number(summary["tolerance_mm"][name])]
        for m in metrics:
            stats = summary["per_class"][name][m]
            row += [_number(stats["mean"]), _number(stats["median"]), _number(stats["std"]), stats["n"], stats["n_nan"]]
        rows.append(row)
    mean_row = ["mean", ""]
    for m in metrics:
        mean_row += [_number(summary[f"mean_{m}"]), "", "", "", summary["n_nan"][m]]
    rows.append(mean_row)
    paths = {
        "per_case": output_dir / "metrics_per_case.csv",
        "summary_json": output_dir / "summary.json",
        "summary_csv": output_dir / "summary.csv",
    }
    atomic_write_text(paths["per_case"], csv_text(per_case))
    atomic_write_text(paths["summary_json"], json.dumps(_nan_to_none(summary), indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["summary_csv"], csv_text(rows))
    return paths
