"""The metric registry: a metric registered in one place shows up in every results file and table.

The toy metric counts false-positive voxels (lower is better, in voxels, aggregated by its median), so the
per-case CSV, ``summary.json``/``summary.csv``, the demo table and the study's tables can be checked by hand.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from custom_nets.demo import results_table
from custom_nets.evaluation import METRICS, Metric, evaluate_folder
from custom_nets.evaluation.summary import summarise, write_reports
from custom_nets.study import run_study


def false_positive_voxels(pred_mask, reference_mask) -> float:
    """Voxels predicted but not in the reference; NaN when both masks are empty, 100 when only one is."""
    pred, reference = pred_mask.bool(), reference_mask.bool()
    if not pred.any() and not reference.any():
        return math.nan
    if not pred.any() or not reference.any():
        return 100.0
    return float((pred & ~reference).sum())


TOY = Metric("fp_voxels", "FP", false_positive_voxels, higher_is_better=False, aggregation="median", unit="voxels",
             worst=100.0)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _save(path, array):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


def test_the_built_in_metrics_are_dsc_then_nsd():
    assert METRICS.names == ["dsc", "nsd"] and METRICS.primary.name == "dsc"
    assert [m.display_name for m in METRICS] == ["DSC", "NSD"]
    assert METRICS["nsd"].arguments == ("spacing_mm", "tolerance_mm") and METRICS["dsc"].arguments == ()
    assert all(m.higher_is_better and m.aggregation == "mean" and m.unit == "%" and m.worst == 0.0 for m in METRICS)


def test_a_registered_metric_is_in_the_per_case_csv_the_summary_and_the_demo_table(tmp_path):
    label = np.zeros((8, 8, 8))
    label[2:5, 2:5, 2:5] = 1  # 27 voxels
    (tmp_path / "labels").mkdir()
    (tmp_path / "pred").mkdir()
    for case in ("a", "b", "c"):
        _save(tmp_path / "labels" / f"{case}.nii.gz", label)
    _save(tmp_path / "pred" / "a.nii.gz", np.roll(label, 1, axis=0))  # one 3x3 slab too far: 9 false positives
    _save(tmp_path / "pred" / "b.nii.gz", label)  # exact; c has no prediction: scored worst (100)
    with METRICS.registered(TOY):
        summary = evaluate_folder(tmp_path / "pred", tmp_path / "labels", {1: "organ"}, 2.0, tmp_path / "out",
                                  allow_missing=True)
    assert METRICS.names == ["dsc", "nsd"]  # removed again after the block

    rows = _read_csv(tmp_path / "out" / "metrics_per_case.csv")
    assert list(rows[0]) == ["case", "class", "dsc", "nsd", "fp_voxels"]
    assert [(r["case"], r["fp_voxels"]) for r in rows] == [("a", "9.0"), ("b", "0.0"), ("c", "100.0")]
    assert [float(r["dsc"]) for r in rows] == pytest.approx([2 * 18 / 54, 1.0, 0.0])  # 18 of 27 voxels overlap

    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["per_class"]["organ"]["fp_voxels"] == {"mean": 109 / 3, "median": 9.0, "std": pytest.approx(
        np.std([9.0, 0.0, 100.0])), "n": 3, "n_nan": 0}
    assert written["mean_fp_voxels"] == 9.0  # the median of the class (aggregation), mean over the one class
    assert written["mean_dsc"] == pytest.approx((2 / 3 + 1 + 0) / 3) and written["n_nan"]["fp_voxels"] == 0
    assert written["empty_class_rule"] == (
        "class absent from prediction and reference: DSC = NSD = FP = NaN, left out of means and counted in n_nan; "
        "class in only one of them: DSC 0, NSD 0, FP 100; missing prediction (allow_missing=True): DSC 0, NSD 0, "
        "FP 100 for every class")
    summary_csv = _read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary_csv[0])[-5:] == ["fp_voxels_mean", "fp_voxels_median", "fp_voxels_std", "fp_voxels_n",
                                         "fp_voxels_n_nan"]
    assert summary_csv[-1]["class"] == "mean" and summary_csv[-1]["fp_voxels_mean"] == "9.0"

    with METRICS.registered(TOY):
        table = results_table([("s3d", written)], {"0": "background", "1": "organ"})
    assert table.splitlines() == [
        "| method | mean DSC | mean NSD | mean FP | DSC organ |",
        "|---|---|---|---|---|",
        f"| s3d | {100 * summary['mean_dsc']:.2f} | {100 * summary['mean_nsd']:.2f} | 9.00 | 55.56 |",
    ]


# per-case (DSC, false-positive voxels) of class "lesion" on test cases c0, c1, c2
SCORES = {"s3d": [(0.9, 4.0), (0.7, 2.0), (0.8, 12.0)], "scratch": [(0.5, 10.0), (0.4, 6.0), (0.6, 20.0)]}


def _fake_bundle(config_files, **overrides):
    """Writes what the fine-tuning bundle writes, with the toy metric's values."""
    out = overrides["output_dir"]
    if not config_files[-1].endswith("evaluate.yaml"):
        split = Path(overrides["split_file"])
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text(json.dumps({"train": ["t0", "t1", "t2"], "test": ["c0", "c1", "c2"]}))
        return
    method = Path(out).parts[-3]
    results = [{"case": f"c{i}", "dsc": {"lesion": dsc}, "nsd": {"lesion": dsc / 2}, "fp_voxels": {"lesion": fp}}
               for i, (dsc, fp) in enumerate(SCORES[method])]
    write_reports(results, summarise(results, ["lesion"], {"lesion": 2.0}), f"{out}/evaluation")


def test_a_registered_metric_is_in_the_study_tables(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "s3d.pt").write_text("weights")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"datasets": {"brain": "data"}, "methods": {"s3d": "s3d.pt", "scratch": "scratch"},
                                     "output_dir": "out", "bootstrap_samples": 10}))
    with METRICS.registered(TOY):
        written = run_study(study, runner=_fake_bundle)
    table = {r["method"]: r for r in _read_csv(written["table.csv"])}
    assert list(table["s3d"]) == ["method", "brain_dsc", "brain_nsd", "brain_fp_voxels", "mean_dsc", "mean_nsd",
                                  "mean_fp_voxels", "brain_rank", "average_rank"]
    # the dataset score of the toy metric is its median over the cases (the means would be 6 and 12)
    assert float(table["s3d"]["brain_fp_voxels"]) == 4.0 and float(table["scratch"]["mean_fp_voxels"]) == 10.0
    assert float(table["s3d"]["brain_rank"]) == 1.0  # ranks follow the primary metric, DSC
    lines = written["table.md"].read_text().splitlines()
    assert lines[0] == ("| method | brain DSC | brain NSD | brain FP | mean DSC | mean NSD | mean FP | rank brain "
                        "| average rank |")
    assert lines[2] == "| s3d | 80.00 | 40.00 | 4.00 | 80.00 | 40.00 | 4.00 | 1 | 1.00 |"
    per_case = _read_csv(written["per_case.csv"])
    assert [(r["method"], r["case"], r["fp_voxels"]) for r in per_case] == [
        (m, f"c{i}", repr(fp)) for m in ("s3d", "scratch") for i, (_, fp) in enumerate(SCORES[m])]
    low_data = _read_csv(written["low_data.csv"])
    assert [(r["method"], r["training_cases"], r["mean_fp_voxels"]) for r in low_data] == [
        ("s3d", "3", "4.0"), ("scratch", "3", "10.0")]


def test_a_study_evaluated_before_a_metric_was_added_says_how_to_redo_it(tmp_path):
    (tmp_path / "data").mkdir()
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"datasets": {"brain": "data"}, "methods": {"scratch": "scratch"},
                                     "output_dir": "out", "bootstrap_samples": 10}))
    run_study(study, runner=_fake_bundle, report=False)  # evaluated with DSC and NSD only
    with METRICS.registered(TOY), pytest.raises(ValueError, match=r"has no column \['fp_voxels'\] .*delete its folder"):
        run_study(study, runner=_fake_bundle)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "dsc"}, "metric 'dsc' is registered already"),
        ({"name": "HD 95"}, "must be a lower-case word"),
        ({"aggregation": "max"}, r"aggregation 'max' must be one of \('mean', 'median'\)"),
        ({"arguments": ("spacing",)}, "arguments .* must be a tuple of"),
    ],
)
def test_bad_registrations_are_refused_with_the_fix(changes, message):
    settings = {"name": "toy", "display_name": "Toy", "function": false_positive_voxels, **changes}
    with pytest.raises(ValueError, match=message):
        METRICS.register(Metric(**settings))
    assert METRICS.names == ["dsc", "nsd"]
