"""nnU-Net's intensity augmentation as the fine-tuning bundle configures it: each transform's statistics.

Every transform is built exactly as in ``bundles/s3d_finetune/configs/train.yaml`` (the bundle test checks that the
bundle's list is this one) and measured over many draws against nnU-Net's numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import (
    RandGaussianNoised,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    RandSimulateLowResolution,
)

from custom_nets.data.intensity_augment import RandChannelwised, RandGamma, sample_around_one

DRAWS = 2000


def _seeded(transform, seed=0):
    transform.set_random_state(seed)
    return transform


def _uniform_image(channels=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + torch.rand(channels, size, size, size, generator=g)  # values in [1, 2]


def test_noise_std_is_uniform_up_to_0_1_at_p_0_1():
    noise = _seeded(RandGaussianNoised("image", prob=0.1, std=0.1))
    zeros = torch.zeros(1, 16, 16, 16)
    stds = np.array([noise({"image": zeros})["image"].std().item() for _ in range(DRAWS)])
    applied = stds[stds > 0]
    assert abs(len(applied) / DRAWS - 0.1) < 0.02
    # nnU-Net draws U(0, 0.1) (named noise_variance) and passes it to numpy as the standard deviation
    assert applied.max() < 0.1 * 1.05 and abs(applied.mean() - 0.05) < 0.006


def _impulse():
    image = torch.zeros(2, 15, 15, 15)
    image[:, 7, 7, 7] = 1.0
    return image


def _sigmas(blurred: torch.Tensor) -> np.ndarray:
    """Per channel and axis, the standard deviation (voxels) of a blurred unit impulse."""
    coords = torch.arange(15, dtype=torch.float64) - 7
    out = []
    for channel in blurred.double():
        mass = channel / channel.sum()
        out.append([(mass.sum(dim=[d for d in range(3) if d != a]) * coords**2).sum().sqrt().item() for a in range(3)])
    return np.array(out)


def test_blur_p_0_2_then_half_of_the_channels_with_a_sigma_per_axis():
    blur = _seeded(RandChannelwised(
        "image", RandGaussianSmooth(sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=1.0),
        prob=0.2, p_per_channel=0.5,
    ))
    changed, sigmas = [], []
    for _ in range(DRAWS):
        out = blur({"image": _impulse()})["image"]
        blurred = out[:, 7, 7, 7] < 1.0
        changed.append(blurred.numpy())
        if blurred.any():
            sigmas.append(_sigmas(out[blurred]))
    changed = np.array(changed)
    assert abs(changed.any(1).mean() - 0.2 * 0.75) < 0.025  # a sample is changed when >= 1 of 2 channels is
    assert abs(changed.mean() - 0.2 * 0.5) < 0.02
    sigmas = np.concatenate(sigmas)
    assert sigmas.min() > 0.45 and sigmas.max() < 1.05  # the sampled kernel's std is the drawn sigma
    assert np.std(sigmas[:, 0] - sigmas[:, 1]) > 0.05  # each axis draws its own sigma


def test_brightness_multiplies_each_channel_by_its_own_factor():
    brightness = _seeded(RandChannelwised("image", RandScaleIntensity(factors=0.25, prob=1.0), prob=0.15))
    image = _uniform_image()
    factors = []
    for _ in range(DRAWS):
        out = brightness({"image": image})["image"]
        ratio = (out / image).flatten(1)
        assert torch.allclose(ratio, ratio[:, :1], atol=1e-5)  # one factor per channel
        factors.append(ratio[:, 0].numpy())
    factors = np.array(factors)
    applied = factors[(factors != 1).any(1)]
    assert abs(len(applied) / DRAWS - 0.15) < 0.025
    assert applied.min() >= 0.75 and applied.max() <= 1.25 and abs(applied.mean() - 1.0) < 0.015
    assert (applied[:, 0] != applied[:, 1]).all()


def test_contrast_scales_around_the_channel_mean_and_keeps_its_range():
    contrast = _seeded(RandChannelwised(
        "image", RandScaleIntensityFixedMean(factors=0.25, fixed_mean=True, preserve_range=True, prob=1.0), prob=0.15,
    ))
    image = _uniform_image(channels=1)
    mean, low, high = image.mean(), image.min(), image.max()
    factors = []
    for _ in range(DRAWS):
        out = contrast({"image": image})["image"]
        if torch.equal(out, image):
            continue
        assert out.min() >= low - 1e-6 and out.max() <= high + 1e-6  # range preserved (clipped)
        inside = ((image - mean).abs() < 0.25 / 1.25)  # voxels no factor <= 1.25 can push beyond the range
        factors.append(((out - mean)[inside] / (image - mean)[inside]).median().item())
    factors = np.array(factors)
    assert abs(len(factors) / DRAWS - 0.15) < 0.025
    assert factors.min() >= 0.75 - 1e-4 and factors.max() <= 1.25 + 1e-4 and abs(factors.mean() - 1.0) < 0.02


def test_low_resolution_p_0_25_then_half_of_the_channels():
    low_res = _seeded(RandChannelwised(
        "image", RandSimulateLowResolution(zoom_range=(0.5, 1.0), downsample_mode="nearest-exact", prob=1.0),
        prob=0.25, p_per_channel=0.5,
    ))
    image = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    changed = []
    for _ in range(DRAWS):
        out = low_res({"image": image})["image"]
        assert out.shape == image.shape
        changed.append([not torch.allclose(out[c], image[c]) for c in range(2)])
    changed = np.array(changed)
    # a zoom rounding back to 16 voxels on every axis changes nothing: zoom > 15.5 / 16 has odds 1/16
    assert abs(changed.mean() - 0.25 * 0.5 * (1 - 1 / 16)) < 0.02


def test_gamma_is_drawn_below_or_above_one_with_equal_odds():
    rng = np.random.RandomState(0)
    gammas = np.array([sample_around_one(rng, 0.7, 1.5) for _ in range(20000)])
    assert gammas.min() >= 0.7 and gammas.max() <= 1.5
    assert abs((gammas < 1).mean() - 0.5) < 0.015
    assert abs(gammas.mean() - 1.05) < 0.005  # (0.85 + 1.25) / 2, not 1.1 as uniform over [0.7, 1.5]
    assert abs(np.median(gammas[gammas >= 1]) - 1.25) < 0.01


@pytest.mark.parametrize("invert_image, prob", [(True, 0.1), (False, 0.3)])
def test_gamma_keeps_each_channels_mean_and_std(invert_image, prob):
    gamma = _seeded(RandChannelwised("image", RandGamma(prob=1.0, invert_image=invert_image), prob=prob))
    image = _uniform_image() ** 2
    applied = 0
    for _ in range(500):
        out = gamma({"image": image})["image"]
        if torch.equal(out, image):
            continue
        applied += 1
        assert torch.allclose(out.flatten(1).mean(1), image.flatten(1).mean(1), atol=1e-4)
        assert torch.allclose(out.flatten(1).std(1), image.flatten(1).std(1), atol=1e-4)
    assert abs(applied / 500 - prob) < 0.05


def test_inverted_gamma_hand_value():
    # x = 0, 1, 2, 3 and gamma 2: negate (0, -1, -2, -3), min -3, range 3:
    # ((-x + 3) / 3)^2 * 3 - 3 = (3, 4/3, 1/3, 0) - 3, negated back: (0, 5/3, 8/3, 3)
    gamma = RandGamma(prob=1.0, gamma=(2.0, 2.0), invert_image=True, retain_stats=False)
    out = gamma(torch.arange(4.0).view(1, 1, 1, 4))
    assert out.flatten().tolist() == pytest.approx([0.0, 5 / 3, 8 / 3, 3.0], abs=1e-5)


def test_inner_transform_must_leave_the_probability_to_the_wrapper():
    with pytest.raises(ValueError, match="set prob: 1.0"):
        RandChannelwised("image", RandScaleIntensity(factors=0.25, prob=0.15))
    with pytest.raises(ValueError, match="p_per_channel"):
        RandChannelwised("image", RandScaleIntensity(factors=0.25, prob=1.0), p_per_channel=2.0)
