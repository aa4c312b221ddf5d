"""Quality filter: every crafted bad file gets its reason code; good files pass; limits are configurable."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from custom_nets.data import QualityThresholds, check_image

NO_SIZE_LIMIT = QualityThresholds(min_file_bytes=0)


def _noise(shape, seed=0):
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


@pytest.fixture
def good_file(tmp_path, write_nifti):
    """60^3 float32 at 1 mm, stored uncompressed (864 kB): passes the default thresholds."""
    return write_nifti(tmp_path / "good.nii", _noise((60, 60, 60)))


def test_good_file_passes_default_thresholds(good_file):
    assert os.path.getsize(good_file) > 200_000
    assert check_image(good_file) is None


def test_missing_file(tmp_path):
    assert check_image(tmp_path / "nope.nii.gz") == "missing: file not found"
    assert check_image(tmp_path).startswith("missing: ")


def test_too_small_file_reports_kilobytes(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "small.nii.gz", np.zeros((60, 60, 60), np.float32))
    size_kb = os.path.getsize(path) / 1000
    reason = check_image(path)
    assert reason.startswith("too_small_file: ") and reason.endswith(" kB < 200 kB")
    assert float(reason.split()[1]) == pytest.approx(size_kb, abs=0.06)
    assert check_image(path, NO_SIZE_LIMIT) is None


def test_truncated_gzip_is_unreadable(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "cut.nii.gz", _noise((60, 60, 60)))
    payload = open(path, "rb").read()
    for name, keep in (("half.nii.gz", len(payload) // 2), ("header_only.nii.gz", 120)):
        cut = tmp_path / name
        cut.write_bytes(payload[:keep])
        reason = check_image(cut, NO_SIZE_LIMIT)
        assert reason.startswith("unreadable: "), (name, reason)
        assert "\n" not in reason and len(reason) < 250


def test_random_bytes_are_unreadable(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(0).bytes(5000)))
    assert check_image(path, NO_SIZE_LIMIT).startswith("unreadable: ")


def test_2d_image(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "slice.nii.gz", _noise((64, 64)))
    assert check_image(path, NO_SIZE_LIMIT) == "not_3d: image has 2 dimensions"


def test_4d_multi_volume_image_and_trailing_singleton(tmp_path, write_nifti):
    series = write_nifti(tmp_path / "series.nii.gz", _noise((60, 60, 60, 5)))
    assert check_image(series, NO_SIZE_LIMIT) == "not_3d: 4D image with 5 volumes (split it into 3D files)"
    single = write_nifti(tmp_path / "single.nii.gz", _noise((60, 60, 60, 1)))
    assert check_image(single, NO_SIZE_LIMIT) is None


def test_nan_and_inf_voxels_are_counted(tmp_path, write_nifti):
    data = _noise((60, 60, 60))
    data.flat[[5, 77, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]] = np.nan
    data.flat[[11, 12, 13]] = [np.inf, -np.inf, np.inf]
    path = write_nifti(tmp_path / "nan.nii.gz", data)
    assert check_image(path, NO_SIZE_LIMIT) == "nan_inf: 15 NaN/Inf voxels"


def test_small_field_of_view_and_configurable_limit(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "slab.nii.gz", _noise((60, 60, 40)))
    assert check_image(path, NO_SIZE_LIMIT) == "small_fov: field of view 40.0 mm < 50 mm on axis 2"
    assert check_image(path, QualityThresholds(min_fov_mm=30, min_file_bytes=0)) is None


def test_field_of_view_uses_spacing(tmp_path, write_nifti):
    """25 voxels at 2 mm cover 50 mm, which passes; 24 voxels (48 mm) do not."""
    ok = write_nifti(tmp_path / "ok.nii.gz", _noise((25, 30, 30)), spacing=(2.0, 2.0, 2.0))
    short = write_nifti(tmp_path / "short.nii.gz", _noise((24, 30, 30)), spacing=(2.0, 2.0, 2.0))
    assert check_image(ok, NO_SIZE_LIMIT) is None
    assert check_image(short, NO_SIZE_LIMIT) == "small_fov: field of view 48.0 mm < 50 mm on axis 0"


def test_coarse_spacing_and_configurable_limit(tmp_path, write_nifti, lps_affine):
    path = write_nifti(tmp_path / "thick.nii.gz", _noise((16, 60, 60)), spacing=(7.0, 1.0, 1.0))
    assert check_image(path, NO_SIZE_LIMIT) == "coarse_spacing: spacing 7.0 mm > 6.5 mm on axis 0"
    assert check_image(path, QualityThresholds(max_spacing_mm=8.0, min_file_bytes=0)) is None
    # Spacing is read from the affine, so a flipped (LPS) axis still counts as 7 mm.
    flipped = write_nifti(tmp_path / "thick_lps.nii.gz", _noise((16, 60, 60)), affine=lps_affine((16, 60, 60), (7.0, 1.0, 1.0)))
    assert check_image(flipped, NO_SIZE_LIMIT) == "coarse_spacing: spacing 7.0 mm > 6.5 mm on axis 0"


def test_invalid_thresholds_are_rejected_with_fix():
    with pytest.raises(ValueError, match="min_fov_mm=-1"):
        QualityThresholds(min_fov_mm=-1)
    with pytest.raises(ValueError, match="QualityThresholds"):
        check_image("x.nii.gz", thresholds={"min_fov_mm": 10})
