"""Cubic B-spline interpolation of 3-D volumes in torch (SciPy's ``map_coordinates(order=3)`` without SciPy).

Cubic interpolation is what nnU-Net v1 and the S3D paper use to resample images during spatial augmentation.
MONAI resamples with splines only through SciPy (or its optional compiled extension), which this project does
not depend on, so this module implements the standard two steps (Unser, "Splines: a perfect fit for signal and
image processing", IEEE Signal Processing Magazine 1999):

1. :func:`bspline_prefilter`: per axis, the coefficients ``c`` whose cubic B-spline passes through the samples,
   by a causal and an anti-causal first-order recursion with pole ``z = sqrt(3) - 2`` and mirror boundaries
   (``s[-k] = s[k]``; SciPy's ``mode="mirror"`` prefilter).
2. :func:`bspline_sample`: the spline at arbitrary positions, a 4 x 4 x 4-tap weighted sum of coefficients with
   the cubic B-spline weights of the fractional position.

The spline interpolates (it returns the samples at integer positions) and reproduces polynomials up to degree 3
away from the borders. It works on any device and dtype (float32 or float64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["POLE", "bspline_prefilter", "bspline_sample", "bspline_weights"]

POLE = math.sqrt(3.0) - 2.0  # the cubic B-spline's pole, about -0.268
_TOLERANCE = 1e-9  # truncation of the causal initialisation: |POLE| ** horizon < tolerance


def _prefilter_axis(c: torch.Tensor, axis: int) -> torch.Tensor:
    """Cubic B-spline prefilter of ``c`` along ``axis`` (mirror boundary); returns a new tensor."""
    n = c.shape[axis]
    if n == 1:
        return c
    x = c.movedim(axis, 0).contiguous()  # each step of the recursion then reads one contiguous slab
    z = POLE
    x.mul_((1.0 - z) * (1.0 - 1.0 / z))  # gain 6
    # causal initialisation c+[0] = sum_k z^k c[k] over the mirrored signal: truncated where z^k is negligible,
    # or, on short axes, summed over one period (2 n - 2) of the mirrored signal
    horizon = int(math.ceil(math.log(_TOLERANCE) / math.log(abs(z)))) + 1
    if n > horizon:
        powers = [z**k for k in range(horizon)]
    else:
        period = 2 * n - 2
        powers = [(z**k + (z ** (period - k) if 0 < k < n - 1 else 0.0)) / (1.0 - z**period) for k in range(n)]
    powers = torch.tensor(powers, dtype=x.dtype, device=x.device)
    x[0] = torch.tensordot(powers, x[: len(powers)], dims=([0], [0]))
    for k in range(1, n):
        x[k].add_(x[k - 1], alpha=z)
    # anti-causal initialisation and recursion: c-[k] = z (c-[k + 1] - c+[k])
    x[n - 1] = (z / (z * z - 1.0)) * (x[n - 1] + z * x[n - 2])
    for k in range(n - 2, -1, -1):
        x[k].sub_(x[k + 1]).mul_(-z)
    return x.movedim(0, axis)


def bspline_prefilter(volume: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline coefficients of a (C, D, H, W) volume, a new tensor of the same shape and dtype."""
    if volume.ndim != 4:
        raise ValueError(f"bspline_prefilter expects a (C, D, H, W) volume, got shape {tuple(volume.shape)}")
    c = volume if volume.is_floating_point() else volume.float()
    for axis in (3, 2, 1):
        c = _prefilter_axis(c, axis)
    return c.contiguous()


def bspline_weights(fraction: torch.Tensor) -> torch.Tensor:
    """(4, *fraction.shape) cubic B-spline weights of the taps at offsets -1, 0, 1, 2 from ``floor(position)``.

    With ``f = position - floor(position)`` in [0, 1): ``(1 - f)^3 / 6``, ``(4 - 6 f^2 + 3 f^3) / 6``,
    ``(1 + 3 f + 3 f^2 - 3 f^3) / 6`` and ``f^3 / 6``; they sum to 1.
    """
    f = fraction
    f2, f3 = f * f, f * f * f
    return torch.stack(((1 - f) ** 3, 4 - 6 * f2 + 3 * f3, 1 + 3 * f + 3 * f2 - 3 * f3, f3)) / 6.0


def bspline_sample(coefficients: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Evaluate the cubic spline of ``coefficients`` at ``positions``.

    The 4 x 4 x 4 taps per position are computed as 8 trilinear look-ups (``grid_sample``): along each axis the
    taps -1, 0 and 1, 2 pair up into one linear interpolation each, at offsets ``w1 / (w0 + w1) - 1`` and
    ``w3 / (w2 + w3) + 1`` with weights ``w0 + w1`` and ``w2 + w3`` (Sigg and Hadwiger, "Fast third-order
    texture filtering", GPU Gems 2, 2005). Exact up to rounding.

    Args:
        coefficients: (C, D, H, W) from :func:`bspline_prefilter`.
        positions: (3, *out) voxel indices (continuous) along D, H and W. Beyond the volume the look-ups repeat
            the border coefficient, so keep positions at least 2 voxels inside (callers crop with a margin).

    Returns:
        (C, *out) values, in the coefficients' dtype.
    """
    if coefficients.ndim != 4 or positions.shape[0] != 3:
        raise ValueError(
            f"expected (C, D, H, W) coefficients and (3, ...) positions, got {tuple(coefficients.shape)} and "
            f"{tuple(positions.shape)}"
        )
    out_shape = positions.shape[1:]
    p = positions.reshape(3, -1).to(coefficients.dtype)
    base = torch.floor(p)
    w = bspline_weights(p - base)  # (4, 3, P)
    g_low, g_high = w[0] + w[1], w[2] + w[3]  # (3, P), never both 0
    low = base - 1.0 + w[1] / g_low.clamp_min(1e-12)
    high = base + 1.0 + w[3] / g_high.clamp_min(1e-12)
    sizes = torch.tensor(coefficients.shape[1:], dtype=p.dtype, device=p.device)[:, None]
    # grid_sample (align_corners=True) wants [-1, 1] and the axes as (W, H, D)
    low, high = 2.0 * low / (sizes - 1).clamp_min(1) - 1.0, 2.0 * high / (sizes - 1).clamp_min(1) - 1.0
    volume = coefficients[None]
    out = torch.zeros(coefficients.shape[0], p.shape[1], dtype=coefficients.dtype, device=coefficients.device)
    for pick in range(8):
        bits = [(pick >> a) & 1 for a in range(3)]
        coords = torch.stack([high[a] if bits[a] else low[a] for a in (2, 1, 0)], dim=-1)  # (P, 3) as x, y, z
        weight = (g_high[0] if bits[0] else g_low[0]) * (g_high[1] if bits[1] else g_low[1])
        weight = weight * (g_high[2] if bits[2] else g_low[2])
        values = F.grid_sample(volume, coords.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                               align_corners=True)
        out.addcmul_(values.view(coefficients.shape[0], -1), weight)
    return out.reshape(coefficients.shape[0], *out_shape)
