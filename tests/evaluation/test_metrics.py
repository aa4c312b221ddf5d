"""DSC / NSD against hand-computed values and slow oracles; NIfTI case and folder evaluation end to end.

Hand values used below (a cube of 4^3 voxels shifted by one voxel along one axis):
* each cube has 4^3 - 2^3 = 56 surface voxels;
* 36 surface voxels are shared (the 12 ring positions of the 4x4 cross-section, in the 3 slices
  where both cubes overlap), so at tolerance 0 NSD = (36 + 36) / (56 + 56) = 9/14;
* with spacing 3 mm along the shift and 1 mm across it, a tolerance of 2 mm (or 1 mm) also
  accepts the 4 voxels in the middle of each inner end face (a ring voxel 1 mm away in the
  same slice) but not the 16 voxels of the outer end face (3 mm away): NSD = (40 + 40) / 112 = 5/7;
* DSC of the two cubes = 2 * 48 / (64 + 64) = 3/4.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_nets.evaluation import (
    binary_dice,
    binary_nsd,
    bounded_distance_map,
    dice_per_class,
    evaluate_case,
    evaluate_folder,
    nearest_distances,
    normalise_labels,
    nsd_per_class,
    resolve_tolerances,
    surface_points_mm,
    surface_voxels,
)
from custom_nets.evaluation.metrics import TOLERANCE_ROUNDING_MM

SHIFT_TOL0 = 9 / 14
SHIFT_ANISO = 5 / 7


def cube(shape=(10, 10, 10), start=(2, 2, 2), size=4, value=1) -> torch.Tensor:
    volume = torch.zeros(shape, dtype=torch.long)
    volume[tuple(slice(s, s + size) for s in start)] = value
    return volume


def shifted(volume: torch.Tensor, axis: int, voxels: int = 1) -> torch.Tensor:
    return torch.roll(volume, voxels, dims=axis)


def random_label_map(generator: torch.Generator, shape, num_classes: int, threshold: float = 0.5) -> torch.Tensor:
    """Smooth random blobs: each class wins where its smoothed noise is highest and above threshold."""
    noise = F.avg_pool3d(torch.rand((1, num_classes - 1, *shape), generator=generator), 5, 1, 2)[0]
    best, index = noise.max(dim=0)
    return torch.where(best > threshold, index + 1, 0)


# ----------------------------------------------------------------------------------------- DSC


def test_dice_two_boxes_hand_value():
    a = torch.zeros(8, 8, 8, dtype=torch.long)
    b = torch.zeros_like(a)
    a[0:4, 0:4, 0:4] = 1  # 64 voxels
    b[2:5, 0:4, 0:2] = 1  # 24 voxels, 16 of them inside a
    assert binary_dice(a, b) == pytest.approx(2 * 16 / (64 + 24))
    assert dice_per_class(a, b, num_classes=2).tolist() == pytest.approx([4 / 11])


def test_dice_per_class_multi_class_and_background():
    label = cube() + cube(start=(7, 7, 7), size=2, value=2)
    pred = shifted(cube(), 0) + cube(start=(7, 7, 7), size=2, value=2)  # the two classes never touch
    assert dice_per_class(pred, label, num_classes=3).tolist() == pytest.approx([0.75, 1.0])
    # background: 1000 - 72 voxels in each map, of which 1000 - (64 + 16 + 8) are shared
    background = 2 * (1000 - 88) / (2 * (1000 - 72))
    with_background = dice_per_class(pred, label, num_classes=3, include_background=True)
    assert with_background.tolist() == pytest.approx([background, 0.75, 1.0])


def test_dice_empty_class_conventions():
    empty = torch.zeros(6, 6, 6, dtype=torch.long)
    full = cube(shape=(6, 6, 6), start=(1, 1, 1), size=2)
    assert math.isnan(binary_dice(empty, empty))
    assert binary_dice(empty, full) == 0.0  # prediction empty, reference not
    assert binary_dice(full, empty) == 0.0  # false positive only
    values = dice_per_class(full, full, num_classes=3)
    assert values[0] == 1.0 and math.isnan(values[1])


def test_dice_rejects_probabilities_and_out_of_range_values():
    label = cube()
    with pytest.raises(ValueError, match="non-integer"):
        dice_per_class(label.float() * 0.5, label, num_classes=2)
    with pytest.raises(ValueError, match="num_classes=2"):
        dice_per_class(label * 2, label, num_classes=2)
    with pytest.raises(ValueError, match="shape"):
        dice_per_class(label[:-1], label, num_classes=2)


# ----------------------------------------------------------------------------------------- NSD


def test_nsd_identical_masks_is_one():
    label = cube() + cube(start=(7, 7, 7), size=2, value=2)
    assert nsd_per_class(label, label, 3, (1.0, 1.0, 1.0), 0.0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("tolerance, expected", [(0.0, SHIFT_TOL0), (0.99, SHIFT_TOL0), (1.0, 1.0), (2.5, 1.0)])
def test_nsd_cube_shifted_by_one_voxel(axis, tolerance, expected):
    label = cube()
    assert binary_nsd(shifted(label, axis), label, (1.0, 1.0, 1.0), tolerance) == pytest.approx(expected)


def test_nsd_anisotropic_spacing_matters():
    label = cube()
    spacing = (3.0, 1.0, 1.0)
    # one voxel along the 3 mm axis is 3 mm: the outer end faces fail a 2 mm tolerance
    assert binary_nsd(shifted(label, 0), label, spacing, 2.0) == pytest.approx(SHIFT_ANISO)
    assert binary_nsd(shifted(label, 0), label, spacing, 0.0) == pytest.approx(SHIFT_TOL0)
    assert binary_nsd(shifted(label, 0), label, spacing, 3.0) == 1.0
    # the same one-voxel shift along a 1 mm axis passes
    assert binary_nsd(shifted(label, 1), label, spacing, 2.0) == 1.0
    assert binary_nsd(shifted(label, 2), label, spacing, 2.0) == 1.0


def test_nsd_float32_spacing_does_not_flip_a_boundary_tie():
    label = cube()
    spacing = tuple(float(np.float32(0.8)) for _ in range(3))  # 0.800000011920929 mm, as in a NIfTI header
    assert spacing[0] > 0.8
    assert binary_nsd(shifted(label, 0), label, spacing, 0.8) == 1.0


def test_nsd_per_class_tolerance():
    label = cube() + cube(start=(7, 7, 7), size=2, value=2)
    pred = torch.where(label == 1, 0, label) + shifted(cube(), 0, 2)  # class 1 moved by 2 voxels
    values = nsd_per_class(pred, label, 3, (1.0, 1.0, 1.0), [2.0, 0.0])
    assert values.tolist() == [1.0, 1.0]
    strict = nsd_per_class(pred, label, 3, (1.0, 1.0, 1.0), [1.0, 0.0])
    assert strict[0] < 1.0 and strict[1] == 1.0
    with pytest.raises(ValueError, match="one tolerance in mm per class"):
        nsd_per_class(pred, label, 3, (1.0, 1.0, 1.0), [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        nsd_per_class(pred, label, 3, (1.0, 1.0, 1.0), -1.0)
    with pytest.raises(ValueError, match="spacing_mm"):
        nsd_per_class(pred, label, 3, (1.0, 0.0, 1.0), 1.0)


def test_nsd_empty_class_conventions():
    empty = torch.zeros(6, 6, 6, dtype=torch.long)
    full = cube(shape=(6, 6, 6), start=(1, 1, 1), size=2)
    assert math.isnan(binary_nsd(empty, empty, (1.0, 1.0, 1.0), 2.0))
    assert binary_nsd(empty, full, (1.0, 1.0, 1.0), 100.0) == 0.0
    assert binary_nsd(full, empty, (1.0, 1.0, 1.0), 100.0) == 0.0


def _slow_surface(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask, dtype=bool)
    for index in zip(*np.nonzero(mask)):
        for axis, step in itertools.product(range(3), (-1, 1)):
            neighbour = list(index)
            neighbour[axis] += step
            inside = all(0 <= n < s for n, s in zip(neighbour, mask.shape))
            if not inside or not mask[tuple(neighbour)]:
                out[index] = True
    return out


def _slow_nsd(pred: np.ndarray, label: np.ndarray, spacing, tolerance) -> float:
    surfaces = [np.argwhere(_slow_surface(m)) * np.asarray(spacing) for m in (pred, label)]
    if sum(len(s) for s in surfaces) == 0:
        return math.nan
    if min(len(s) for s in surfaces) == 0:
        return 0.0
    a, b = surfaces
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    # same rounding guard as binary_nsd: 1.7 mm = sqrt(1.5^2 + 0.8^2) is a tie below
    bound = tolerance + TOLERANCE_ROUNDING_MM
    good = (distances.min(1) <= bound).sum() + (distances.min(0) <= bound).sum()
    return good / (len(a) + len(b))


def test_nsd_matches_slow_oracle_on_random_blobs():
    generator = torch.Generator().manual_seed(0)
    spacing = (1.5, 0.8, 2.0)
    for _ in range(3):
        pred = random_label_map(generator, (10, 12, 9), 3)
        label = random_label_map(generator, (10, 12, 9), 3)
        for value, tolerance in ((1, 1.0), (2, 1.7)):
            expected = _slow_nsd((pred == value).numpy(), (label == value).numpy(), spacing, tolerance)
            assert binary_nsd(pred == value, label == value, spacing, tolerance) == pytest.approx(expected)


def test_surface_voxels_match_slow_oracle_including_volume_border():
    generator = torch.Generator().manual_seed(1)
    mask = random_label_map(generator, (7, 8, 6), 2, threshold=0.45) > 0
    mask[0, :, :] = True  # touches the volume border
    assert np.array_equal(surface_voxels(mask).numpy(), _slow_surface(mask.numpy()))


def test_surface_points_of_a_cube_in_mm():
    points = surface_points_mm(cube(), (3.0, 1.0, 0.5))
    assert points.shape == (56, 3)  # 4^3 - 2^3
    assert points.min(0).values.tolist() == [6.0, 2.0, 1.0] and points.max(0).values.tolist() == [15.0, 5.0, 2.5]
    assert surface_points_mm(torch.zeros(3, 3, 3), (1.0, 1.0, 1.0)).shape == (0, 3)


def test_bounded_distance_map_is_exact_within_the_bound():
    generator = torch.Generator().manual_seed(2)
    features = torch.rand((9, 11, 7), generator=generator) > 0.97
    spacing = (2.0, 0.7, 1.3)
    bound = 2.65  # not a possible distance, so float32 rounding cannot move a point across it
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in features.shape], indexing="ij"), -1).reshape(-1, 3)
    points = grid.double() * torch.tensor(spacing, dtype=torch.float64)
    exact = nearest_distances(points, points[features.reshape(-1)], chunk_size=37).reshape(features.shape)
    bounded = bounded_distance_map(features, spacing, bound)
    within = exact <= bound
    assert 0 < int(within.sum()) < within.numel()
    assert torch.allclose(bounded[within].double(), exact[within], atol=1e-5)
    assert torch.isinf(bounded[~within]).all()
    assert torch.isinf(bounded_distance_map(torch.zeros(3, 3, 3), spacing, bound)).all()


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")
def test_nsd_agrees_with_monai_surface_dice_when_scipy_is_available():
    pytest.importorskip("scipy")
    from monai.metrics import compute_surface_dice

    generator = torch.Generator().manual_seed(3)
    spacing = (1.5, 0.8, 2.0)
    pred = random_label_map(generator, (16, 18, 12), 3)
    label = random_label_map(generator, (16, 18, 12), 3)

    def one_hot(x):
        return F.one_hot(x, 3).permute(3, 0, 1, 2)[None].float()

    expected = compute_surface_dice(one_hot(pred), one_hot(label), [1.0, 2.2], spacing=spacing)[0]
    ours = nsd_per_class(pred, label, 3, spacing, [1.0, 2.2])  # no ties at these tolerances
    assert ours.tolist() == pytest.approx(expected.tolist())


def test_nsd_needs_no_scipy(monkeypatch):
    import monai.metrics.utils as monai_metric_utils

    def unavailable(*args, **kwargs):
        raise AssertionError("SciPy-based MONAI helper was called")

    for name in ("scipy", "scipy.ndimage", "scipy.spatial"):
        monkeypatch.setitem(sys.modules, name, None)  # `import scipy` now raises ImportError
    for name in ("binary_erosion", "distance_transform_edt", "distance_transform_cdt", "KDTree"):
        monkeypatch.setattr(monai_metric_utils, name, unavailable, raising=False)  # KDTree: monai>=1.6 only
    label = cube()
    assert binary_nsd(shifted(label, 0), label, (1.0, 1.0, 1.0), 0.0) == pytest.approx(SHIFT_TOL0)
    assert dice_per_class(shifted(label, 0), label, 2).tolist() == [0.75]


# -------------------------------------------------------------------------- NIfTI cases, folders


def save(path, volume: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(volume.numpy().astype(np.uint8), affine), str(path))
    return str(path)


LABELS = {1: "liver", 2: "tumour"}
TUMOUR = dict(start=(6, 6, 6), size=2, value=2)


@pytest.fixture
def three_cases(tmp_path):
    """case_a: perfect liver, no tumour anywhere; case_b: liver shifted by one voxel, tumour missed;
    case_c: perfect liver, a false-positive tumour."""
    liver = cube(start=(1, 1, 1))
    references = {
        "case_a": liver,
        "case_b": liver + cube(**TUMOUR),
        "case_c": liver,
    }
    predictions = {
        "case_a": liver,
        "case_b": shifted(liver, 0),
        "case_c": liver + cube(**TUMOUR),
    }
    entries = []
    for case, volume in references.items():
        entries.append({"image": str(tmp_path / "images" / f"{case}.nii.gz"),
                        "label": save(tmp_path / "labels" / f"{case}.nii.gz", volume)})
        save(tmp_path / "pred" / case / f"{case}_seg.nii.gz", predictions[case])
    return tmp_path, entries


def test_evaluate_case_reads_spacing_from_the_label_header(tmp_path):
    label = cube()
    label_path = save(tmp_path / "label.nii.gz", label, spacing=(3.0, 1.0, 1.0))
    pred_path = save(tmp_path / "pred.nii.gz", shifted(label, 0), spacing=(3.0, 1.0, 1.0))
    result = evaluate_case(pred_path, label_path, {1: "organ"}, tolerance_mm=2.0)
    assert result["case"] == "label"
    assert result["dsc"]["organ"] == pytest.approx(0.75)
    assert result["nsd"]["organ"] == pytest.approx(SHIFT_ANISO)


def test_evaluate_case_geometry_mismatch_names_both_files(tmp_path):
    label_path = save(tmp_path / "label_x.nii.gz", cube())
    moved = save(tmp_path / "pred_affine.nii.gz", cube(), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(ValueError) as error:
        evaluate_case(moved, label_path, LABELS)
    message = str(error.value)
    assert "pred_affine.nii.gz" in message and "label_x.nii.gz" in message
    assert "spacing (2, 1, 1)" in message and "spacing (1, 1, 1)" in message
    cropped = save(tmp_path / "pred_shape.nii.gz", cube()[:-1])
    with pytest.raises(ValueError, match=r"(?s)pred_shape\.nii\.gz.*label_x\.nii\.gz.*shape \(9, 10, 10\)"):
        evaluate_case(cropped, label_path, LABELS)


def test_evaluate_case_rejects_probability_maps(tmp_path):
    label_path = save(tmp_path / "label.nii.gz", cube())
    probabilities = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.full((10, 10, 10), 0.3, dtype=np.float32), np.eye(4)), str(probabilities))
    with pytest.raises(ValueError, match="prob.nii.gz.*non-integer"):
        evaluate_case(probabilities, label_path, LABELS)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_folder_end_to_end(three_cases):
    root, entries = three_cases
    tolerances = {"liver": 0.5, "tumour": 2.0}
    summary = evaluate_folder(root / "pred", entries, LABELS, tolerances, root / "out", prediction_postfix="_seg")

    rows = _read_csv(root / "out" / "metrics_per_case.csv")
    table = {(r["case"], r["class"]): (float(r["dsc"]), float(r["nsd"])) for r in rows}
    assert len(rows) == 6
    assert table[("case_a", "liver")] == (1.0, 1.0)
    assert all(math.isnan(v) for v in table[("case_a", "tumour")])
    assert table[("case_b", "liver")] == pytest.approx((0.75, SHIFT_TOL0))  # 0.5 mm < one 1 mm voxel
    assert table[("case_b", "tumour")] == (0.0, 0.0)  # missed
    assert table[("case_c", "liver")] == (1.0, 1.0)
    assert table[("case_c", "tumour")] == (0.0, 0.0)  # false positive

    written = json.loads((root / "out" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    liver, tumour = written["per_class"]["liver"], written["per_class"]["tumour"]
    assert liver["dsc"]["mean"] == pytest.approx((1 + 0.75 + 1) / 3)
    assert liver["dsc"]["median"] == 1.0
    assert liver["dsc"]["std"] == pytest.approx(statistics.pstdev([1, 0.75, 1]))
    assert liver["nsd"]["mean"] == pytest.approx((2 + SHIFT_TOL0) / 3)
    assert tumour["dsc"] == {"mean": 0.0, "median": 0.0, "std": 0.0, "n": 2, "n_nan": 1}
    assert written["mean_dsc"] == pytest.approx(((1 + 0.75 + 1) / 3 + 0.0) / 2)
    assert written["mean_nsd"] == pytest.approx(((2 + SHIFT_TOL0) / 3 + 0.0) / 2)
    assert written["n_cases"] == 3 and written["n_missing"] == 0
    assert written["n_nan"] == {"dsc": 1, "nsd": 1}
    assert written["tolerance_mm"] == tolerances

    summary_rows = _read_csv(root / "out" / "summary.csv")
    assert [r["class"] for r in summary_rows] == ["liver", "tumour", "mean"]
    assert float(summary_rows[0]["dsc_mean"]) == pytest.approx(liver["dsc"]["mean"])
    assert summary_rows[1]["dsc_n_nan"] == "1"
    assert float(summary_rows[2]["nsd_mean"]) == pytest.approx(written["mean_nsd"])
    assert not [p for p in (root / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_evaluate_folder_missing_predictions(three_cases):
    root, entries = three_cases
    (root / "pred" / "case_b" / "case_b_seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 cases.*case_b"):
        evaluate_folder(root / "pred", entries, LABELS, 2.0, root / "out", prediction_postfix="_seg")
    summary = evaluate_folder(
        root / "pred", root / "labels", LABELS, 2.0, root / "out", allow_missing=True, prediction_postfix="_seg"
    )
    assert summary["missing_cases"] == ["case_b"] and summary["n_missing"] == 1
    table = {(r["case"], r["class"]): r for r in _read_csv(root / "out" / "metrics_per_case.csv")}
    assert (table[("case_b", "liver")]["dsc"], table[("case_b", "tumour")]["nsd"]) == ("0.0", "0.0")
    assert summary["per_class"]["liver"]["dsc"]["mean"] == pytest.approx(2 / 3)


def test_evaluate_folder_without_postfix_finds_no_predictions(three_cases):
    root, entries = three_cases
    with pytest.raises(FileNotFoundError, match="prediction_postfix"):
        evaluate_folder(root / "pred", entries, LABELS, 2.0, root / "out")


def test_labels_and_tolerances_are_normalised():
    assert normalise_labels({"background": 0, "liver": 1, "tumour": 2}) == LABELS  # nnU-Net dataset.json
    assert normalise_labels({"1": "liver", "2": "tumour"}) == LABELS  # JSON keys
    with pytest.raises(ValueError, match="same class name"):
        normalise_labels({1: "liver", 2: "liver"})
    with pytest.raises(ValueError, match="only the background"):
        normalise_labels({0: "background"})
    assert resolve_tolerances(2.0, LABELS) == {"liver": 2.0, "tumour": 2.0}
    assert resolve_tolerances({"liver": 1, 2: 3}, LABELS) == {"liver": 1.0, "tumour": 3.0}
    with pytest.raises(ValueError, match=r"no value for classes \['tumour'\]"):
        resolve_tolerances({"liver": 1.0}, LABELS)
    with pytest.raises(ValueError, match="'spleen', which is not a scored class"):
        resolve_tolerances({"liver": 1.0, "tumour": 1.0, "spleen": 1.0}, LABELS)
