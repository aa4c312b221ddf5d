"""``python -m custom_nets evaluate``: external predictions (e.g. nnU-Net's) scored with the project's metrics."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from custom_nets.cli import evaluate


def _save(array, path):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


def test_scores_only_the_split_test_cases_with_hand_computed_dice(tmp_path):
    labels, preds = tmp_path / "labelsTr", tmp_path / "pred"
    labels.mkdir(), preds.mkdir()
    reference = np.zeros((8, 8, 8))
    reference[2:6, 2:6, 2:6] = 1  # 64 voxels
    prediction = np.zeros((8, 8, 8))
    prediction[2:6, 2:6, 2:4] = 1  # 32 voxels, all inside: DSC = 2 * 32 / (64 + 32) = 2/3
    for case in ("case_000", "case_001"):
        _save(reference, labels / f"{case}.nii.gz")
    _save(prediction, preds / "case_001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1}}))
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["case_000"], "test": ["case_001"]}))
    summary = evaluate(str(preds), str(labels), str(tmp_path / "dataset.json"), cases=str(tmp_path / "splits.json"))
    assert summary["mean_dsc"] == pytest.approx(2 / 3)
    assert (preds / "metrics_per_case.csv").read_text().count("case_") == 1


def test_no_reference_is_a_clear_error(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "a"}}))
    with pytest.raises(FileNotFoundError, match="no reference label maps"):
        evaluate(str(tmp_path), str(tmp_path), str(tmp_path / "dataset.json"))
