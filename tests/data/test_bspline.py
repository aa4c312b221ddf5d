"""Cubic B-spline interpolation against its defining properties and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from custom_nets.data.bspline import POLE, bspline_prefilter, bspline_sample, bspline_weights


def _grid(shape, dtype=torch.float64):
    return torch.stack(torch.meshgrid(*[torch.arange(n, dtype=dtype) for n in shape], indexing="ij"))


def test_weights_are_the_cubic_bspline():
    f = torch.tensor([0.0, 0.5])
    w = bspline_weights(f)
    assert w[:, 0].tolist() == pytest.approx([1 / 6, 4 / 6, 1 / 6, 0.0])
    # f = 1/2: (1/8) / 6, (4 - 6/4 + 3/8) / 6, (1 + 3/2 + 3/4 - 3/8) / 6, (1/8) / 6
    assert w[:, 1].tolist() == pytest.approx([1 / 48, 23 / 48, 23 / 48, 1 / 48])
    assert POLE == pytest.approx(-0.2679491924)


def test_coefficients_of_a_constant_are_the_constant():
    coefficients = bspline_prefilter(torch.full((1, 5, 6, 7), 2.5, dtype=torch.float64))
    assert torch.allclose(coefficients, torch.tensor(2.5, dtype=torch.float64))


def test_spline_interpolates_the_samples():
    torch.manual_seed(0)
    volume = torch.randn(2, 12, 13, 14, dtype=torch.float64)
    values = bspline_sample(bspline_prefilter(volume), _grid(volume.shape[1:]))
    # (c[i-1] + 4 c[i] + c[i+1]) / 6 = s[i]; at the border the look-up repeats the edge coefficient instead of
    # mirroring it, so the outermost voxel is off (callers keep a margin)
    assert torch.allclose(values[:, 1:-1, 1:-1, 1:-1], volume[:, 1:-1, 1:-1, 1:-1], atol=1e-10)


def test_cubic_polynomials_are_reproduced_between_the_samples():
    shape = (30, 30, 30)
    z, y, x = _grid(shape)
    poly = lambda z, y, x: 1e-3 * z**3 - 0.02 * y**2 + 0.03 * x * z + 1.0  # noqa: E731
    coefficients = bspline_prefilter(poly(z, y, x)[None])
    torch.manual_seed(1)
    positions = 11.0 + 8.0 * torch.rand(3, 200, dtype=torch.float64)  # >= 11 voxels from every border
    values = bspline_sample(coefficients, positions)[0]
    # exact for an infinite signal; the mirror border's influence decays like |pole|^11 ~ 5e-7
    assert torch.allclose(values, poly(*positions), atol=1e-4)


def test_float32_matches_float64():
    torch.manual_seed(2)
    volume = torch.randn(1, 10, 10, 10, dtype=torch.float64)
    positions = 2.0 + 5.0 * torch.rand(3, 50, dtype=torch.float64)
    exact = bspline_sample(bspline_prefilter(volume), positions)
    single = bspline_sample(bspline_prefilter(volume.float()), positions.float())
    assert torch.allclose(single.double(), exact, atol=1e-4)


def test_one_dimensional_hand_value():
    # an impulse at 20: its coefficients are the prefilter's impulse response sqrt(3) z^|k - 20| (z the pole), so
    # the spline halfway to the next sample is the B-spline weights of f = 1/2 applied to taps 19 .. 22
    volume = torch.zeros(1, 1, 1, 41, dtype=torch.float64)
    volume[0, 0, 0, 20] = 1.0
    value = bspline_sample(bspline_prefilter(volume), torch.tensor([[0.0], [0.0], [20.5]], dtype=torch.float64))
    weights = bspline_weights(torch.tensor(0.5, dtype=torch.float64))  # taps 19, 20, 21, 22
    coefficient = lambda k: math.sqrt(3) * POLE ** abs(k - 20)  # noqa: E731  impulse response of the prefilter
    expected = sum(float(weights[t]) * coefficient(19 + t) for t in range(4))
    assert value.item() == pytest.approx(expected, abs=1e-9)


def test_bad_shapes_name_the_expected_ones():
    with pytest.raises(ValueError, match=r"\(C, D, H, W\)"):
        bspline_prefilter(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match=r"\(3, ...\)"):
        bspline_sample(torch.zeros(1, 4, 4, 4), torch.zeros(2, 5))
