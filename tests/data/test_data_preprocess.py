"""Preprocessing cache: geometry and intensity oracles, masks, case ids, exclusions, resumability."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from custom_nets.data import QualityThresholds, preprocess_dataset
from custom_nets.data.case_ids import case_ids_for

#: Small synthetic volumes are far below the real-data limits; only geometry matters here.
LOOSE = QualityThresholds(min_fov_mm=0.0, min_file_bytes=0)


def _run(entries, cache, **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("thresholds", LOOSE)
    return preprocess_dataset(entries, cache, **kwargs)


def _load(path):
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def _world(affine, index):
    return affine[:3, :3] @ np.asarray(index, dtype=float) + affine[:3, 3]


def test_lps_input_comes_out_ras_cropped_with_marker_in_place(tmp_path, write_nifti, lps_affine):
    shape = (20, 24, 28)
    data = np.zeros(shape, np.float32)
    data[2:18, 3:21, 4:24] = np.random.default_rng(0).uniform(50, 100, (16, 18, 20))
    data[4, 5, 6] = 1000.0  # marker, at LPS voxel (4, 5, 6)
    affine = lps_affine(shape)
    src = write_nifti(tmp_path / "in" / "lps.nii.gz", data, affine=affine)

    result = _run([{"image": src}], tmp_path / "cache")
    out, out_affine = _load(result["training"][0]["image"])

    assert nib.aff2axcodes(out_affine) == ("R", "A", "S")
    assert np.all(np.diag(out_affine)[:3] > 0)
    # Flipping x and y maps LPS voxel i to RAS voxel n-1-i: the box [2,18)x[3,21)x[4,24) stays
    # [2,18)x[3,21)x[4,24), so the crop has shape (16, 18, 20) and starts at (2, 3, 4).
    assert out.shape == (16, 18, 20)
    marker = np.unravel_index(np.argmax(out), out.shape)
    assert marker == (20 - 1 - 4 - 2, 24 - 1 - 5 - 3, 6 - 4)
    np.testing.assert_allclose(_world(out_affine, marker), _world(affine, (4, 5, 6)), atol=1e-4)


def test_crop_to_nonzero_box_and_zscore_over_nonzero_voxels(tmp_path, write_nifti):
    rng = np.random.default_rng(1)
    data = np.zeros((30, 30, 30), np.float32)
    data[5:15, 8:12, 3:20] = rng.uniform(100, 300, (10, 4, 17))
    data[9, 9, 9:12] = 0.0  # zero voxels inside the box must stay exactly zero
    data[2, 10, 10] = 40.0  # isolated voxels widen the box on x...
    data[12, 25, 5] = -7.0  # ...and a negative (non-zero) voxel widens it on y
    src = write_nifti(tmp_path / "box.nii.gz", data)

    out, _ = _load(_run([{"image": src}], tmp_path / "cache")["training"][0]["image"])

    nonzero = np.argwhere(data != 0)
    lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    assert tuple(lo) == (2, 8, 3) and tuple(hi) == (15, 26, 20)  # hand computation
    assert out.shape == tuple(hi - lo)
    cropped = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    values = cropped[cropped != 0]
    expected = np.where(cropped != 0, (cropped - values.mean()) / values.std(), 0.0)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert np.all(out[cropped == 0] == 0.0)
    assert abs(out[cropped != 0].mean()) < 1e-5 and out[cropped != 0].std() == pytest.approx(1.0, abs=1e-4)


def test_resampling_2mm_to_1mm_doubles_grid_and_interpolates_linearly(tmp_path, write_nifti):
    shape = (10, 12, 14)
    grid = np.indices(shape).astype(np.float32)
    ramp = 10.0 + grid[0] + 2.0 * grid[1] + 3.0 * grid[2]  # trilinear interpolation is exact on it
    src = write_nifti(tmp_path / "coarse.nii.gz", ramp, spacing=(2.0, 2.0, 2.0))

    out_path = _run([{"image": src}], tmp_path / "cache")["training"][0]["image"]
    out, out_affine = _load(out_path)

    assert all(abs(o - 2 * n) <= 1 for o, n in zip(out.shape, shape))
    np.testing.assert_allclose(nib.load(out_path).header.get_zooms(), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(out_affine[:3, :3], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(_world(out_affine, (0, 0, 0)), (0.0, 0.0, 0.0), atol=1e-4)
    # Oracle: z-scored ramp evaluated at the input-voxel coordinate of each output voxel centre.
    mean, std = ramp.mean(), ramp.std()
    input_index = np.indices(out.shape) / 2.0
    expected = (10.0 + input_index[0] + 2 * input_index[1] + 3 * input_index[2] - mean) / std
    inside = np.all(input_index <= (np.array(shape) - 1).reshape(3, 1, 1, 1), axis=0)
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-4)


def test_anonymization_mask_keeps_the_image_geometry(tmp_path, write_nifti, lps_affine):
    shape = (16, 18, 20)
    spacing = (2.0, 2.0, 2.0)
    affine = lps_affine(shape, spacing)
    image = np.zeros(shape, np.float32)
    image[1:15, 2:16, 3:18] = 100.0 + np.arange(14 * 14 * 15, dtype=np.float32).reshape(14, 14, 15) % 7
    mask = np.zeros(shape, np.uint8)
    mask[10:16, 0:6, 0:10] = 1  # partly outside the image's foreground box
    src = write_nifti(tmp_path / "img.nii.gz", image, affine=affine)
    msk = write_nifti(tmp_path / "img_mask.nii.gz", mask, affine=affine)

    entry = _run([{"image": src, "anonymization_mask": msk}], tmp_path / "cache")["training"][0]
    assert entry["anonymization_mask"].endswith(os.path.join("anonymization_masks", "img.nii.gz"))
    out_image, image_affine = _load(entry["image"])
    out_mask, mask_affine = _load(entry["anonymization_mask"])
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 1}
    assert out_mask.shape == out_image.shape
    np.testing.assert_allclose(mask_affine, image_affine)
    # Oracle: flip to RAS, crop to the image box, then nearest-neighbour upsampling x2 on a 1 mm grid.
    ras_mask = mask[::-1, ::-1, :]
    ras_image = image[::-1, ::-1, :]
    nz = np.argwhere(ras_image != 0)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    cropped = ras_mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    assert 0 < out_mask.sum()
    # every output voxel centre that lies exactly on an input voxel centre copies that voxel
    np.testing.assert_array_equal(out_mask[::2, ::2, ::2], cropped[: (out_mask.shape[0] + 1) // 2,
                                                                   : (out_mask.shape[1] + 1) // 2,
                                                                   : (out_mask.shape[2] + 1) // 2])


def test_mask_with_other_shape_or_missing_mask_is_excluded(tmp_path, write_nifti):
    src = write_nifti(tmp_path / "a.nii.gz", np.ones((10, 10, 10), np.float32))
    wrong = write_nifti(tmp_path / "a_mask.nii.gz", np.ones((10, 10, 9), np.uint8))
    other = write_nifti(tmp_path / "b.nii.gz", np.ones((10, 10, 10), np.float32))
    result = _run(
        [{"image": src, "anonymization_mask": wrong}, {"image": other, "anonymization_mask": str(tmp_path / "gone.nii.gz")}],
        tmp_path / "cache",
    )
    reasons = [e["reason"] for e in result["excluded"]]
    assert reasons[0].startswith("mask_mismatch: anonymization_mask has shape (10, 10, 9)")
    assert reasons[1].startswith("missing: anonymization_mask file not found")
    assert result["training"] == []


def test_multimodal_entry_is_stacked_and_normalised_per_channel(tmp_path, write_nifti):
    rng = np.random.default_rng(2)
    t1 = np.zeros((12, 12, 12), np.float32)
    t1[2:10, 2:10, 2:10] = rng.uniform(100, 200, (8, 8, 8))
    t2 = np.where(t1 != 0, 5000.0 - 3.0 * t1, 0.0).astype(np.float32)
    paths = [write_nifti(tmp_path / "t1" / "s.nii.gz", t1), write_nifti(tmp_path / "t2" / "s.nii.gz", t2)]
    out, _ = _load(_run([{"image": paths}], tmp_path / "cache")["training"][0]["image"])
    assert out.shape == (8, 8, 8, 2)
    for channel in range(2):
        assert abs(out[..., channel].mean()) < 1e-4 and out[..., channel].std() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(out[..., 1], -out[..., 0], atol=1e-4)  # t2 is a negative affine map of t1


@pytest.mark.parametrize("extra_axes", [(1,), (1, 1)])
def test_trailing_singleton_axes_are_dropped(tmp_path, write_nifti, extra_axes):
    data = np.random.default_rng(7).uniform(1, 2, (6, 7, 8)).astype(np.float32)
    src = write_nifti(tmp_path / "v.nii.gz", data.reshape(data.shape + extra_axes))
    out, _ = _load(_run([{"image": src}], tmp_path / "cache")["training"][0]["image"])
    np.testing.assert_allclose(out, (data - data.mean()) / data.std(), atol=1e-5)


def test_case_ids_are_unique_and_readable():
    assert case_ids_for(["/d/siteA/sub1/T1w.nii.gz", "/d/siteB/sub1/T1w.nii.gz", "/d/siteA/x.nii"]) == [
        "siteA__sub1__T1w", "siteB__sub1__T1w", "siteA__x"]
    assert case_ids_for(["/d/only.nii.gz"]) == ["only"]
    clashing = case_ids_for(["/d/a/y.nii", "/d/a/y.nii.gz", "/d/a__y.nii", "/d/A/Y.nii", "/d/b/z.nii"])
    assert len(set(clashing)) == 5 and clashing[-1] == "b__z"
    assert all(c.startswith(("a__y__", "A__Y__")) and len(c.split("__")[-1]) == 8 for c in clashing[:4])
    assert clashing == case_ids_for(["/d/a/y.nii", "/d/a/y.nii.gz", "/d/a__y.nii", "/d/A/Y.nii", "/d/b/z.nii"])


def test_nested_sources_get_distinct_cache_files(tmp_path, write_nifti):
    data = np.arange(1, 8 * 8 * 8 + 1, dtype=np.float32).reshape(8, 8, 8)
    sources = [write_nifti(tmp_path / d / "scan.nii.gz", data * (i + 1)) for i, d in enumerate(("x", "y/z"))]
    result = _run([{"image": s} for s in sources], tmp_path / "cache")
    names = sorted(os.path.basename(e["image"]) for e in result["training"])
    assert names == ["x__scan.nii.gz", "y__z__scan.nii.gz"]


def _write_mixed_set(root, write_nifti):
    rng = np.random.default_rng(3)
    good = [write_nifti(root / f"good{i}.nii.gz", rng.uniform(1, 2, (10, 11, 12)).astype(np.float32)) for i in range(3)]
    nan = rng.uniform(1, 2, (10, 11, 12)).astype(np.float32)
    nan[0, 0, :2] = np.nan
    bad_nan = write_nifti(root / "nan.nii.gz", nan)
    blob = open(good[0], "rb").read()
    truncated = root / "truncated.nii.gz"
    truncated.write_bytes(blob[: len(blob) // 2])
    empty = write_nifti(root / "empty.nii.gz", np.zeros((10, 11, 12), np.float32))
    return good, [bad_nan, str(truncated), empty]


def test_bad_files_do_not_stop_the_run_and_are_listed(tmp_path, write_nifti):
    good, bad = _write_mixed_set(tmp_path / "src", write_nifti)
    entries = [{"image": p} for p in (good[0], bad[0], good[1], bad[1], bad[2], good[2])]
    entries.append({"image": str(tmp_path / "src" / "missing.nii.gz")})
    result = _run(entries, tmp_path / "cache")

    assert [os.path.basename(e["image"]) for e in result["training"]] == ["good0.nii.gz", "good1.nii.gz", "good2.nii.gz"]
    codes = {os.path.basename(e["image"]): e["reason"].split(":")[0] for e in result["excluded"]}
    assert codes == {"nan.nii.gz": "nan_inf", "truncated.nii.gz": "unreadable", "empty.nii.gz": "empty",
                     "missing.nii.gz": "missing"}

    with open(tmp_path / "cache" / "excluded.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {os.path.basename(r["source"]): r["reason"].split(":")[0] for r in rows} == codes
    datalist = json.loads((tmp_path / "cache" / "datalist.json").read_text())
    assert result["datalist"] == str(tmp_path / "cache" / "datalist.json")
    assert [e["image"] for e in datalist["training"]] == [f"images/good{i}.nii.gz" for i in range(3)]
    assert not [n for n in os.listdir(tmp_path / "cache" / "images") if n.startswith(".")]


def _manifest_lines(cache):
    return [json.loads(line) for line in (cache / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_rerun_redoes_only_the_deleted_output(tmp_path, write_nifti):
    good, bad = _write_mixed_set(tmp_path / "src", write_nifti)
    entries = [{"image": p} for p in good + bad]
    cache = tmp_path / "cache"
    first = _run(entries, cache)
    assert len(_manifest_lines(cache)) == 6
    outputs = [e["image"] for e in first["training"]]
    stamps = {p: os.stat(p).st_mtime_ns for p in outputs}

    os.remove(outputs[1])
    second = _run(entries, cache)
    lines = _manifest_lines(cache)
    assert len(lines) == 7 and lines[-1]["source"] == good[1] and lines[-1]["status"] == "ok"
    assert os.path.isfile(outputs[1])
    assert [os.stat(p).st_mtime_ns for p in (outputs[0], outputs[2])] == [stamps[outputs[0]], stamps[outputs[2]]]
    assert second["training"] == first["training"] and second["excluded"] == first["excluded"]

    # A torn last line (crash while appending) is ignored; nothing else is redone.
    with open(cache / "manifest.jsonl", "a") as handle:
        handle.write('{"source": "/half')
    third = _run(entries, cache)
    assert third == first
    assert len(_manifest_lines_tolerant(cache)) == 7


def _manifest_lines_tolerant(cache):
    parsed = []
    for line in (cache / "manifest.jsonl").read_text().splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass
    return parsed


def test_constant_image_is_excluded_as_empty(tmp_path, write_nifti):
    src = write_nifti(tmp_path / "flat.nii.gz", np.full((8, 8, 8), 5.0, np.float32))
    reason = _run([{"image": src}], tmp_path / "cache")["excluded"][0]["reason"]
    assert reason == "empty: no non-zero voxels after normalisation (constant intensity)"


def test_rewritten_or_newly_appearing_sources_are_redone(tmp_path, write_nifti):
    rng = np.random.default_rng(6)
    first_path = write_nifti(tmp_path / "a.nii.gz", rng.uniform(1, 2, (8, 8, 8)).astype(np.float32))
    late_path = str(tmp_path / "late.nii.gz")
    entries = [{"image": first_path}, {"image": late_path}]
    cache = tmp_path / "cache"
    before = _run(entries, cache)
    assert [e["reason"] for e in before["excluded"]] == ["missing: file not found"]

    write_nifti(first_path, rng.uniform(5, 9, (8, 8, 9)).astype(np.float32))  # re-downloaded file
    write_nifti(late_path, rng.uniform(1, 2, (8, 8, 8)).astype(np.float32))  # file that was missing
    after = _run(entries, cache)
    assert [json.loads(line)["source"] for line in (cache / "manifest.jsonl").read_text().splitlines()[2:]] == [
        first_path, late_path]
    assert after["excluded"] == [] and len(after["training"]) == 2
    assert _load(after["training"][0]["image"])[0].shape == (8, 8, 9)


def test_changed_inputs_are_redone(tmp_path, write_nifti):
    src = write_nifti(tmp_path / "a.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8))
    cache = tmp_path / "cache"
    _run([{"image": src}], cache)
    mask = write_nifti(tmp_path / "a_mask.nii.gz", np.ones((8, 8, 8), np.uint8))
    result = _run([{"image": src, "anonymization_mask": mask}], cache)
    assert len(_manifest_lines(cache)) == 2
    assert os.path.isfile(result["training"][0]["anonymization_mask"])


def test_changed_settings_raise_a_clear_error(tmp_path, write_nifti):
    src = write_nifti(tmp_path / "a.nii.gz", np.ones((8, 8, 8), np.float32))
    cache = tmp_path / "cache"
    _run([{"image": src}], cache)
    with pytest.raises(ValueError) as info:
        _run([{"image": src}], cache, target_spacing=(2.0, 2.0, 2.0))
    message = str(info.value)
    assert "target_spacing" in message and "[1.0, 1.0, 1.0]" in message and "[2.0, 2.0, 2.0]" in message
    assert "choose a new cache_dir" in message and "delete the old cache folder" in message


def test_parallel_workers_match_in_process_results(tmp_path, write_nifti, lps_affine):
    rng = np.random.default_rng(4)
    sources = []
    for i in range(3):
        data = np.zeros((12, 14, 16), np.float32)
        data[1:11, 2:12, 3:15] = rng.uniform(10, 20, (10, 10, 12))
        sources.append(write_nifti(tmp_path / "src" / f"s{i}.nii.gz", data, affine=lps_affine(data.shape, (1.5, 1.0, 2.0))))
    blob = open(sources[0], "rb").read()
    (tmp_path / "src" / "broken.nii.gz").write_bytes(blob[: len(blob) // 2])
    entries = [{"image": s} for s in sources] + [{"image": str(tmp_path / "src" / "broken.nii.gz")}]

    serial = _run(entries, tmp_path / "serial", num_workers=0)
    parallel = _run(entries, tmp_path / "parallel", num_workers=2)

    assert [e["reason"].split(":")[0] for e in parallel["excluded"]] == ["unreadable"]
    assert len(parallel["training"]) == len(serial["training"]) == 3
    for a, b in zip(serial["training"], parallel["training"]):
        data_a, affine_a = _load(a["image"])
        data_b, affine_b = _load(b["image"])
        assert data_a.tobytes() == data_b.tobytes()
        np.testing.assert_array_equal(affine_a, affine_b)
    assert len(_manifest_lines(tmp_path / "parallel")) == 4


def _write_metaimage(path, data, spacing):
    """Hand-written uncompressed MetaImage (.mha): LPS world frame, identity direction, x fastest."""
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "CompressedData = False", "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0",
        "ElementSpacing = " + " ".join(str(s) for s in spacing),
        "DimSize = " + " ".join(str(n) for n in data.shape),
        "ElementType = MET_FLOAT", "ElementDataFile = LOCAL",
    ]) + "\n"
    path.write_bytes(header.encode() + np.ascontiguousarray(data.astype("<f4").transpose(2, 1, 0)).tobytes())
    return str(path)


@pytest.mark.slow
def test_non_nifti_input_is_read_with_itk(tmp_path):
    """ITK import is slow (seconds), hence the marker; the geometry oracle is the LPS->RAS rule."""
    pytest.importorskip("itk")
    data = np.random.default_rng(5).uniform(10, 20, (30, 52, 40)).astype(np.float32)
    data[3, 4, 5] = 500.0
    src = _write_metaimage(tmp_path / "scan.mha", data, (2.0, 1.0, 1.5))
    result = _run([{"image": src}], tmp_path / "cache", target_spacing=(2.0, 1.0, 1.5),
                  thresholds=QualityThresholds(min_file_bytes=0))
    assert result["excluded"] == []
    out, affine = _load(result["training"][0]["image"])
    assert out.shape == data.shape and nib.aff2axcodes(affine) == ("R", "A", "S")
    marker = np.unravel_index(np.argmax(out), out.shape)
    # ITK's LPS point (6, 4, 7.5) mm is (-6, -4, 7.5) mm in the NIfTI (RAS) world frame.
    np.testing.assert_allclose(_world(affine, marker), (-6.0, -4.0, 7.5), atol=1e-4)
