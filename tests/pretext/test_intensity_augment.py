"""GPU-side intensity augmentations (AMAES): per-sample probabilities and each augmentation's statistics."""

import pytest
import torch

from custom_nets.pretext.intensity_augment import IntensityAugmentation, gaussian_blur

NAMES = ("bias_field", "blur", "noise", "multiplicative_noise", "ringing", "ghosting", "gamma", "low_resolution")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _only(name: str, **kwargs) -> IntensityAugmentation:
    probabilities = {f"{n}_prob": float(n == name) for n in NAMES}
    return IntensityAugmentation(**{**probabilities, "invert_prob": 0.0, **kwargs})


def test_probabilities_are_honoured_over_many_draws():
    flags = IntensityAugmentation().draw_flags(20000, _generator(0))
    expected = {"bias_field": 0.33, "blur": 0.1, "noise": 0.2, "multiplicative_noise": 0.2, "ringing": 0.2,
                "ghosting": 0.2, "gamma": 0.2, "invert": 0.01, "low_resolution": 0.1}
    for name, p in expected.items():
        assert abs(flags[name].float().mean().item() - p) < 0.015, name


def test_all_probabilities_zero_is_the_identity_and_one_changes_every_sample():
    image = torch.randn(3, 2, 12, 12, 12)
    none = IntensityAugmentation(**{f"{n}_prob": 0.0 for n in NAMES}, invert_prob=0.0)
    assert torch.equal(none(image, _generator(1)), image)
    every = IntensityAugmentation(**{f"{n}_prob": 1.0 for n in NAMES})
    out = every(image, _generator(1))
    assert out.shape == image.shape and torch.isfinite(out).all()
    assert ((out - image).flatten(1).abs().amax(dim=1) > 1e-2).all()


def test_gaussian_blur_matches_a_slow_loop_with_replicated_edges():
    image = torch.randn(2, 1, 7, 9)
    sigma, radius = torch.tensor([0.6, 1.0]), 3
    blurred = gaussian_blur(image, sigma, radius)
    for b in range(2):
        taps = torch.exp(-torch.arange(-radius, radius + 1).double() ** 2 / (2 * sigma[b].double() ** 2))
        taps = taps / taps.sum()
        for i in range(7):
            for j in range(9):
                value = 0.0
                for u in range(-radius, radius + 1):
                    for v in range(-radius, radius + 1):
                        x, y = min(max(i + u, 0), 6), min(max(j + v, 0), 8)
                        value += taps[u + radius] * taps[v + radius] * image[b, 0, x, y].double()
                assert blurred[b, 0, i, j].item() == pytest.approx(value.item(), abs=1e-5)


def test_blur_keeps_a_constant_image():
    constant = torch.full((2, 1, 8, 8, 8), 3.0)
    torch.testing.assert_close(_only("blur")(constant, _generator(2)), constant)


def test_additive_noise_variance_is_within_the_range():
    image = torch.zeros(200, 1, 16, 16, 16)
    out = _only("noise")(image, _generator(3))
    variance = out.flatten(1).var(dim=1)
    assert variance.max() < 0.1 * 1.05 and variance.min() >= 0
    assert abs(variance.mean().item() - 0.05) < 0.005  # variance ~ U(0, 0.1)


def test_multiplicative_noise_keeps_zero_background():
    image = torch.randn(4, 1, 10, 10, 10)
    image[..., :5] = 0
    out = _only("multiplicative_noise")(image, _generator(4))
    assert (out[..., :5] == 0).all() and not torch.equal(out, image)


def test_bias_field_is_smooth_positive_and_keeps_the_sign():
    image = torch.randn(4, 1, 16, 16, 16)
    out = _only("bias_field")(image, _generator(5))
    ratio = out / image
    assert (ratio > 0).all() and not torch.allclose(ratio, torch.ones_like(ratio))
    # smooth: the log-field is linear between 4 control points per axis, so its second differences vanish
    # inside the cells (at 16 voxels, the knots lie at 0, 5, 10 and 15)
    second = ratio.log().diff(n=2, dim=2)
    inside_cells = [i for i in range(14) if (i + 1) % 5 != 0]
    assert second[:, :, inside_cells].abs().max() < 1e-4 and second.abs().max() > 1e-3
    identity = _only("bias_field", bias_field_std=0.0)(image, _generator(5))
    torch.testing.assert_close(identity, image)


def test_gibbs_ringing_removes_the_high_frequencies_of_one_axis():
    image = torch.randn(6, 1, 16, 16, 16)
    out = _only("ringing", ringing_keep=(0.5, 0.5))(image, _generator(6))
    spectrum = torch.fft.fftn(out, dim=(2, 3, 4)).abs()
    frequency = torch.fft.fftfreq(16, d=1 / 16).abs()
    high = frequency > 4  # keep 0.5 of the 8 positive frequencies
    for b in range(6):
        zeroed = [spectrum[b, 0].movedim(axis, 0)[high].max().item() < 1e-3 for axis in range(3)]
        assert sum(zeroed) == 1  # exactly one axis was truncated
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), image.mean(dim=(2, 3, 4)), atol=1e-5, rtol=0)
    untouched = _only("ringing", ringing_keep=(1.0, 1.0))(image, _generator(6))
    torch.testing.assert_close(untouched, image, atol=1e-5, rtol=0)


def test_ghosting_keeps_the_mean_and_is_the_identity_at_alpha_one():
    image = torch.randn(6, 1, 16, 16, 16)
    out = _only("ghosting")(image, _generator(7))
    assert not torch.allclose(out, image, atol=1e-3)
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), image.mean(dim=(2, 3, 4)), atol=1e-5, rtol=0)
    same = _only("ghosting", ghosting_alpha=(1.0, 1.0))(image, _generator(7))
    torch.testing.assert_close(same, image, atol=1e-5, rtol=0)


def test_gamma_keeps_mean_std_and_order():
    image = torch.randn(4, 2, 10, 10, 10)
    out = _only("gamma", gamma=(0.5, 0.6))(image, _generator(8))
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), image.mean(dim=(2, 3, 4)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3, 4)), image.std(dim=(2, 3, 4)), atol=1e-4, rtol=1e-4)
    for b in range(4):
        ordered = out[b, 0].flatten()[image[b, 0].flatten().argsort()]
        assert (ordered.diff() >= -1e-5).all()
    assert not torch.allclose(out, image, atol=1e-3)
    torch.testing.assert_close(_only("gamma", gamma=(1.0, 1.0))(image, _generator(8)), image, atol=1e-4, rtol=0)


def test_inverted_gamma_is_the_mirror_image():
    image = torch.randn(2, 1, 8, 8, 8)
    plain = _only("gamma", gamma=(0.5, 0.5))
    inverted = _only("gamma", gamma=(0.5, 0.5), invert_prob=1.0)
    torch.testing.assert_close(inverted(image, _generator(9)), -plain(-image, _generator(9)))


def test_same_seed_same_output_and_2d_works():
    image = torch.randn(3, 1, 12, 12)
    every = IntensityAugmentation(**{f"{n}_prob": 1.0 for n in NAMES})
    assert torch.equal(every(image, _generator(10)), every(image, _generator(10)))
    assert not torch.equal(every(image, _generator(10)), every(image, _generator(11)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="blur_prob"):
        IntensityAugmentation(blur_prob=2.0)
    with pytest.raises(ValueError, match="gamma"):
        IntensityAugmentation(gamma=(1.5, 0.7))


def _low_resolution_oracle(sample: torch.Tensor, coarse_sizes) -> torch.Tensor:
    """One sample, one axis at a time: F.interpolate nearest-exact down to the coarse size, linear back."""
    import torch.nn.functional as F

    x = sample[None]
    for d, coarse in enumerate(coarse_sizes):
        size = x.shape[2 + d]
        if coarse == size:
            continue
        moved = x.movedim(2 + d, -1)
        flat = moved.reshape(-1, 1, size)
        down = F.interpolate(flat, size=coarse, mode="nearest-exact")
        up = F.interpolate(down, size=size, mode="linear", align_corners=False)
        x = up.reshape(moved.shape).movedim(-1, 2 + d)
    return x[0]


def test_low_resolution_equals_interpolate_down_and_up_per_sample_and_axis():
    augment = _only("low_resolution", low_resolution_axis_prob=0.5)
    image = torch.randn(6, 2, 12, 10, 9)
    generator = _generator(3)
    state = generator.get_state()
    out = augment.low_resolution(image, generator)
    # replay the draws of low_resolution (zoom, then axis choice, per axis) to get each sample's coarse sizes
    generator.set_state(state)
    sizes = []
    for size in image.shape[2:]:
        zoom = torch.rand(6, generator=generator, dtype=torch.float32) * 0.5 + 0.5
        chosen = torch.rand(6, generator=generator) < 0.5
        sizes.append([int(round(size * z)) if c else size for z, c in zip(zoom.tolist(), chosen.tolist())])
    changed = 0
    for b in range(6):
        coarse = [max(1, sizes[d][b]) for d in range(3)]
        changed += coarse != list(image.shape[2:])
        torch.testing.assert_close(out[b], _low_resolution_oracle(image[b], coarse), rtol=1e-5, atol=1e-5)
    assert changed >= 2  # the draw really coarsened some samples


def test_low_resolution_at_zoom_one_is_the_identity_and_removes_detail_below_one():
    image = torch.randn(2, 1, 16, 16, 16)
    same = _only("low_resolution", low_resolution_axis_prob=1.0, low_resolution_zoom=(1.0, 1.0))
    assert torch.equal(same.low_resolution(image, _generator(0)), image)
    half = _only("low_resolution", low_resolution_axis_prob=1.0, low_resolution_zoom=(0.5, 0.5))
    coarse = half.low_resolution(image, _generator(0))
    # a checkerboard-like random image loses most of its variance at half resolution on every axis
    assert coarse.var() < 0.5 * image.var()
    with pytest.raises(ValueError, match="low_resolution_zoom"):
        IntensityAugmentation(low_resolution_zoom=(0.0, 1.0))
