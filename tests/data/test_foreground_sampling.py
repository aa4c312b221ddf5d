"""nnU-Net's foreground oversampling: forced batch positions, and where forced and random patches are centred."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from custom_nets.data.foreground_sampling import ForegroundOversampledDataset, RandPatchCenterd, forced_foreground


@pytest.mark.parametrize(
    "batch_size, expected",
    [
        (1, [False]),  # round(0.67) = 1 random position: nnU-Net forces nothing at batch 1
        (2, [False, True]),  # round(1.34) = 1
        (3, [False, False, True]),  # round(2.01) = 2
        (4, [False, False, False, True]),  # round(2.68) = 3
        (5, [False, False, False, True, True]),  # round(3.35) = 3
        (6, [False] * 4 + [True] * 2),  # round(4.02) = 4
    ],
)
def test_forced_positions_follow_nnunets_rounding(batch_size, expected):
    assert forced_foreground(batch_size, 0.33) == expected


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="batch_size"):
        forced_foreground(0)
    with pytest.raises(ValueError, match="0.33"):
        forced_foreground(2, 1.5)


# A 16^3 case with 8^3 patches: patch starts 0..8, centres 4..12 (9 per axis). Foreground fills z in 4..6 over
# the whole valid y/x range, so a random centre lands on it with probability 3/9 = 1/3.
SHAPE, PATCH = (16, 16, 16), (8, 8, 8)
RANDOM_HIT = 1 / 3


def _case():
    label = torch.zeros(1, *SHAPE)
    label[0, 4:7] = 1
    return {"image": torch.zeros(1, *SHAPE), "label": label}


def _centre_on_foreground(data):
    z, y, x = data["patch_center"].tolist()
    return bool(data["label"][0, z, y, x] > 0)


class _Hits:
    """Transform that replaces a sample by whether its patch centre is a foreground voxel."""

    def __call__(self, data):
        return torch.tensor(float(_centre_on_foreground(data)))


@pytest.mark.parametrize("batch_size", [2, 6])
def test_share_of_foreground_centred_patches_per_batch_position(batch_size):
    centre = RandPatchCenterd(PATCH, label_key="label")
    centre.set_random_state(0)
    dataset = ForegroundOversampledDataset([_case()] * 4, transform=lambda d: _Hits()(centre(d)))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=300 * batch_size)  # the bundle's
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)
    batches = torch.stack(list(loader))  # (300 batches, batch_size)
    forced = torch.tensor(forced_foreground(batch_size))
    assert batches[:, forced].eq(1).all()  # forced positions always sit on the foreground
    share = batches[:, ~forced].mean().item()  # random positions: the foreground's share of the valid centres
    draws = batches[:, ~forced].numel()
    assert abs(share - RANDOM_HIT) < 4 * np.sqrt(RANDOM_HIT * (1 - RANDOM_HIT) / draws), share
    expected = forced.sum().item() + (~forced).sum().item() * RANDOM_HIT  # 1.33 of 2, 3.33 of 6
    assert batches.sum(1).mean().item() == pytest.approx(expected, abs=0.15)


def test_indexing_one_sample_forces_nothing():
    dataset = ForegroundOversampledDataset([_case()], transform=lambda d: d)
    assert dataset[0]["force_foreground"] is False
    assert [d["force_foreground"] for d in dataset.__getitems__([0, 0])] == [False, True]


def test_random_centres_are_uniform_over_positions_inside_the_image():
    centre = RandPatchCenterd(PATCH, label_key=None)
    centre.set_random_state(1)
    centres = torch.stack([centre(_case())["patch_center"] for _ in range(2000)])
    assert centres.min().item() == 4 and centres.max().item() == 12  # patch [c - 4, c + 4) inside 0..15
    counts = torch.bincount(centres[:, 0], minlength=13)[4:].double()
    assert (counts / counts.sum() - 1 / 9).abs().max() < 0.035


def test_forced_patch_draws_a_present_class_uniformly_then_one_of_its_voxels():
    label = torch.zeros(1, 40, 40, 40)
    label[0, 10:30, 10:30, 10:30] = 1  # 8000 voxels
    label[0, 20, 20, 21] = 2  # 1 voxel: still drawn for half of the forced patches
    centre = RandPatchCenterd((8, 8, 8))
    centre.set_random_state(2)
    classes = []
    for _ in range(1000):
        out = centre({"image": torch.zeros(1, 40, 40, 40), "label": label, "force_foreground": True})
        z, y, x = out["patch_center"].tolist()
        classes.append(int(label[0, z, y, x]))
        assert "force_foreground" not in out
    assert set(classes) == {1, 2}
    assert abs(np.mean(np.array(classes) == 2) - 0.5) < 0.06


def test_forced_centre_moves_just_enough_to_keep_the_patch_inside():
    label = torch.zeros(1, *SHAPE)
    label[0, 0, 15, 7] = 1
    out = RandPatchCenterd(PATCH)({"image": torch.zeros(1, *SHAPE), "label": label, "force_foreground": True})
    assert out["patch_center"].tolist() == [4, 12, 7]


def test_case_without_foreground_gets_a_random_centre():
    data = {"image": torch.zeros(1, *SHAPE), "label": torch.zeros(1, *SHAPE), "force_foreground": True}
    centre = RandPatchCenterd(PATCH)
    centre.set_random_state(3)
    centres = {tuple(centre(data)["patch_center"].tolist()) for _ in range(20)}
    assert len(centres) > 1


def test_image_smaller_than_the_patch_is_centred():
    centre = RandPatchCenterd((8, 20, 8), label_key=None)
    centre.set_random_state(0)
    out = centre({"image": torch.zeros(1, 16, 10, 16)})
    # axis 1: 10 voxels in a 20-voxel patch: start -5, centre -5 + 10 = 5
    assert out["patch_center"][1].item() == 5


def test_wrong_number_of_axes_names_the_fix():
    with pytest.raises(ValueError, match="one size per axis"):
        RandPatchCenterd((8, 8))({"image": torch.zeros(1, 16, 16, 16)})


class _Flag:
    def __call__(self, data):
        return torch.tensor(float(data["force_foreground"]))


def test_flags_reach_the_transforms_in_loader_workers():
    dataset = ForegroundOversampledDataset([_case()] * 3, transform=_Flag())
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=12)
    batches = list(DataLoader(dataset, batch_size=6, sampler=sampler, num_workers=1))
    assert [b.tolist() for b in batches] == [[0, 0, 0, 0, 1, 1]] * 2
