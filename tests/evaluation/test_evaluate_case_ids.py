"""Predictions and labels are matched by the same case ids on both sides: labels in several folders (labelsTr/ and
labelsTs/), per-case folders that all name their label seg.nii.gz, and the fine-tuning bundle's own predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom_nets.cli import evaluate
from custom_nets.evaluation import SavePredictiond, evaluate_folder, evaluation_cases

LABELS = {"background": 0, "tumour": 1}


def _label(path: Path, depth: int) -> Path:
    """An 8^3 label map with a 4 x 4 x ``depth`` tumour (64 voxels at depth 4)."""
    volume = np.zeros((8, 8, 8), np.uint8)
    volume[2:6, 2:6, 2 : 2 + depth] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    return path


def _dsc_by_case(folder: Path) -> dict[str, float]:
    with open(folder / "metrics_per_case.csv", newline="") as handle:
        return {row["case"]: float(row["dsc"]) for row in csv.DictReader(handle)}


def _dataset(root: Path, labels: dict[str, str]) -> Path:
    """A dataset.json whose cases have the given label paths (relative to ``root``) and a one-file image each (kept
    outside ``root``, so that ``root`` holds only label maps)."""
    entries = []
    for name, label in labels.items():
        image = root.parent / "images" / f"{name}.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(image))
        _label(root / label, depth=4)
        entries.append({"image": str(image), "label": label})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "tumour"}, "training": entries}))
    return root / "dataset.json"


def test_labels_in_labelsTr_and_labelsTs_after_the_bundles_own_predictions(tmp_path):
    """The issue's case: the bundle named the predictions labelsTr__left / labelsTs__right, the evaluation looked for
    'left' / 'right'. Now both sides use the dataset's case ids."""
    source = _dataset(tmp_path / "task", {"left": "labelsTr/left.nii.gz", "right": "labelsTs/right.nii.gz"})
    cases = evaluation_cases(source)
    assert [c["case"] for c in cases] == ["labelsTr__left", "labelsTs__right"]
    save = SavePredictiond(output_dir=tmp_path / "pred")
    for case, depth in zip(cases, (4, 2)):  # left perfect; right: half the tumour, DSC = 2 * 32 / (64 + 32) = 2/3
        prediction = np.asarray(nib.load(_label(tmp_path / "scratch" / f"{depth}.nii.gz", depth)).dataobj)
        save({"case": case["case"], "pred": prediction[None].astype(np.float32)})
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["labelsTr__left.nii.gz", "labelsTs__right.nii.gz"]

    evaluate_folder(tmp_path / "pred", cases, LABELS, output_dir=tmp_path / "bundle_eval")
    assert _dsc_by_case(tmp_path / "bundle_eval") == pytest.approx({"labelsTr__left": 1.0, "labelsTs__right": 2 / 3})
    # the same predictions against the label folders themselves (python -m custom_nets evaluate)
    evaluate(str(tmp_path / "pred"), str(tmp_path / "task"), str(source), output_dir=str(tmp_path / "cli_eval"))
    assert _dsc_by_case(tmp_path / "cli_eval") == pytest.approx({"labelsTr__left": 1.0, "labelsTs__right": 2 / 3})


@pytest.mark.parametrize("layout", ["flat", "per_case"])
def test_per_case_folders_that_all_name_their_label_seg(tmp_path, layout):
    labels = tmp_path / "labels"
    _label(labels / "case1" / "seg.nii.gz", depth=4)
    _label(labels / "case2" / "seg.nii.gz", depth=4)
    pred = tmp_path / "pred"
    names = {"flat": ("case1__seg.nii.gz", "case2__seg.nii.gz"), "per_case": ("case1/seg.nii.gz", "case2/seg.nii.gz")}
    _label(pred / names[layout][0], depth=4)  # case1 perfect
    _label(pred / names[layout][1], depth=2)  # case2: DSC 2/3
    evaluate_folder(pred, labels, LABELS, output_dir=tmp_path / "eval")
    assert _dsc_by_case(tmp_path / "eval") == pytest.approx({"case1__seg": 1.0, "case2__seg": 2 / 3})
    # the split of a dataset whose labels live in per-case folders: only its test case is scored
    summary = evaluate_folder(pred, labels, LABELS, output_dir=tmp_path / "eval_test", cases=["case2__seg"])
    assert summary["n_cases"] == 1 and summary["mean_dsc"] == pytest.approx(2 / 3)


def test_a_missing_prediction_names_the_expected_ids(tmp_path):
    labels = tmp_path / "labels"
    _label(labels / "labelsTr" / "a.nii.gz", depth=4)
    _label(labels / "labelsTs" / "b.nii.gz", depth=4)
    _label(tmp_path / "pred" / "b.nii.gz", depth=4)  # named without its folder: not case labelsTs__b
    with pytest.raises(FileNotFoundError) as missing:
        evaluate_folder(tmp_path / "pred", labels, LABELS)
    assert str(missing.value) == (
        f"2 of 2 cases have no prediction in '{tmp_path / 'pred'}': labelsTr__a, labelsTs__b. Expected files named "
        "<case id>.nii.gz (predictions found for: b); run inference for them, fix prediction_postfix, or pass "
        "allow_missing=True to score them as 0"
    )


def test_save_prediction_replaces_a_file_only_when_asked(tmp_path, caplog):
    prediction = np.zeros((1, 4, 4, 4), np.float32)
    SavePredictiond(output_dir=tmp_path)({"case": "a", "pred": prediction})
    with pytest.raises(FileExistsError) as refused:
        SavePredictiond(output_dir=tmp_path, overwrite="false")({"case": "a", "pred": prediction + 1})  # CLI text
    assert str(refused.value) == (
        f"prediction '{tmp_path / 'a.nii.gz'}' already exists and is not replaced: pass another --output_dir, or "
        "--overwrite true to replace it."
    )
    assert np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj).max() == 0
    with caplog.at_level("WARNING"):
        SavePredictiond(output_dir=tmp_path, overwrite=True)({"case": "a", "pred": prediction + 1})  # evaluate.yaml
    assert np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj).max() == 1
    assert f"Replacing prediction {tmp_path / 'a.nii.gz'}" in caplog.text


def test_a_cross_dataset_evaluation_gets_its_own_folder(tmp_path):
    from custom_nets.evaluation.predictions import evaluation_root

    (tmp_path / "task").mkdir()
    (tmp_path / "other_task").mkdir()
    run = tmp_path / "run"
    # the training set, given as its folder or as its dataset.json: the run's own predictions/ and evaluation/
    assert evaluation_root(run, tmp_path / "task" / "dataset.json", tmp_path / "task") == str(run)
    assert evaluation_root(run, tmp_path / "other_task", tmp_path / "task") == str(run / "cross_dataset" / "other_task")
    assert evaluation_root(run, tmp_path / "other_task" / "dataset.json", tmp_path / "task") == str(
        run / "cross_dataset" / "other_task"
    )


def test_a_dataset_that_does_not_fit_the_model_is_named(tmp_path):
    source = _dataset(tmp_path / "task", {"a": "labelsTr/a.nii.gz"})
    fits = {"labels": {0: "background", 1: "tumour"}, "num_channels": 1, "modalities": ["t1"]}
    assert [c["case"] for c in evaluation_cases(source, model_info=fits)] == ["a"]
    with pytest.raises(ValueError) as labels:
        evaluation_cases(source, model_info={**fits, "labels": {0: "background", 1: "liver"}})
    assert str(labels.value) == (
        f"dataset '{source}' declares labels {{0: 'background', 1: 'tumour'}}, but the model predicts "
        "{0: 'background', 1: 'liver'} (model_info.json): evaluate on a dataset with the same label table."
    )
    with pytest.raises(ValueError) as channels:
        evaluation_cases(source, model_info={**fits, "num_channels": 2, "modalities": ["t1", "flair"]})
    assert str(channels.value) == (
        f"case 'a' of dataset '{source}' has 1 image channel(s), but the model takes 2 (t1, flair): evaluate on a "
        "dataset with the same modalities, in the same order."
    )
