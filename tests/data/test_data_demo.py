"""Synthetic demo volumes and dataset: determinism, anatomy sanity, file layout and size."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from custom_nets.data import make_demo_volume, write_demo_dataset

SMALL = (40, 48, 40)


def test_same_seed_gives_identical_arrays_and_seeds_differ():
    first, affine = make_demo_volume(3, shape=SMALL)
    again, affine_again = make_demo_volume(3, shape=SMALL)
    other, _ = make_demo_volume(4, shape=SMALL)
    assert first.dtype == np.int16 and first.shape == SMALL
    assert first.tobytes() == again.tobytes()
    np.testing.assert_array_equal(affine, affine_again)
    assert not np.array_equal(first, other)


def test_affine_is_ras_with_given_spacing_and_centred():
    volume, affine = make_demo_volume(0, shape=SMALL, spacing=(1.2, 1.0, 1.5))
    np.testing.assert_allclose(np.diag(affine)[:3], [1.2, 1.0, 1.5])
    centre_voxel = (np.array(SMALL) - 1) / 2.0
    np.testing.assert_allclose(affine[:3, :3] @ centre_voxel + affine[:3, 3], 0.0, atol=1e-9)


def test_head_on_zero_background_with_scanner_range():
    volume, _ = make_demo_volume(0, shape=SMALL)
    foreground = volume > 0
    assert 0.2 < foreground.mean() < 0.6  # an ellipsoid filling most of the box
    corners = volume[[0, 0, -1, -1], [0, -1, 0, -1], [0, -1, -1, 0]]
    np.testing.assert_array_equal(corners, 0)
    assert volume[0].max() == 0 and volume[:, :, -1].max() == 0  # the head never touches the border
    assert volume[tuple(s // 2 for s in SMALL)] > 0
    assert 800 < volume.max() < 2000 and volume.min() == 0


def test_contrast_alternates_between_t1_and_t2_like():
    """Inside the brain (inner half of the box), white matter dominates; it is close to the
    brightest tissue in T1-like volumes (even seeds) and far below the bright fluid in T2-like
    volumes (odd seeds)."""
    for seed in (0, 1, 2, 3):
        volume, _ = make_demo_volume(seed)
        size = np.array(volume.shape, dtype=float)
        grid = np.indices(volume.shape).astype(float)
        radius = np.sqrt(sum(((grid[a] - (size[a] - 1) / 2) / (size[a] / 2)) ** 2 for a in range(3)))
        ratio = np.median(volume[radius < 0.5]) / np.percentile(volume[volume > 0], 99)
        if seed % 2 == 0:
            assert ratio > 0.6, (seed, ratio)
        else:
            assert ratio < 0.5, (seed, ratio)


def test_invalid_shape_is_rejected_with_fix():
    with pytest.raises(ValueError, match="shape=\\(80, 96, 80\\)"):
        make_demo_volume(0, shape=(8, 8))


def test_demo_dataset_layout_geometry_size_and_idempotence(tmp_path):
    datalist_path = write_demo_dataset(tmp_path / "demo", num_images=4, seed=0)
    assert datalist_path == str(tmp_path / "demo" / "datalist.json")
    datalist = json.loads(open(datalist_path).read())
    names = [e["image"] for e in datalist["training"]]
    assert names == [f"imagesTr/demo_{i:03d}.nii.gz" for i in range(4)]
    assert datalist["name"]

    files = [tmp_path / "demo" / n for n in names]
    for path in files:
        assert os.path.getsize(path) > 200_000, f"{path} would be dropped by the 200 kB quality filter"
    headers = [nib.load(str(p)) for p in files]
    assert [nib.aff2axcodes(h.affine) for h in headers] == [("R", "A", "S")] * 2 + [("L", "P", "S")] * 2
    np.testing.assert_allclose(headers[1].header.get_zooms(), (1.2, 1.0, 1.5))
    np.testing.assert_allclose(headers[2].header.get_zooms(), (1.0, 1.0, 1.0))

    # The LPS file holds the same world-space image as the RAS rendering of its seed.
    expected, expected_affine = make_demo_volume(2)
    canonical = nib.as_closest_canonical(headers[2])
    np.testing.assert_array_equal(np.asarray(canonical.dataobj), expected)
    np.testing.assert_allclose(canonical.affine, expected_affine, atol=1e-5)

    mtimes = [os.stat(p).st_mtime_ns for p in files + [datalist_path]]
    assert write_demo_dataset(tmp_path / "demo", num_images=4, seed=0) == datalist_path
    assert [os.stat(p).st_mtime_ns for p in files + [datalist_path]] == mtimes
    assert not [n for n in os.listdir(tmp_path / "demo" / "imagesTr") if n.startswith(".")]


def test_demo_dataset_is_rewritten_for_another_seed(tmp_path):
    path = tmp_path / "demo" / "imagesTr" / "demo_000.nii.gz"
    write_demo_dataset(tmp_path / "demo", num_images=1, seed=0, shape=SMALL)
    first = np.asarray(nib.load(str(path)).dataobj)
    write_demo_dataset(tmp_path / "demo", num_images=1, seed=1, shape=SMALL)
    np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), make_demo_volume(1000, shape=SMALL)[0])
    assert not np.array_equal(first, make_demo_volume(1000, shape=SMALL)[0])


def test_demo_dataset_is_deterministic_across_folders(tmp_path):
    write_demo_dataset(tmp_path / "a", num_images=2, seed=5, shape=SMALL)
    write_demo_dataset(tmp_path / "b", num_images=2, seed=5, shape=SMALL)
    for i in range(2):
        name = f"imagesTr/demo_{i:03d}.nii.gz"
        a = np.asarray(nib.load(str(tmp_path / "a" / name)).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "b" / name)).dataobj)
        assert a.tobytes() == b.tobytes()
