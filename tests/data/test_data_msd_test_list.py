"""MSD ``test`` lists: labeled held-out cases become the test split; unlabeled ones are left to inference."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser

from custom_nets.data.segmentation import load_segmentation_datalist, make_splits, prepare_segmentation_dataset
from custom_nets.data.splits import TEST_LIST_SCHEME, select_split

FINETUNE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "train.yaml"
LABELS = {"0": "background", "1": "lesion"}


def _case(write_nifti, folder, images_dir, labels_dir, name, seed):
    """A 10x12x14 image with a zero border and a labeled box; returns (image, label) relative paths."""
    rng = np.random.default_rng(seed)
    image = np.zeros((10, 12, 14), np.float32)
    image[1:-1, 1:-1, 1:-1] = rng.uniform(50, 100, (8, 10, 12))
    label = np.zeros((10, 12, 14), np.uint8)
    label[3:6, 3:6, 3:6] = 1
    files = (f"{images_dir}/{name}_0000.nii.gz", f"{labels_dir}/{name}.nii.gz")
    write_nifti(os.path.join(folder, files[0]), image)
    write_nifti(os.path.join(folder, files[1]), label)
    return files


def _msd(folder, write_nifti, training=("case_a",), test=("case_t1", "case_t2"), unlabeled=("case_u",)) -> Path:
    """dataset.json with labeled ``training`` and ``test`` lists plus MSD-style bare test image paths."""
    data = {"name": "msd", "labels": LABELS, "modality": {"0": "t1"}, "training": [], "test": []}
    for seed, name in enumerate(training):
        image, label = _case(write_nifti, folder, "imagesTr", "labelsTr", name, seed)
        data["training"].append({"image": image, "label": label})
    for seed, name in enumerate(test, start=10):
        image, label = _case(write_nifti, folder, "imagesTs", "labelsTs", name, seed)
        data["test"].append({"image": image, "label": label})
    for seed, name in enumerate(unlabeled, start=20):
        image, _ = _case(write_nifti, folder, "imagesTs", "unused", name, seed)
        data["test"].append(f"./{image}")
    path = Path(folder) / "dataset.json"
    path.write_text(json.dumps(data))
    return path


def test_one_training_case_alone_cannot_be_split_and_the_message_points_at_the_test_list(tmp_path):
    with pytest.raises(ValueError) as info:
        make_splits(["case_a"], tmp_path / "splits.json")
    assert str(info.value) == (
        "scheme '80/20' needs at least 2 labeled cases to hold some out for testing, got 1: add cases, or list "
        "held-out labeled cases under 'test' in dataset.json ([{\"image\": ..., \"label\": ...}]), which then "
        "become the test set"
    )


def test_labeled_test_list_is_the_test_split_and_unlabeled_images_are_named_in_a_warning(
    tmp_path, write_nifti, caplog
):
    source = _msd(tmp_path / "task", write_nifti)
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.labeled_dataset"):
        prepared = prepare_segmentation_dataset(source, tmp_path / "cache", num_workers=0)
    assert [e["case"] for e in prepared["training"]] == ["case_a", "case_t1", "case_t2"]
    assert prepared["test_cases"] == ["case_t1", "case_t2"]
    assert (
        f"dataset '{source}' lists 1 'test' image(s) without a label: they cannot be scored, so fine-tuning and "
        "evaluation leave them out; segment them with bundles/s3d_finetune/configs/inference.yaml "
        f"--input_dir {source}"
    ) in caplog.text

    splits = make_splits([e["case"] for e in prepared["training"]], tmp_path / "splits.json",
                         test_cases=prepared["test_cases"])
    assert splits["scheme"] == TEST_LIST_SCHEME == "dataset.json test list"
    assert splits["train"] == ["case_a"] and splits["test"] == ["case_t1", "case_t2"]
    assert json.loads((tmp_path / "splits.json").read_text()) == splits
    # reused on the next run; the cache's own dataset.json keeps the held-out cases apart
    assert make_splits(["case_t2", "case_a", "case_t1"], tmp_path / "splits.json", test_cases=["case_t2", "case_t1"]) == splits
    cache_json = json.loads((tmp_path / "cache" / "dataset.json").read_text())
    assert [e["label"] for e in cache_json["training"]] == ["labels/case_a.nii.gz"]
    assert [e["label"] for e in cache_json["test"]] == ["labels/case_t1.nii.gz", "labels/case_t2.nii.gz"]

    # evaluation reads the raw dataset again and finds the test cases among its entries
    entries, _ = load_segmentation_datalist(source, strict=False)
    test_entries = select_split(entries, splits, part="test")
    assert [e["label"] for e in test_entries] == [
        str(tmp_path / "task" / "labelsTs" / "case_t1.nii.gz"), str(tmp_path / "task" / "labelsTs" / "case_t2.nii.gz")]


def test_finetune_config_builds_the_test_list_split(tmp_path, write_nifti):
    source = _msd(tmp_path / "task", write_nifti)
    parser = ConfigParser()
    parser.read_config(str(FINETUNE))
    parser.update({"dataset_dir": str(source), "output_dir": str(tmp_path / "run")})
    splits = parser.get_parsed_content("splits")
    assert (splits["scheme"], splits["train"], splits["test"]) == (TEST_LIST_SCHEME, ["case_a"], ["case_t1", "case_t2"])
    assert [e["case"] for e in parser.get_parsed_content("validation_entries")] == ["case_t1", "case_t2"]
    assert json.loads((tmp_path / "run" / "splits.json").read_text())["scheme"] == TEST_LIST_SCHEME


def test_kfold_with_a_test_list_folds_only_the_other_cases(tmp_path):
    ids = [f"c{i}" for i in range(6)] + ["t0", "t1"]
    splits = make_splits(ids, tmp_path / "cv.json", scheme="3fold", test_cases=["t1", "t0"])
    assert splits["test"] == ["t0", "t1"]
    assert sorted(c for f in splits["folds"] for c in f["val"]) == [f"c{i}" for i in range(6)]
    assert all(not {"t0", "t1"} & set(f["train"] + f["val"]) for f in splits["folds"])
    assert make_splits(ids, tmp_path / "cv.json", scheme="3fold", test_cases=["t0", "t1"]) == splits
    with pytest.raises(ValueError, match=r"holds the test cases \['t0', 't1'\], but the dataset's test list is \['t1'\]"):
        make_splits(ids, tmp_path / "cv.json", scheme="3fold", test_cases=["t1"])


def test_split_file_made_without_the_test_list_is_refused(tmp_path):
    make_splits(["a", "b", "c", "t"], tmp_path / "s.json")
    with pytest.raises(ValueError, match="holds scheme '80/20' with seed 0, but scheme 'dataset.json test list'"):
        make_splits(["a", "b", "c", "t"], tmp_path / "s.json", test_cases=["t"])
    with pytest.raises(ValueError, match=r"test_cases \['x'\] are not among case_ids"):
        make_splits(["a", "b"], tmp_path / "other.json", test_cases=["x"])
    with pytest.raises(ValueError, match="all 1 cases are in the dataset's test list"):
        make_splits(["t"], tmp_path / "only.json", test_cases=["t"])


def test_a_case_in_both_lists_is_an_error_and_equal_names_get_distinct_ids(tmp_path, write_nifti):
    folder = tmp_path / "task"
    image, label = _case(write_nifti, folder, "imagesTr", "labelsTr", "same", 0)
    test_image, test_label = _case(write_nifti, folder, "imagesTs", "labelsTs", "same", 1)
    data = {"labels": LABELS, "training": [{"image": image, "label": label}],
            "test": [{"image": test_image, "label": test_label}]}
    (folder / "dataset.json").write_text(json.dumps(data))
    entries, _ = load_segmentation_datalist(folder)
    assert entries[0]["case"] == "same" and entries[1]["case"].startswith("same__") and len(entries[1]["case"]) == 14
    data["test"].append({"image": image, "label": label})
    (folder / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"lists '.*labelsTr/same.nii.gz' under both 'training' and 'test'"):
        load_segmentation_datalist(folder)
