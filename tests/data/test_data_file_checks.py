"""Files that used to be accepted or skipped silently: no voxel size, non-NIfTI formats in a folder, files
this user may not read, and an output folder that cannot be written.

Tests run as root here, and root reads and writes files whatever their mode bits, so the permission cases
monkeypatch ``os.access`` (an unreadable input) and ``tempfile.mkstemp`` (an unwritable folder) to answer as
the file system answers an ordinary user; a real ``chmod`` variant runs where the tests are not root.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import tempfile
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from custom_nets.data import QualityThresholds, check_image, load_datalist, prepare_dataset
from custom_nets.data.paths import check_writable_dir
from custom_nets.data.segmentation import prepare_segmentation_dataset

ROOT = Path(__file__).resolve().parents[2]
LOOSE = QualityThresholds(min_fov_mm=0.0, max_spacing_mm=10.0, min_file_bytes=0)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _volume(shape=(8, 10, 12), seed=0):
    return np.random.default_rng(seed).uniform(1, 2, shape).astype(np.float32)


def _no_voxel_size(path, data, sform=False) -> str:
    """A NIfTI whose pixdim[1:4] is 0 and which has no qform (and no sform unless ``sform``)."""
    image = nib.Nifti1Image(data, None)
    image.header["pixdim"][1:4] = 0.0
    image.header.set_qform(None, code=0)
    image.header.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]) if sform else None, code=2 if sform else 0)
    nib.save(image, str(path))
    return str(path)


def _excluded(cache) -> dict[str, str]:
    with open(Path(cache) / "excluded.csv", encoding="utf-8") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


# ---------------- a zero voxel size without sform/qform ----------------

NO_VOXEL_SIZE = (
    "bad_spacing: the header gives no voxel size (pixdim[1:4] = (0, 0, 0), sform_code 0, qform_code 0), so the "
    "spacing is unknown and readers would assume 1 mm; fix: write the voxel size in mm into the header "
    "(e.g. nibabel: img.header.set_zooms((x, y, z)), then save)"
)


def test_zero_voxel_size_without_sform_or_qform_is_rejected_with_the_reason(tmp_path):
    path = _no_voxel_size(tmp_path / "pixdim0.nii.gz", _volume())
    assert nib.load(path).header.get_zooms() == (1.0, 1.0, 1.0)  # what nibabel (and MONAI) silently make of it
    assert check_image(path, LOOSE) == NO_VOXEL_SIZE
    # an sform defines the geometry on its own: the same header with an sform passes
    assert check_image(_no_voxel_size(tmp_path / "sform.nii.gz", _volume(), sform=True), LOOSE) is None


def test_pretraining_lists_the_zero_voxel_size_file_in_excluded_csv(tmp_path, write_nifti):
    write_nifti(tmp_path / "data" / "good.nii.gz", _volume())
    bad = _no_voxel_size(tmp_path / "data" / "pixdim0.nii.gz", _volume(seed=1))
    training = prepare_dataset(tmp_path / "data", tmp_path / "cache", num_workers=0, thresholds=LOOSE)
    assert [Path(e["image"]).name for e in training] == ["good.nii.gz"]
    assert _excluded(tmp_path / "cache") == {bad: NO_VOXEL_SIZE}


def _labeled(folder, write_nifti, bad_image=None) -> Path:
    """Two labeled cases; the image of case 'b' is written by ``bad_image(path, data)`` when given."""
    folder = Path(folder)
    data = {"labels": {"0": "background", "1": "x"}, "training": []}
    for name in ("a", "b"):
        image = np.zeros((8, 10, 12), np.float32)
        image[1:-1, 1:-1, 1:-1] = _volume((6, 8, 10))
        label = (image > 1.5).astype(np.uint8)
        image_path = folder / "imagesTr" / f"{name}_0000.nii.gz"
        if name == "b" and bad_image is not None:
            image_path.parent.mkdir(parents=True, exist_ok=True)
            bad_image(image_path, image)
        else:
            write_nifti(image_path, image)
        write_nifti(folder / "labelsTr" / f"{name}.nii.gz", label)
        data["training"].append({"image": f"imagesTr/{name}_0000.nii.gz", "label": f"labelsTr/{name}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps(data))
    return folder


def test_fine_tuning_stops_on_a_zero_voxel_size_naming_the_file(tmp_path, write_nifti):
    source = _labeled(tmp_path / "task", write_nifti, bad_image=_no_voxel_size)
    with pytest.raises(ValueError) as info:
        prepare_segmentation_dataset(source, tmp_path / "cache", num_workers=0)
    bad = tmp_path / "task" / "imagesTr" / "b_0000.nii.gz"
    assert str(info.value) == (
        f"1 labeled cases of '{source / 'dataset.json'}' have files that need fixing (wrong labels or geometry, no "
        "voxel size, or no read permission; the other cases are cached; fix these files or remove the cases from "
        f"dataset.json, then run again):\n  b: {NO_VOXEL_SIZE} (image file '{bad}')"
    )


# ---------------- formats in a scanned folder ----------------


def test_folder_scan_takes_every_format_the_loader_reads_and_counts_the_rest(tmp_path, write_nifti, caplog):
    data = tmp_path / "data"
    write_nifti(data / "a.nii.gz", _volume(seed=0), spacing=(2.0, 2.0, 2.0))
    nib.save(nib.MGHImage(_volume(seed=1), np.diag([2.0, 2.0, 2.0, 1.0])), str(data / "b.mgz"))
    itk_image = itk.image_from_array(np.ascontiguousarray(_volume(seed=2).transpose(2, 1, 0)))  # ITK arrays are z, y, x
    itk_image.SetSpacing([2.0, 2.0, 2.0])
    for name in ("c.nrrd", "d.mha", "e.mhd"):  # e.mhd writes its voxels to e.raw next to it
        itk.imwrite(itk_image, str(data / name))
    for name in ("notes.txt", "slice1.dcm", "slice2.dcm"):
        (data / name).write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="custom_nets.data.datalist"):
        entries = load_datalist(data)
    assert [Path(e["image"]).name for e in entries] == ["a.nii.gz", "b.mgz", "c.nrrd", "d.mha", "e.mhd"]
    assert (
        f"Skipped 3 files in {data} that are not images the preprocessing reads (.dcm: 2, .txt: 1); DICOM series "
        "must be converted first (e.g. dcm2niix -z y); images are .nii, .nii.gz, .hdr, .mgz, .mgh, .mha, .mhd, "
        ".nrrd, .nhdr"
    ) in caplog.text
    # every scanned format is read and resampled from 2 mm to 1 mm: 8 x 10 x 12 voxels become 15 x 19 x 23
    training = prepare_dataset(data, tmp_path / "cache", num_workers=0, thresholds=LOOSE)
    assert len(training) == 5
    assert {nib.load(e["image"]).shape for e in training} == {(15, 19, 23)}


# ---------------- files this user may not read ----------------


@pytest.fixture
def deny_reading(monkeypatch):
    """``deny_reading(path)``: ``os.access(path, R_OK)`` answers False, as it does for a user without read rights."""
    denied = set()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if os.fspath(path) in denied and mode & os.R_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return lambda path: denied.add(os.fspath(path))


def _permission_reason(path) -> str:
    return (
        f"permission_denied: '{path}' cannot be read by this user; fix: make it readable (chmod a+r '{path}', "
        "and a+x on its folders) or run as a user who can read it"
    )


def test_unreadable_file_is_named_a_permission_problem(tmp_path, write_nifti, deny_reading):
    path = write_nifti(tmp_path / "data" / "locked.nii.gz", _volume())
    write_nifti(tmp_path / "data" / "open.nii.gz", _volume(seed=1))
    deny_reading(path)
    assert check_image(path, LOOSE) == _permission_reason(path)
    training = prepare_dataset(tmp_path / "data", tmp_path / "cache", num_workers=0, thresholds=LOOSE)
    assert [Path(e["image"]).name for e in training] == ["open.nii.gz"]
    assert _excluded(tmp_path / "cache") == {path: _permission_reason(path)}


def test_fine_tuning_stops_on_an_unreadable_label_naming_the_file(tmp_path, write_nifti, deny_reading):
    source = _labeled(tmp_path / "task", write_nifti)
    label = source / "labelsTr" / "b.nii.gz"
    deny_reading(label)
    with pytest.raises(ValueError) as info:
        prepare_segmentation_dataset(source, tmp_path / "cache", num_workers=0)
    assert str(info.value).endswith(
        f"\n  b: permission_denied: case 'b': label file '{label}' cannot be read by this user; fix: make it "
        f"readable (chmod a+r '{label}', and a+x on its folders) or run as a user who can read it"
    )


def test_a_folder_the_scan_cannot_list_is_named(tmp_path, write_nifti, monkeypatch, caplog):
    write_nifti(tmp_path / "data" / "a.nii.gz", _volume())
    write_nifti(tmp_path / "data" / "locked" / "b.nii.gz", _volume())
    locked = str(tmp_path / "data" / "locked")
    real_scandir = os.scandir

    def scandir(path="."):  # what os.walk meets in a folder without read permission
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.datalist"):
        entries = load_datalist(tmp_path / "data")
    assert [Path(e["image"]).name for e in entries] == ["a.nii.gz"]
    assert (
        f"Could not list 1 folder(s) below {tmp_path / 'data'}, their images are left out (first: {locked}: "
        f"Permission denied); fix: make them readable (chmod a+rx '{locked}') or run as a user who can read them"
    ) in caplog.text


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode bits")
def test_chmod_000_file_is_a_permission_problem(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "locked.nii.gz", _volume())
    os.chmod(path, 0)
    try:
        assert check_image(path, LOOSE) == _permission_reason(path)
    finally:
        os.chmod(path, 0o644)


# ---------------- an output folder that cannot be written ----------------


def _deny_writing(monkeypatch, errno_code=errno.EACCES):
    """``tempfile.mkstemp`` fails as it does for a user without write rights (or on a read-only disk)."""

    def mkstemp(*args, dir=None, **kwargs):
        raise (PermissionError if errno_code == errno.EACCES else OSError)(errno_code, os.strerror(errno_code), dir)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_unwritable_output_folder_is_refused_with_path_and_fix(tmp_path, monkeypatch):
    _deny_writing(monkeypatch)
    target = tmp_path / "runs" / "s3d"
    with pytest.raises(PermissionError) as info:
        check_writable_dir(target)
    assert str(info.value) == (
        f"output folder '{target}' is not writable: permission denied (it would be created inside '{tmp_path}'); "
        f"fix: pass --output_dir <a folder you can write>, make '{tmp_path}' writable (chmod u+w '{tmp_path}') "
        "or run as a user who can write there"
    )
    assert not (tmp_path / "runs").exists()  # the check creates nothing
    _deny_writing(monkeypatch, errno.EROFS)
    with pytest.raises(PermissionError, match=f"read-only file system at '{tmp_path}'; fix: pass --output_dir"):
        check_writable_dir(target)


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(PermissionError, match=f"'{tmp_path / 'taken'}' is a file, not a folder"):
        check_writable_dir(tmp_path / "taken" / "run")
    assert check_writable_dir(tmp_path / "new" / "run") == str(tmp_path / "new" / "run")


@pytest.mark.skipif(IS_ROOT, reason="root writes into folders whatever their mode bits")
def test_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(PermissionError, match="permission denied"):
            check_writable_dir(locked / "run")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("configs", [
    ["s3d_pretrain/configs/train.yaml"],
    ["s3d_finetune/configs/train.yaml"],
    ["s3d_pretrain/configs/train.yaml", "baselines/configs/dense_mae.yaml"],
])
def test_bundles_refuse_an_unwritable_output_folder_before_any_work(configs, tmp_path, monkeypatch, error_messages):
    _deny_writing(monkeypatch)
    work = []
    monkeypatch.setattr("custom_nets.data.prepare_dataset", lambda *a, **k: work.append("pretrain data"))
    monkeypatch.setattr("custom_nets.data.prepare_segmentation_dataset", lambda *a, **k: work.append("labeled data"))
    workflow = ConfigWorkflow(
        config_file=[str(ROOT / "bundles" / c) for c in configs], workflow_type="train", logging_file=False,
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    chain = error_messages(info.value)
    assert any(m.startswith(f"output folder '{tmp_path / 'out'}' is not writable: permission denied") for m in chain)
    assert work == [] and not (tmp_path / "out").exists()
