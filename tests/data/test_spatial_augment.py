"""Spatial augmentation from image context: exact geometry on a linear ramp, label sampling, draw statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai.transforms import Resample

from custom_nets.data.spatial_augment import RandAffineCropd, crop_with_zeros, rotation_matrix

SIZE, PATCH, CENTRE = 96, 32, 48
SLOPES, OFFSET = np.array([0.3, -0.2, 0.5]), 100.0


def _ramp():
    """A 96^3 volume whose value is a known linear function of the voxel index (never 0 inside)."""
    z, y, x = torch.meshgrid(*[torch.arange(SIZE, dtype=torch.float32)] * 3, indexing="ij")
    return (SLOPES[0] * z + SLOPES[1] * y + SLOPES[2] * x + OFFSET)[None]


def _positions_about(matrix: np.ndarray, centre: int, patch: int) -> np.ndarray:
    """(3, patch, patch, patch) input voxel positions of the output voxels of a cube patch whose centre voxel is
    ``centre`` on every axis (start ``centre - patch // 2``), computed independently of the transform."""
    start = centre - patch // 2
    offsets = np.stack(np.meshgrid(*[np.arange(patch) - (patch - 1) / 2] * 3, indexing="ij")).reshape(3, -1)
    return (matrix @ offsets + start + (patch - 1) / 2).reshape(3, patch, patch, patch)


def _positions(matrix: np.ndarray) -> np.ndarray:
    return _positions_about(matrix, CENTRE, PATCH)


@pytest.mark.parametrize("mode", ["cubic", "bilinear"])
def test_rotated_scaled_patch_shows_image_context_up_to_its_corners(mode):
    image = _ramp()
    label = (torch.arange(SIZE) > CENTRE).float().view(1, SIZE, 1, 1).expand(1, SIZE, SIZE, SIZE)
    transform = RandAffineCropd(["image", "label"], [PATCH] * 3, mode=[mode, "label"], prob_rotation=1, prob_scaling=1)
    transform.set_random_state(0)
    for _ in range(4):
        out = transform({"image": image, "label": label, "patch_center": torch.tensor([CENTRE] * 3)})
        assert transform.angles != (0.0, 0.0, 0.0) and transform.scale != 1.0
        positions = _positions(transform.matrix)
        assert positions.min() > 0 and positions.max() < SIZE - 1  # the whole patch lies inside the volume
        expected = np.tensordot(SLOPES, positions, axes=1) + OFFSET
        got = out["image"][0].numpy()
        # every voxel, the 8 corners included, is the ramp at its rotated position: nothing replicated, nothing 0
        np.testing.assert_allclose(got, expected, atol=2e-3)
        corners = got[np.ix_([0, -1], [0, -1], [0, -1])]
        assert (corners != 0).all() and len(np.unique(corners.round(3))) == 8
        # a label half-space (class 1 beyond z = 48) interpolated linearly: the boundary sits at z = 48.5
        np.testing.assert_array_equal(out["label"][0].numpy(), positions[0] > CENTRE + 0.5)
        assert out["image"].shape == out["label"].shape == (1, PATCH, PATCH, PATCH)


def test_without_rotation_or_scaling_it_is_a_crop_with_zeros_outside():
    image = _ramp()
    transform = RandAffineCropd(["image"], [PATCH] * 3, prob_rotation=0, prob_scaling=0)
    out = transform({"image": image, "patch_center": torch.tensor([10, 48, 90])})["image"]
    # starts 10 - 16 = -6, 32, 74: six zero planes before z = 0, ten after x = 95
    assert torch.equal(out[:, 6:, :, :22], image[:, 0:26, 32:64, 74:96])
    assert (out[:, :6] == 0).all() and (out[:, :, :, 22:] == 0).all()


def test_missing_centre_means_the_image_centre_and_the_key_is_removed():
    image = _ramp()
    out = RandAffineCropd(["image"], [PATCH] * 3, prob_rotation=0, prob_scaling=0)({"image": image})
    assert torch.equal(out["image"], image[:, 32:64, 32:64, 32:64]) and "patch_center" not in out


def test_nearest_keeps_mask_values():
    mask = (torch.rand(1, 40, 40, 40, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    transform = RandAffineCropd(["mask"], [16] * 3, mode="nearest", prob_rotation=1, prob_scaling=1)
    transform.set_random_state(1)
    out = transform({"mask": mask})["mask"]
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_draws_follow_nnunets_probabilities_and_ranges():
    transform = RandAffineCropd(["image"], [PATCH] * 3)
    transform.set_random_state(2)
    angles, scales = [], []
    for _ in range(4000):
        transform.randomize()
        angles.append(transform.angles)
        scales.append(transform.scale)
    angles, scales = np.array(angles), np.array(scales)
    rotated, scaled = (angles != 0).any(1), scales != 1.0
    assert abs(rotated.mean() - 0.2) < 0.025 and abs(scaled.mean() - 0.2) < 0.025
    assert abs((rotated & scaled).mean() - 0.04) < 0.012  # drawn independently
    assert (angles[rotated] != 0).all()  # a rotation turns about all three axes
    assert np.abs(angles).max() <= math.pi / 6 and np.abs(angles[rotated]).max() > 0.51
    assert scales[scaled].min() >= 0.7 and scales[scaled].max() <= 1.4
    assert abs(scales[scaled].mean() - 1.05) < 0.03  # uniform on [0.7, 1.4]


def test_rotation_matrix_is_a_rotation():
    r = rotation_matrix([0.3, -0.5, 0.2])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    # a quarter turn about axis 0 maps axis 1 onto axis 2
    np.testing.assert_allclose(rotation_matrix([math.pi / 2, 0, 0]) @ [0, 1, 0], [0, 0, 1], atol=1e-12)


def test_crop_with_zeros_hand_example():
    image = torch.arange(1, 5, dtype=torch.float32).view(1, 1, 1, 4)
    out = crop_with_zeros(image, [0, 0, -1], [1, 1, 6])
    assert out.flatten().tolist() == [0, 1, 2, 3, 4, 0]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="'label' for"):
        RandAffineCropd(["image"], [8] * 3, mode="linear")
    with pytest.raises(ValueError, match="one entry per key"):
        RandAffineCropd(["image", "label"], [8] * 3, mode=["cubic"])
    with pytest.raises(ValueError, match="0.7, 1.4"):
        RandAffineCropd(["image"], [8] * 3, scale_range=(1.4, 0.7))


def test_label_sampling_is_the_argmax_of_linearly_resampled_indicators():
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, 4, (1, 24, 24, 24), generator=g).float()
    transform = RandAffineCropd(["label"], [12] * 3, mode="label", prob_rotation=1, prob_scaling=1)
    transform.set_random_state(4)
    out = transform({"label": label})["label"]
    # oracle: every class's one-hot channel resampled linearly at once (MONAI's Resample), then argmax
    positions = torch.as_tensor(_positions_about(transform.matrix, 12, 12)).float()
    grid = positions - (24 - 1) / 2.0  # MONAI's centred coordinates
    one_hot = torch.nn.functional.one_hot(label[0].long(), 4).movedim(-1, 0).float()
    expected = Resample(mode="bilinear", padding_mode="zeros")(one_hot, grid).argmax(0, keepdim=True)
    assert torch.equal(out.long(), torch.as_tensor(expected).long())
