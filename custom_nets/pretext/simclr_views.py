"""SimCLR's views: two overlapping crops per sample with light intensity and flip / rotation augmentations."""

from __future__ import annotations

from typing import Sequence

import torch

from custom_nets.pretext.swinunetr_views import rotate90
from custom_nets.pretext.boxes import uniform_int
from custom_nets.pretext.voco_crops import crop_boxes

__all__ = ["SimCLRViews", "overlapping_crop_starts", "crop_overlap"]


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=generator, device=device)


def _chance(batch: int, p: float, generator: torch.Generator, device, ndim: int) -> torch.Tensor:
    """(B, 1, 1, ...) bool, True with probability p per sample."""
    return (torch.rand(batch, generator=generator, device=device) < p).view(-1, *([1] * (ndim - 1)))


def crop_overlap(first: torch.Tensor, second: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Shared volume of two equal crops as a fraction of the crop: (..., ndim) corners -> (...)."""
    edges = torch.tensor(list(size), device=first.device)
    return ((edges - (first - second).abs()).clamp_min(0).float() / edges).prod(dim=-1)


def overlapping_crop_starts(
    batch: int,
    patch_size: Sequence[int],
    crop_size: Sequence[int],
    min_overlap: float,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners of two crops per sample that share at least ``min_overlap`` of the crop volume.

    Guarantee: draw a target overlap ``v ~ U(min_overlap, 1)`` and split it over the axes, ``o_a = v ** w_a``
    with random weights ``w`` summing to 1 (normalised exponentials), so ``prod(o_a) = v``. The second corner
    is shifted from the first by ``floor(s_a * (1 - o_a))`` voxels in a random direction, then clamped into the
    patch. Per axis the shared length is ``s_a - |shift| >= s_a * o_a`` (flooring and clamping only shrink the
    shift, since the first corner lies inside the valid range), hence the shared volume is >= v >= min_overlap.

    Returns:
        (B, ndim) corners of the first and of the second crops.
    """
    patch = torch.tensor(list(patch_size), device=device)
    edges = torch.tensor(list(crop_size), device=device)
    span = (patch - edges).expand(batch, -1)
    first = uniform_int(0, span, generator)
    target = _uniform((batch, 1), min_overlap, 1.0, generator, device)
    weights = -torch.log(torch.rand(span.shape, generator=generator, device=device).clamp_min(1e-12))
    weights = weights / weights.sum(dim=1, keepdim=True)
    shift = (edges * (1.0 - target**weights)).floor().long()
    sign = torch.where(torch.rand(span.shape, generator=generator, device=device) < 0.5, -1, 1)
    second = torch.minimum(torch.maximum(first + sign * shift, torch.zeros_like(span)), span)
    return first, second


class SimCLRViews:
    """Two augmented crops per sample whose shared volume is >= ``min_overlap`` of the crop (SimCLR).

    SimCLR learns invariance to augmentations by making two views of one image agree and views of different
    images disagree (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
    2020, https://arxiv.org/abs/2002.05709). OpenMind's 3D setting (method.md section 4): crops of 64^3 from a
    larger patch with >= 50 % overlap, batch 32. How the overlap is guaranteed: ``overlapping_crop_starts``.

    Augmentations per crop, on the batch's device, with batchgenerators' SimCLR probabilities from OpenMind:
    Gaussian noise (p 0.1, variance U(0, 0.1)), multiplicative brightness (p 0.15, U(0.75, 1.25)), contrast
    (p 0.15, U(0.75, 1.25), range preserved), gamma (p 0.3, and p 0.1 on the inverted image; gamma in
    (0.7, 1) or (1, 1.5) with equal chance, mean and std retained), mirroring of every axis (p 0.5 each) and a
    rotation by k ~ U{0..3} quarter turns in ``rotation_plane`` (skipped when that plane is not square).
    Gaussian blur and low-resolution simulation of the original list are left out (per-sample kernels).

    Output layout (``__call__``), with B the loader's batch:
        input: (2B, C, *crop_size): rows i and i + B are the two views of sample i (positives).
        crop_starts: (2B, ndim) long corners of the crops in the patch.

    Args:
        crop_size: crop edge per spatial axis. Defaults to (64, 64, 64).
        min_overlap: smallest shared volume fraction, in (0, 1]. Defaults to 0.5.
        augment: apply the intensity / flip / rotation augmentations. Defaults to True.
        rotation_plane: spatial axes of the quarter turns. Defaults to (0, 1).
    """

    def __init__(
        self,
        crop_size: Sequence[int] = (64, 64, 64),
        min_overlap: float = 0.5,
        augment: bool = True,
        rotation_plane: Sequence[int] = (0, 1),
    ) -> None:
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}.")
        self.crop_size = tuple(int(s) for s in crop_size)
        if min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {crop_size}.")
        self.min_overlap = float(min_overlap)
        self.augment = bool(augment)
        self.rotation_plane = tuple(int(p) for p in rotation_plane)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(B, C, *patch) patches -> views; see the class docstring."""
        spatial = tuple(image.shape[2:])
        if len(spatial) != len(self.crop_size) or any(p < s for p, s in zip(spatial, self.crop_size)):
            raise ValueError(
                f"the patch {spatial} must be at least crop_size {self.crop_size} on every axis; raise patch_size"
                f" (OpenMind: 192x192x64 for 64^3 crops) or lower crop_size."
            )
        batch = image.shape[0]
        first, second = overlapping_crop_starts(
            batch, spatial, self.crop_size, self.min_overlap, generator, image.device
        )
        starts = torch.cat([first, second], dim=0)
        crops = crop_boxes(image, torch.stack([first, second], dim=0).transpose(0, 1), self.crop_size)
        # crop_boxes is sample-major (b, view); reorder to view-major so rows i and i + B are positives.
        crops = crops.view(batch, 2, *crops.shape[1:]).transpose(0, 1).reshape(2 * batch, *crops.shape[1:])
        if self.augment:
            crops = self.augment_views(crops, generator)
        return {"input": crops, "crop_starts": starts}

    def augment_views(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, C, *crop) -> (N, C, *crop), every crop with its own random parameters."""
        n, ndim, device = x.shape[0], x.ndim, x.device
        param_shape = (n, x.shape[1]) + (1,) * (ndim - 2)
        reduce = tuple(range(2, ndim))

        sigma = _uniform(param_shape, 0.0, 0.1, generator, device).sqrt()
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype) * sigma
        x = torch.where(_chance(n, 0.1, generator, device, ndim), x + noise, x)

        brightness = _uniform(param_shape, 0.75, 1.25, generator, device)
        x = torch.where(_chance(n, 0.15, generator, device, ndim), x * brightness, x)

        contrast = _uniform(param_shape, 0.75, 1.25, generator, device)
        mean = x.mean(dim=reduce, keepdim=True)
        low, high = x.amin(dim=reduce, keepdim=True), x.amax(dim=reduce, keepdim=True)
        contrasted = torch.minimum(torch.maximum((x - mean) * contrast + mean, low), high)
        x = torch.where(_chance(n, 0.15, generator, device, ndim), contrasted, x)

        for invert, p in ((True, 0.1), (False, 0.3)):
            x = torch.where(_chance(n, p, generator, device, ndim), self._gamma(x, invert, generator), x)

        for axis in range(2, ndim):
            x = torch.where(_chance(n, 0.5, generator, device, ndim), x.flip(axis), x)

        a, b = self.rotation_plane
        if x.shape[2 + a] == x.shape[2 + b]:
            x = rotate90(x, torch.randint(0, 4, (n,), generator=generator, device=device), self.rotation_plane)
        return x

    @staticmethod
    def _gamma(x: torch.Tensor, invert: bool, generator: torch.Generator) -> torch.Tensor:
        """Gamma on the [0, 1]-rescaled crop, back to its range, mean and std restored (batchgenerators style)."""
        n, ndim, device = x.shape[0], x.ndim, x.device
        reduce = tuple(range(2, ndim))
        param_shape = (n, x.shape[1]) + (1,) * (ndim - 2)
        y = -x if invert else x
        mean, std = y.mean(dim=reduce, keepdim=True), y.std(dim=reduce, keepdim=True)
        low = y.amin(dim=reduce, keepdim=True)
        extent = y.amax(dim=reduce, keepdim=True) - low + 1e-7
        below_one = _uniform(param_shape, 0.7, 1.0, generator, device)
        above_one = _uniform(param_shape, 1.0, 1.5, generator, device)
        gamma = torch.where(torch.rand(param_shape, generator=generator, device=device) < 0.5, below_one, above_one)
        y = ((y - low) / extent).clamp_min(0).pow(gamma) * extent + low
        y = (y - y.mean(dim=reduce, keepdim=True)) / (y.std(dim=reduce, keepdim=True) + 1e-8) * std + mean
        return -y if invert else y
