"""Aggregate per-case DSC / NSD into per-class and overall numbers, and write the report files.

Aggregation follows nnU-Net's ``summary.json``: a class's mean is taken over the cases where the
class is defined (NaN values, i.e. class absent from both prediction and reference, are left out
and counted), and the overall mean DSC (NSD) is the mean over classes of the per-class means
(classes that are NaN in every case are left out of it). Standard deviations are population
standard deviations (``ddof=0``) over the cases.

Files written to the output folder (atomically: temporary file, then ``os.replace``):

* ``metrics_per_case.csv``: one row per case and class, columns ``case, class, dsc, nsd``
  (``nan`` for an empty class);
* ``summary.json``: the dict returned by :func:`summarise` (NaN written as ``null``);
* ``summary.csv``: one row per class plus a last ``mean`` row with the overall means.
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

__all__ = ["EMPTY_CLASS_RULE", "summarise", "write_reports"]

METRICS = ("dsc", "nsd")

#: Recorded in ``summary.json`` so that a reader of the numbers knows how empty classes were scored.
EMPTY_CLASS_RULE = (
    "class absent from prediction and reference: DSC = NSD = NaN, left out of means and counted in n_nan; "
    "class in only one of them: 0; missing prediction (allow_missing=True): 0 for every class"
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
    """Per-class statistics and overall means of per-case results.

    Args:
        results: one dict per case, ``{"case": id, "dsc": {class: value}, "nsd": {class: value}}``
            (missing cases included, with their 0 scores).
        class_names: scored classes, in report order.
        tolerances_mm: NSD tolerance (mm) per class name.
        missing_cases: ids of cases that had no prediction (scored 0).

    Returns:
        ``{"n_cases", "n_missing", "missing_cases", "classes", "tolerance_mm", "per_class",
        "mean_dsc", "mean_nsd", "n_nan", "empty_class_rule"}``; ``per_class[name][metric]`` holds
        ``mean, median, std, n, n_nan``; ``n_nan`` totals NaN values per metric.
    """
    per_class = {
        name: {metric: _stats([case[metric][name] for case in results]) for metric in METRICS}
        for name in class_names
    }
    return {
        "n_cases": len(results),
        "n_missing": len(missing_cases),
        "missing_cases": list(missing_cases),
        "classes": list(class_names),
        "tolerance_mm": {name: float(tolerances_mm[name]) for name in class_names},
        "per_class": per_class,
        "mean_dsc": _mean_of_means([per_class[n]["dsc"]["mean"] for n in class_names]),
        "mean_nsd": _mean_of_means([per_class[n]["nsd"]["mean"] for n in class_names]),
        "n_nan": {metric: sum(per_class[n][metric]["n_nan"] for n in class_names) for metric in METRICS},
        "empty_class_rule": EMPTY_CLASS_RULE,
    }


def _nan_to_none(value):
    """Replace NaN floats by None recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _csv_text(rows: list[list]) -> str:
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
    per_case = [["case", "class", "dsc", "nsd"]]
    for case in results:
        for name in names:
            per_case.append([case["case"], name, _number(case["dsc"][name]), _number(case["nsd"][name])])
    rows = [[
        "class", "tolerance_mm", "dsc_mean", "dsc_median", "dsc_std", "dsc_n", "dsc_n_nan",
        "nsd_mean", "nsd_median", "nsd_std", "nsd_n", "nsd_n_nan",
    ]]
    for name in names:
        row = [name, _number(summary["tolerance_mm"][name])]
        for metric in METRICS:
            stats = summary["per_class"][name][metric]
            row += [_number(stats["mean"]), _number(stats["median"]), _number(stats["std"]), stats["n"], stats["n_nan"]]
        rows.append(row)
    rows.append(["mean", "", _number(summary["mean_dsc"]), "", "", "", summary["n_nan"]["dsc"],
                 _number(summary["mean_nsd"]), "", "", "", summary["n_nan"]["nsd"]])
    paths = {
        "per_case": output_dir / "metrics_per_case.csv",
        "summary_json": output_dir / "summary.json",
        "summary_csv": output_dir / "summary.csv",
    }
    atomic_write_text(paths["per_case"], _csv_text(per_case))
    atomic_write_text(paths["summary_json"], json.dumps(_nan_to_none(summary), indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["summary_csv"], _csv_text(rows))
    return paths
