"""Fine-tuning data: labeled demo, dataset reading, preprocessing oracles, bad-input handling, splits."""

from __future__ import annotations

import csv
import json
import logging
import os

import nibabel as nib
import numpy as np
import pytest

from custom_nets.data.demo import make_demo_segmentation_case, write_demo_segmentation_dataset
from custom_nets.data.segmentation import (
    load_segmentation_datalist,
    make_splits,
    prepare_segmentation_dataset,
    select_split,
)
from custom_nets.data.spacing import median_spacing, ras_spacing

#: Smallest demo shape whose white matter still holds a few lesions (about 0.4 s per case).
DEMO_SHAPE = (64, 72, 64)
LABELS = {"0": "background", "1": "lesion", "2": "ventricles"}


def _world(affine, index):
    return np.asarray(affine)[:3, :3] @ np.asarray(index, dtype=float) + np.asarray(affine)[:3, 3]


def _dataset(folder, cases, labels=LABELS, modality=("t1", "flair"), extra=None) -> str:
    """Write ``dataset.json`` for ``cases``: ``{name: (image files, label file)}`` relative to ``folder``."""
    data = {"name": "test", "labels": labels, "training": [{"image": i, "label": l} for i, l in cases.values()]}
    if modality is not None:
        data["modality"] = {str(k): m for k, m in enumerate(modality)}
    data.update(extra or {})
    path = os.path.join(folder, "dataset.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    return path


def _case(write_nifti, folder, name, images, label, affine=None, label_affine=None, spacing=(1.0, 1.0, 1.0)):
    """Write one case's modality files and label; return ``(image paths, label path)`` relative to folder."""
    files = []
    for m, array in enumerate(images):
        files.append(f"imagesTr/{name}_{m:04d}.nii.gz")
        write_nifti(os.path.join(folder, files[-1]), array, affine=affine, spacing=spacing)
    label_file = f"labelsTr/{name}.nii.gz"
    label_affine = affine if label_affine is None else label_affine
    write_nifti(os.path.join(folder, label_file), label, affine=label_affine, spacing=spacing)
    return files, label_file


def _simple_case(shape=(10, 12, 14), seed=0, channels=2):
    """Images with a zero border and a labeled bright box; label classes 1 and 2 present."""
    rng = np.random.default_rng(seed)
    images = []
    for c in range(channels):
        image = np.zeros(shape, np.float32)
        image[1:-1, 1:-1, 1:-1] = rng.uniform(50, 100, tuple(s - 2 for s in shape))
        image[2:4, 2:4, 2:4] += 300.0 * (c + 1)
        images.append(image)
    label = np.zeros(shape, np.uint8)
    label[2:4, 2:4, 2:4] = 1
    label[5:7, 5:7, 5:7] = 2
    return images, label


def _prepare(source, cache, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return prepare_segmentation_dataset(source, cache, **kwargs)


# --- demo -----------------------------------------------------------------------------------------


def test_demo_case_is_deterministic_with_visible_label_classes():
    (t1, flair), label, affine = make_demo_segmentation_case(0, 0, DEMO_SHAPE)
    (t1_again, flair_again), label_again, _ = make_demo_segmentation_case(0, 0, DEMO_SHAPE)
    _, other_label, _ = make_demo_segmentation_case(0, 1, DEMO_SHAPE)
    assert t1.tobytes() == t1_again.tobytes() and flair.tobytes() == flair_again.tobytes()
    assert label.tobytes() == label_again.tobytes() and not np.array_equal(label, other_label)
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2}
    lesion, ventricles = label == 1, label == 2
    assert 30 < lesion.sum() < 5000 and 300 < ventricles.sum() < 20000
    brain = (label == 0) & (np.abs(np.indices(label.shape) - (np.array(label.shape)[:, None, None, None] - 1) / 2)
                            < np.array(label.shape)[:, None, None, None] / 6).all(axis=0)
    flair_brain, t1_brain = flair[brain].mean(), t1[brain].mean()
    assert flair[lesion].mean() > 1.5 * flair_brain  # lesions: bright in FLAIR...
    assert t1[lesion].mean() < 0.8 * t1_brain  # ...dark in T1
    assert flair[ventricles].mean() < 0.5 * flair_brain and t1[ventricles].mean() < 0.5 * t1_brain
    # A modality renders the same whatever other modalities come with it.
    (flair_alone,), _, _ = make_demo_segmentation_case(0, 0, DEMO_SHAPE, modalities=("flair",))
    assert flair_alone.tobytes() == flair.tobytes()
    with pytest.raises(ValueError, match="pet.*'flair'"):
        make_demo_segmentation_case(0, 0, DEMO_SHAPE, modalities=("t1", "pet"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """4 labeled demo cases (1 mm RAS, anisotropic, LPS, both) and 1 test case, then preprocessed."""
    root = tmp_path_factory.mktemp("segdemo")
    path = write_demo_segmentation_dataset(root / "source", num_cases=4, shape=DEMO_SHAPE, num_test=1)
    return path, _prepare(path, root / "cache")


def test_demo_dataset_layout_geometry_and_idempotence(demo):
    path, _ = demo
    folder = os.path.dirname(path)
    data = json.load(open(path, encoding="utf-8"))
    assert data["labels"] == LABELS and data["modality"] == {"0": "t1", "1": "flair"}
    assert data["training"][0] == {
        "image": ["imagesTr/case_000_0000.nii.gz", "imagesTr/case_000_0001.nii.gz"], "label": "labelsTr/case_000.nii.gz"
    }
    assert data["test"] == [{"image": ["imagesTs/case_004_0000.nii.gz", "imagesTs/case_004_0001.nii.gz"]}]
    for index, entry in enumerate(data["training"]):
        images = [nib.load(os.path.join(folder, f)) for f in entry["image"]]
        label = nib.load(os.path.join(folder, entry["label"]))
        assert label.get_data_dtype() == np.uint8
        values, counts = np.unique(np.asarray(label.dataobj), return_counts=True)
        assert list(values) == [0, 1, 2] and counts[1] > 20 and counts[2] > 300, (index, counts)
        for image in images:
            assert image.shape == label.shape == DEMO_SHAPE
            np.testing.assert_allclose(image.affine, label.affine)
        expected = (1.2, 1.0, 1.5) if index in (1, 3) else (1.0, 1.0, 1.0)
        np.testing.assert_allclose(label.header.get_zooms(), expected, atol=1e-6)
        assert nib.aff2axcodes(label.affine) == (("L", "P", "S") if index in (2, 3) else ("R", "A", "S"))
    stamps = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in ["dataset.json", *data["training"][0]["image"]]}
    write_demo_segmentation_dataset(folder, num_cases=4, shape=DEMO_SHAPE, num_test=1)
    assert stamps == {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in stamps}


def test_prepared_demo_is_two_channel_ras_and_labels_stay_on_their_structures(demo):
    _, result = demo
    assert result["spacing"] == [1.0, 1.0, 1.0] and result["skipped"] == [] and result["empty_labels"] == []
    assert result["labels"] == {0: "background", 1: "lesion", 2: "ventricles"}
    assert result["modalities"] == ["t1", "flair"]
    assert [e["case"] for e in result["training"]] == [f"case_{i:03d}" for i in range(4)]
    for entry in result["training"]:
        image, label = nib.load(entry["image"]), nib.load(entry["label"])
        assert image.shape == (*label.shape, 2) and label.get_data_dtype() == np.uint8
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(label.header.get_zooms(), (1.0, 1.0, 1.0), atol=1e-5)
        data, classes = image.get_fdata(), np.asarray(label.dataobj)
        assert set(np.unique(classes)) == {0, 1, 2}
        t1, flair = data[..., 0], data[..., 1]  # channels in the declared modality order
        assert flair[classes == 1].mean() > 1.5 and t1[classes == 1].mean() < -0.5, entry["case"]
        assert flair[classes == 2].mean() < -1.5 and t1[classes == 2].mean() < -1.5, entry["case"]
    # The cache's own dataset.json is a valid labeled dataset (one 4D file per case).
    entries, labels = load_segmentation_datalist(result["datalist"])
    assert labels == result["labels"] and [len(e["image"]) for e in entries] == [1] * 4


# --- reading dataset.json -------------------------------------------------------------------------


def test_load_resolves_paths_and_accepts_string_images_and_nnunet_labels(tmp_path, write_nifti):
    images, label = _simple_case(channels=1)
    files, label_file = _case(write_nifti, tmp_path, "a", images, label)
    path = _dataset(tmp_path, {"a": (files[0], label_file)}, labels={"background": 0, "lesion": 1, "other": 2},
                    modality=None)
    entries, labels = load_segmentation_datalist(tmp_path)  # the folder holding dataset.json
    assert labels == {0: "background", 1: "lesion", 2: "other"}
    assert entries == [{"case": "a", "image": [str(tmp_path / files[0])], "label": str(tmp_path / label_file)}]
    assert load_segmentation_datalist(path)[0] == entries


def test_load_errors_name_the_case_the_file_and_the_fix(tmp_path, write_nifti):
    images, label = _simple_case()
    cases = {n: _case(write_nifti, tmp_path, n, images, label) for n in ("a", "b")}

    files_b, label_b = cases["b"]
    _dataset(tmp_path, {"a": cases["a"], "b": ([files_b[0], "imagesTr/gone_0001.nii.gz"], label_b)})
    with pytest.raises(FileNotFoundError, match=r"case 'b': flair image file '.*gone_0001.nii.gz' does not exist"):
        load_segmentation_datalist(tmp_path)

    _dataset(tmp_path, {"a": cases["a"], "b": (files_b, "labelsTr/nope.nii.gz")})
    with pytest.raises(FileNotFoundError, match=r"case 'nope': label file '.*nope.nii.gz' does not exist"):
        load_segmentation_datalist(tmp_path)

    _dataset(tmp_path, {"a": cases["a"], "b": (files_b[:1], label_b)})
    with pytest.raises(ValueError, match=r"case 'b' has 1 image channel\(s\) but the dataset declares 2 modalities"):
        load_segmentation_datalist(tmp_path)
    assert [e["case"] for e in load_segmentation_datalist(tmp_path, strict=False)[0]] == ["a"]
    _dataset(tmp_path, {"a": cases["a"], "b": (files_b[:1], label_b)}, modality=None)
    with pytest.raises(ValueError, match=r"case 'b' has 1 image channel\(s\) but the other cases have 2"):
        load_segmentation_datalist(tmp_path)

    _dataset(tmp_path, cases, labels={})
    with pytest.raises(ValueError, match=r"no 'labels' declaration: add \"labels\": \{\"0\": \"background\""):
        load_segmentation_datalist(tmp_path)
    _dataset(tmp_path, cases, labels={"0": "background", "2": "lesion"})
    with pytest.raises(ValueError, match=r"label values \[0, 2\]: they must be the consecutive integers"):
        load_segmentation_datalist(tmp_path)


# --- preprocessing oracles ------------------------------------------------------------------------


def test_label_stays_on_its_blob_through_lps_crop_and_resampling(tmp_path, write_nifti, lps_affine):
    """Blob A is bright in modality 0 and labeled 1, blob B bright in modality 1 and labeled 2; the
    case is stored LPS with 2 mm slices inside a zero border and resampled to 1 mm."""
    shape, spacing = (16, 18, 10), (1.0, 1.0, 2.0)
    rng = np.random.default_rng(3)
    t1, flair = (np.zeros(shape, np.float32) for _ in range(2))
    for image in (t1, flair):
        image[2:14, 3:16, 1:9] = rng.uniform(90, 110, (12, 13, 8))
    label = np.zeros(shape, np.uint8)
    t1[4:7, 5:8, 2:4] += 500.0
    label[4:7, 5:8, 2:4] = 1
    flair[9:12, 10:14, 5:8] += 500.0
    label[9:12, 10:14, 5:8] = 2
    affine = lps_affine(shape, spacing)
    files, label_file = _case(write_nifti, tmp_path, "blob", [t1, flair], label, affine=affine)
    _dataset(tmp_path, {"blob": (files, label_file)})

    result = _prepare(tmp_path, tmp_path / "cache")

    out = nib.load(result["training"][0]["image"])
    out_label = nib.load(result["training"][0]["label"])
    data, classes = out.get_fdata(), np.asarray(out_label.dataobj)
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    # Crop box 12 x 13 x 8 voxels; 8 slice centres 2 mm apart span 14 mm: 15 voxel centres at 1 mm.
    assert data.shape == (12, 13, 15, 2) and classes.shape == (12, 13, 15)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) == {0, 1, 2}
    assert data[..., 0][classes == 1].min() > 2.0 and abs(data[..., 1][classes == 1].mean()) < 1.0
    assert data[..., 1][classes == 2].min() > 2.0 and abs(data[..., 0][classes == 2].mean()) < 1.0
    for value in (1, 2):  # each labeled blob keeps its position in the world (mm)
        before = _world(affine, np.argwhere(label == value).mean(axis=0))
        after = _world(out_label.affine, np.argwhere(classes == value).mean(axis=0))
        np.testing.assert_allclose(after, before, atol=0.51)


def test_median_spacing_is_taken_per_ras_axis(tmp_path, write_nifti):
    # The third file stores its axes as (z, x, y): voxel spacing (4, 2, 1) is RAS spacing (2, 1, 4).
    permuted = np.array([[0, 2.0, 0, 0], [0, 0, 1.0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])
    geometries = {"a": (np.diag([1.0, 1.0, 3.0, 1.0]), (12, 12, 8)), "b": (np.diag([1.0, 1.0, 5.0, 1.0]), (12, 12, 6)),
                  "c": (permuted, (6, 12, 12))}
    cases = {}
    for name, (affine, shape) in geometries.items():
        image = np.zeros(shape, np.float32)
        image[1:-1, 1:-1, 1:-1] = 100.0
        label = np.zeros(shape, np.uint8)
        label[2:4, 2:4, 2:4] = 1
        cases[name] = _case(write_nifti, tmp_path, name, [image], label, affine=affine)
    _dataset(tmp_path, cases, modality=("t1",))
    files = [tmp_path / f[0] for f, _ in cases.values()]
    assert ras_spacing(files[2]) == (2.0, 1.0, 4.0)
    assert median_spacing(files) == (1.0, 1.0, 4.0)

    result = _prepare(tmp_path, tmp_path / "cache", target_spacing="median")
    assert result["spacing"] == [1.0, 1.0, 4.0]
    for entry in result["training"]:
        np.testing.assert_allclose(nib.load(entry["label"]).header.get_zooms(), (1.0, 1.0, 4.0), atol=1e-5)


def test_ct_normalisation_clips_to_foreground_percentiles_and_uses_dataset_mean_std(tmp_path, write_nifti):
    rng = np.random.default_rng(7)
    shape, cases, foreground, volumes = (12, 12, 12), {}, [], []
    for name in ("ct1", "ct2"):
        image = np.full(shape, -1000.0, np.float32)  # air: non-zero, so nothing is cropped
        image[1:-1, 1:-1, 1:-1] = rng.normal(-50.0, 30.0, (10, 10, 10))
        label = np.zeros(shape, np.uint8)
        label[3:9, 3:9, 3:9] = 1
        image[3:9, 3:9, 3:9] = rng.normal(60.0, 25.0, (6, 6, 6))
        image[4, 4, 4], image[5, 5, 5] = 3000.0, -900.0  # outliers the percentile window removes
        cases[name] = _case(write_nifti, tmp_path, name, [image], label)
        foreground.append(image[label > 0])
        volumes.append(image)
    _dataset(tmp_path, cases, labels={"0": "background", "1": "organ"}, modality=("CT",))
    pooled = np.concatenate(foreground).astype(np.float64)
    low, high = np.percentile(pooled, [0.5, 99.5])
    mean, std = pooled.mean(), pooled.std()

    result = _prepare(tmp_path, tmp_path / "cache", modality="ct")
    stats = result["normalisation"]["statistics"]["channels"][0]
    np.testing.assert_allclose([stats["low"], stats["high"], stats["mean"], stats["std"]], [low, high, mean, std],
                               rtol=1e-6)
    for entry, volume in zip(result["training"], volumes):
        out = nib.load(entry["image"]).get_fdata()
        np.testing.assert_allclose(out, (np.clip(volume, low, high) - mean) / std, atol=1e-4)

    clipped = _prepare(tmp_path, tmp_path / "cache_window", modality="ct", ct_clip=(-200, 200))
    out = nib.load(clipped["training"][0]["image"]).get_fdata()
    np.testing.assert_allclose(out, (np.clip(volumes[0], -200, 200) - mean) / std, atol=1e-4)


# --- bad inputs -----------------------------------------------------------------------------------


def test_wrong_geometry_and_label_values_raise_one_error_listing_every_case(tmp_path, write_nifti):
    images, label = _simple_case()
    shifted = np.eye(4)
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    bad_values = label.copy()
    bad_values[8, 8, 8], bad_values[1, 1, 1] = 7, 3
    cases = {
        "good": _case(write_nifti, tmp_path, "good", images, label),
        "short": _case(write_nifti, tmp_path, "short", images, label[:, :, :13]),
        "moved": _case(write_nifti, tmp_path, "moved", images, label, label_affine=shifted),
        "values": _case(write_nifti, tmp_path, "values", images, bad_values),
        "unregistered": _case(write_nifti, tmp_path, "unregistered", [images[0], images[1][:, :, :13]], label),
    }
    _dataset(tmp_path, cases)
    with pytest.raises(ValueError) as raised:
        _prepare(tmp_path, tmp_path / "cache")
    message = str(raised.value)
    assert "4 labeled cases" in message and "  good:" not in message
    assert "short: label_mismatch: label" in message and "shape (10, 12, 13)" in message
    assert "shape (10, 12, 14)" in message
    assert "moved: label_mismatch" in message and "origin (5, 0, 0) mm" in message and "origin (0, 0, 0) mm" in message
    assert "values: label_values" in message and "values [3, 7] that are not declared classes [0, 1, 2]" in message
    assert "unregistered: modality_mismatch" in message and "unregistered_0001.nii.gz" in message
    assert (tmp_path / "cache" / "images" / "good.nii.gz").is_file()  # the good case is cached already
    assert not (tmp_path / "cache" / "dataset.json").exists()


def test_unusable_cases_are_skipped_with_reasons_and_empty_labels_kept(tmp_path, write_nifti, caplog):
    images, label = _simple_case()
    nan_images = [images[0].copy(), images[1]]
    nan_images[0][3, 3, 3] = np.nan
    cases = {
        "good": _case(write_nifti, tmp_path, "good", images, label),
        "empty": _case(write_nifti, tmp_path, "empty", images, np.zeros_like(label)),
        "nan": _case(write_nifti, tmp_path, "nan", nan_images, label),
        "garbage": _case(write_nifti, tmp_path, "garbage", images, label),
    }
    outside = label.copy()
    outside[0, 5:7, 5:7] = 2  # on the zero border of the images: lost by the crop to their non-zero box
    cases["outside"] = _case(write_nifti, tmp_path, "outside", images, outside)
    with open(tmp_path / cases["garbage"][0][1], "wb") as handle:
        handle.write(b"not a nifti file")
    files, label_file = _case(write_nifti, tmp_path, "onemod", images[:1], label)
    cases["onemod"] = (files, label_file)
    _dataset(tmp_path, cases)

    with caplog.at_level(logging.WARNING, logger="custom_nets.data.segmentation"):
        result = _prepare(tmp_path, tmp_path / "cache")

    assert [e["case"] for e in result["training"]] == ["good", "empty", "outside"]
    reasons = dict(result["skipped"])
    assert sorted(reasons) == ["garbage", "nan", "onemod"]
    assert reasons["onemod"].startswith("missing_modality: case 'onemod' has 1 image channel")
    assert reasons["nan"].startswith("nan_inf:") and "nan_0000.nii.gz" in reasons["nan"]
    assert reasons["garbage"].startswith("unreadable:") and "garbage_0001.nii.gz" in reasons["garbage"]
    assert result["empty_labels"] == ["empty"]
    assert "Case 'empty': empty_label" in caplog.text and "Skipping case 'onemod'" in caplog.text
    assert "Case 'outside': label_cropped: 4 of 20 foreground voxels" in caplog.text
    with open(tmp_path / "cache" / "skipped.csv", encoding="utf-8") as handle:
        assert sorted(row["case"] for row in csv.DictReader(handle)) == ["garbage", "nan", "onemod"]


def test_cache_is_resumed_and_other_settings_are_refused(tmp_path, write_nifti):
    images, label = _simple_case()
    _dataset(tmp_path, {"a": _case(write_nifti, tmp_path, "a", images, label)})
    first = _prepare(tmp_path, tmp_path / "cache")
    manifest = (tmp_path / "cache" / "manifest.jsonl").read_text()
    assert _prepare(tmp_path, tmp_path / "cache") == first
    assert (tmp_path / "cache" / "manifest.jsonl").read_text() == manifest  # nothing was redone
    with pytest.raises(ValueError, match="different preprocessing settings.*target_spacing"):
        _prepare(tmp_path, tmp_path / "cache", target_spacing=2.0)
    with pytest.raises(ValueError, match="modality='pet'"):
        _prepare(tmp_path, tmp_path / "cache", modality="pet")
    with pytest.raises(ValueError, match="only applies to modality='ct'"):
        _prepare(tmp_path, tmp_path / "cache", ct_clip=(-100, 100))
    with pytest.raises(ValueError, match="'mean'.*'median'"):
        _prepare(tmp_path, tmp_path / "cache", target_spacing="mean")


# --- splits ---------------------------------------------------------------------------------------

CASES = [f"case_{i:03d}" for i in range(25)]


def test_holdout_split_is_deterministic_saved_and_reused(tmp_path):
    splits = make_splits(CASES, tmp_path / "a.json", seed=0)
    assert make_splits(list(reversed(CASES)), tmp_path / "b.json", seed=0) == splits  # input order is irrelevant
    assert make_splits(CASES, tmp_path / "c.json", seed=1)["test"] != splits["test"]
    assert len(splits["train"]) == 20 and len(splits["test"]) == 5
    assert not set(splits["train"]) & set(splits["test"]) and set(splits["train"]) | set(splits["test"]) == set(CASES)
    assert json.loads((tmp_path / "a.json").read_text()) == splits
    stamp = os.stat(tmp_path / "a.json").st_mtime_ns
    assert make_splits(CASES, tmp_path / "a.json", seed=0) == splits
    assert os.stat(tmp_path / "a.json").st_mtime_ns == stamp


def test_low_data_subsets_are_nested_and_bounded(tmp_path):
    path = tmp_path / "splits.json"
    full = make_splits(CASES, path)
    subsets = [make_splits(CASES, path, low_data=n)["train"] for n in (5, 10, 20)]
    assert [len(s) for s in subsets] == [5, 10, 20]
    assert subsets[0] == subsets[1][:5] and subsets[1] == subsets[2][:10] and subsets[2] == full["train"]
    assert make_splits(CASES, path, low_data=5)["test"] == full["test"]
    with pytest.raises(ValueError, match="low_data=21 .* has only 20"):
        make_splits(CASES, path, low_data=21)
    assert json.loads(path.read_text()) == full  # the file keeps the full splits


def test_kfold_partitions_are_disjoint_and_cover_every_case(tmp_path):
    ids = CASES[:23]
    splits = make_splits(ids, tmp_path / "cv.json", seed=4, scheme="5fold")
    vals = [set(f["val"]) for f in splits["folds"]]
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]
    assert set().union(*vals) == set(ids) and sum(len(v) for v in vals) == len(ids)
    for fold in splits["folds"]:
        assert not set(fold["train"]) & set(fold["val"]) and set(fold["train"]) | set(fold["val"]) == set(ids)
    low = make_splits(ids, tmp_path / "cv.json", seed=4, scheme="5fold", low_data=10)
    for fold, small in zip(splits["folds"], low["folds"]):
        assert small["train"] == fold["train"][:10] and small["val"] == fold["val"]


def test_existing_split_file_for_other_cases_or_scheme_is_refused(tmp_path):
    path = tmp_path / "splits.json"
    make_splits(CASES, path)
    with pytest.raises(ValueError, match=r"not in the dataset \['case_024'\].*not in the file \['new_case'\].*delete"):
        make_splits(CASES[:-1] + ["new_case"], path)
    with pytest.raises(ValueError, match="scheme '80/20' with seed 0, but scheme '5fold' with seed 0.*delete"):
        make_splits(CASES, path, scheme="5fold")
    with pytest.raises(ValueError, match="seed 0, but scheme '80/20' with seed 3"):
        make_splits(CASES, path, seed=3)
    with pytest.raises(ValueError, match="'70/20' is not a split scheme"):
        make_splits(CASES, tmp_path / "other.json", scheme="70/20")


def test_select_split_returns_entries_in_split_order(tmp_path):
    entries = [{"case": c, "image": f"{c}.nii.gz"} for c in CASES]
    splits = make_splits(CASES, tmp_path / "s.json")
    assert [e["case"] for e in select_split(entries, splits, "test")] == splits["test"]
    assert [e["case"] for e in select_split(entries, splits, low_data=3)] == splits["train"][:3]
    with pytest.raises(ValueError, match="fold=0 given, but these are 80/20 splits"):
        select_split(entries, splits, fold=0)
    with pytest.raises(ValueError, match="low_data applies to the training part only"):
        select_split(entries, splits, "test", low_data=2)
    with pytest.raises(ValueError, match=r"1 cases of the split are not among the entries: \['case_000'\]"):
        select_split([e for e in entries if e["case"] != "case_000"], splits, "train" if "case_000" in splits["train"]
                     else "test")
    folds = make_splits(CASES, tmp_path / "f.json", scheme="5fold")
    assert [e["case"] for e in select_split(entries, folds, "val", fold=2)] == folds["folds"][2]["val"]
    with pytest.raises(ValueError, match="fold=5 is not a fold index: pass 0 ... 4"):
        select_split(entries, folds, "val", fold=5)
