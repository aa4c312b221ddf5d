"""nnU-Net's spatial augmentation: the patch is resampled, rotated and scaled, from the image around it.

nnU-Net (Isensee et al., Nature Methods 2021) and the S3D paper rotate (p 0.2, each axis uniformly within
+-30 deg) and scale (p 0.2, isotropic, uniformly in [0.7, 1.4]) the training patch. The rotated, scaled patch
is sampled from the image region around the patch centre, so its corners show image context. Rotating or
zooming a patch that was already cut (MONAI's ``RandRotated`` / ``RandZoomd`` after a crop) must invent those
corners instead (replicated borders or zeros).

:class:`RandAffineCropd` does the cut and the augmentation in one resampling: for output voxel offset ``x``
from the patch centre ``g`` (voxels), it samples the input at ``g + R S x``, with ``R`` the rotation and ``S``
the scale (``S > 1`` samples a larger field of view: objects look smaller, nnU-Net's convention). Only the
bounding box of those positions, plus a margin for the interpolation kernel, is read from the image; outside
the image the values are 0 (nnU-Net's constant border). Without rotation or scaling it is a plain crop.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Resample

from custom_nets.data.bspline import bspline_prefilter, bspline_sample
from custom_nets.data.foreground_sampling import CENTER_KEY

__all__ = ["CUBIC_MODE", "LABEL_MODE", "MODES", "RandAffineCropd", "crop_with_zeros", "rotation_matrix"]

CUBIC_MODE = "cubic"  # cubic B-spline (custom_nets.data.bspline): nnU-Net v1's and the paper's order 3 for images
LABEL_MODE = "label"  # each class resampled linearly, then the most likely class (nnU-Net's segmentation sampling)
MODES = (CUBIC_MODE, "bilinear", "nearest", LABEL_MODE)


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation ``R2 @ R1 @ R0``: ``Rk`` turns by ``angles[k]`` (radians) about array axis ``k``, R0 first."""
    a, b, c = angles
    r0 = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    r1 = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    r2 = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return r2 @ r1 @ r0


def crop_with_zeros(image: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``image[:, start:start + size]`` per spatial axis, zero where the box leaves the image.

    Args:
        image: (C, *spatial).
        start: first voxel of the box per spatial axis (may be negative).
        size: box size per spatial axis.

    Returns:
        (C, *size), a copy.
    """
    src, pad = [slice(None)], []
    for s, n, dim in zip(start, size, image.shape[1:]):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, max(hi, lo)))
        pad.append((lo - s, s + n - max(hi, lo)))
    out = image[tuple(src)]
    flat = [p for before_after in reversed(pad) for p in before_after]  # F.pad wants the last axis first
    return F.pad(out, flat) if any(flat) else out.clone()


class RandAffineCropd(Randomizable, MapTransform):
    """Cut the training patch at ``data[center_key]``, rotated and scaled the nnU-Net way (see the module doc).

    Rotation and scaling are drawn independently per sample. A rotation draws all three angles uniformly in
    ``[-rotation_range, rotation_range]``; a scaling draws one factor uniformly in ``scale_range`` for all axes.
    The centre comes from :class:`custom_nets.data.foreground_sampling.RandPatchCenterd` (voxel indices; the patch
    covers ``[center - size // 2, center - size // 2 + size)`` before augmentation, which rotates and scales it
    about its geometric centre); without it the image centre is used. The key is removed.

    Args:
        keys: the images and label maps to cut (same spatial shape).
        spatial_size: patch size in voxels.
        mode: interpolation per key (or one for all): "cubic" (cubic B-spline, the paper's for images),
            "bilinear" (trilinear in 3-D), "nearest" (masks), or "label" (every class resampled linearly, then
            the most likely one, as nnU-Net resamples segmentations). Defaults to "cubic".
        prob_rotation: probability of a rotation per sample. Defaults to 0.2.
        rotation_range: largest angle per axis in radians. Defaults to pi / 6 (30 deg).
        prob_scaling: probability of a scaling per sample. Defaults to 0.2.
        scale_range: (low, high) scale; > 1 samples a larger field of view. Defaults to (0.7, 1.4).
        center_key: where the patch centre is read. Defaults to "patch_center".
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str | Sequence[str] = CUBIC_MODE,
        prob_rotation: float = 0.2,
        rotation_range: float = math.pi / 6,
        prob_scaling: float = 0.2,
        scale_range: Sequence[float] = (0.7, 1.4),
        center_key: Hashable = CENTER_KEY,
    ) -> None:
        super().__init__(keys)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        modes = list(mode) if isinstance(mode, (list, tuple)) else [mode] * len(self.keys)
        if len(modes) != len(self.keys):
            raise ValueError(f"mode needs one entry per key ({list(self.keys)}), got {modes}")
        for m in modes:
            if m not in MODES:
                raise ValueError(
                    f"mode {m!r} is not one of {list(MODES)}: use '{CUBIC_MODE}' for images, '{LABEL_MODE}' for "
                    "label maps, 'nearest' for masks"
                )
        self.modes = modes
        for name, p in (("prob_rotation", prob_rotation), ("prob_scaling", prob_scaling)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high (nnU-Net: (0.7, 1.4)), got {scale_range}"
            )
        self.prob_rotation, self.rotation_range = float(prob_rotation), float(rotation_range)
        self.prob_scaling, self.scale_range = float(prob_scaling), (float(scale_range[0]), float(scale_range[1]))
        self.center_key = center_key
        self.angles = (0.0, 0.0, 0.0)
        self.scale = 1.0

    def randomize(self, data=None) -> None:
        rotate = self.R.uniform() < self.prob_rotation
        scale = self.R.uniform() < self.prob_scaling
        r = self.rotation_range
        self.angles = tuple(float(a) for a in self.R.uniform(-r, r, size=3)) if rotate else (0.0, 0.0, 0.0)
        self.scale = float(self.R.uniform(*self.scale_range)) if scale else 1.0

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) map from output voxel offsets to input voxel offsets of the latest draw: ``R @ (scale * I)``."""
        return rotation_matrix(self.angles) * self.scale

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        key = self.first_key(d)
        if key == []:
            raise KeyError(f"none of the keys {list(self.keys)} is in the data ({list(d)})")
        first = d[key]
        shape = tuple(first.shape[1:])
        if len(shape) != 3 or len(self.spatial_size) != 3:
            raise ValueError(f"RandAffineCropd works on 3-D volumes (C, D, H, W), got shape {tuple(first.shape)}")
        center = d.pop(self.center_key, None)
        center = [n // 2 for n in shape] if center is None else [int(c) for c in center]
        start = [c - p // 2 for c, p in zip(center, self.spatial_size)]
        self.randomize()
        identity = self.angles == (0.0, 0.0, 0.0) and self.scale == 1.0
        for key, mode in self.key_iterator(d, self.modes):
            image = torch.as_tensor(d[key])
            if tuple(image.shape[1:]) != shape:
                raise ValueError(
                    f"'{key}' has spatial shape {tuple(image.shape[1:])}, other keys {shape}: resample them alike"
                )
            image = image.as_tensor() if hasattr(image, "as_tensor") else image
            if identity:
                d[key] = crop_with_zeros(image, start, self.spatial_size)
            else:
                d[key] = self._resample(image, start, mode)
        return d

    def _resample(self, image: torch.Tensor, start: Sequence[int], mode) -> torch.Tensor:
        size = np.array(self.spatial_size)
        matrix = self.matrix
        centre = np.array(start) + (size - 1) / 2.0  # geometric centre of the unaugmented patch, input voxels
        reach = np.abs(matrix) @ ((size - 1) / 2.0)  # half-extent of the sampled positions per input axis
        margin = 8 if mode == CUBIC_MODE else 1  # the spline prefilter's mirror border fades within ~8 voxels
        lo = np.floor(centre - reach).astype(int) - margin
        hi = np.ceil(centre + reach).astype(int) + margin
        region = crop_with_zeros(image, lo.tolist(), (hi - lo + 1).tolist())
        # sampling positions, centred on the region (MONAI's Resample with norm_coords=True)
        axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0 for n in self.spatial_size]
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)
        shift = torch.as_tensor(centre - lo - (hi - lo) / 2.0)
        grid = (torch.as_tensor(matrix) @ offsets + shift[:, None]).reshape(3, *self.spatial_size)
        if mode == LABEL_MODE:
            return self._resample_label(region, grid)
        if mode == CUBIC_MODE:
            positions = grid + torch.tensor(region.shape[1:], dtype=grid.dtype)[:, None, None, None] / 2.0 - 0.5
            out = bspline_sample(bspline_prefilter(region.float()), positions.float())
        else:
            out = Resample(mode=mode, padding_mode="zeros", dtype=torch.float32)(region.float(), grid.float())
            out = out.as_tensor() if hasattr(out, "as_tensor") else out
        return out if image.is_floating_point() else out.round().to(image.dtype)

    @staticmethod
    def _resample_label(region: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Argmax over classes of their linearly resampled indicators, one class at a time (memory: one region).

        The indicators sum to 1 everywhere (the zero padding is background), and so do their linear interpolants,
        so the background's value is 1 minus the foreground's sum. Ties go to the lower class, as ``argmax``.
        """
        labels = region.long()
        if labels.shape[0] != 1:
            raise ValueError(f"mode '{LABEL_MODE}' needs a one-channel label map, got {labels.shape[0]} channels")
        resample = Resample(mode="bilinear", padding_mode="zeros", dtype=torch.float32)
        total = torch.zeros(grid.shape[1:])
        best = torch.zeros(grid.shape[1:])
        out = torch.zeros(grid.shape[1:], dtype=torch.long)
        for c in torch.unique(labels).tolist():
            if c <= 0:
                continue
            value = resample((labels == c).float(), grid.float())[0]
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            total += value
            wins = value > best
            out[wins], best[wins] = c, value[wins]
        out[1.0 - total >= best] = 0
        return out[None].to(region.dtype)
