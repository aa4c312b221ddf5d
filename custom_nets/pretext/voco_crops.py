"""VoCo's views: a grid of base crops and random crops of the same size, with their overlap fractions."""

from __future__ import annotations

from typing import Sequence

import torch

from custom_nets.pretext.boxes import uniform_int

__all__ = ["VoCoCrops", "crop_boxes"]


def crop_boxes(image: torch.Tensor, starts: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Gather one box of ``size`` per (sample, box) from ``image`` with a single indexing op (no host sync).

    Args:
        image: (B, C, *spatial).
        starts: (B, M, ndim) integer corners on the image's device; every box must lie inside the image.
        size: box edge per spatial axis.

    Returns:
        (B * M, C, *size), sample-major (row b * M + m is box m of sample b).
    """
    batch, channels, *spatial = image.shape
    ndim = len(spatial)
    if starts.ndim != 3 or starts.shape[0] != batch or starts.shape[2] != ndim or len(size) != ndim:
        raise ValueError(
            f"starts must be (B={batch}, M, {ndim}) and size have {ndim} values, got {tuple(starts.shape)} and"
            f" {tuple(size)}."
        )
    m = starts.shape[1]
    flat = starts.reshape(batch * m, ndim)
    sample = torch.arange(batch, device=image.device).repeat_interleave(m)
    index: list[torch.Tensor] = [sample.view(-1, *([1] * ndim))]
    for axis, edge in enumerate(size):
        shape = [-1] + [1] * ndim
        shape[axis + 1] = edge
        index.append((flat[:, axis].view(-1, 1) + torch.arange(edge, device=image.device)).view(shape))
    # Advanced indices around a slice: the indexed dims come first -> (B * M, *size, C).
    boxes = image[(index[0], slice(None), *index[1:])]
    return boxes.movedim(-1, 1).contiguous()


class VoCoCrops:
    """Base crops on a regular grid and random crops, labelled with their overlap fractions (VoCo).

    VoCo (Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical Image
    Analysis", CVPR 2024, https://arxiv.org/abs/2402.17300) splits a volume into K non-overlapping base crops and
    asks the network to tell, for n random crops, what fraction of each random crop lies in each base crop.

    The loader's patch must be exactly the grid: ``patch = grid * crop_size`` per axis. Paper-scale settings as
    in OpenMind's ResEnc-L baseline (method.md section 4): grid 4x4x1 of 64^3 crops (patch 256x256x64), n = 4,
    no resizing of the crops. Random crop corners are uniform over the positions that keep the crop inside the
    grid, so the K fractions of every random crop sum to 1; a fraction is the product over axes of the overlap
    length divided by the crop edge. No intensity or spatial augmentation besides the loader's.

    Output layout (``__call__``):
        input: (B * (K + n), C, *crop_size): first the K base crops of every sample (row b * K + k, grid order
            x-major: k = (i * gy + j) * gz + l), then the n random crops (row B * K + b * n + j).
        overlaps: (B, n, K) float32, fraction of random crop j of sample b inside base crop k.
        crop_starts: (B, n, ndim) long, corners of the random crops in the patch.

    Args:
        grid: base crops per spatial axis. Defaults to (4, 4, 1).
        crop_size: edge of every crop per spatial axis. Defaults to (64, 64, 64).
        num_crops: random crops per sample (n). Defaults to 4.
    """

    def __init__(
        self, grid: Sequence[int] = (4, 4, 1), crop_size: Sequence[int] = (64, 64, 64), num_crops: int = 4
    ) -> None:
        self.grid = tuple(int(g) for g in grid)
        self.crop_size = tuple(int(s) for s in crop_size)
        if len(self.grid) != len(self.crop_size) or len(self.grid) not in (2, 3):
            raise ValueError(f"grid {grid} and crop_size {crop_size} need one value per spatial axis (2 or 3).")
        if min(self.grid) < 1 or min(self.crop_size) < 1 or num_crops < 1:
            raise ValueError(f"grid, crop_size and num_crops must be >= 1, got {grid}, {crop_size}, {num_crops}.")
        self.num_crops = int(num_crops)

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The patch the loader must deliver: grid * crop_size per axis."""
        return tuple(g * s for g, s in zip(self.grid, self.crop_size))

    @property
    def num_bases(self) -> int:
        """K, the number of base crops."""
        k = 1
        for g in self.grid:
            k *= g
        return k

    def base_starts(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, K, ndim) corners of the grid crops, x-major."""
        axes = [torch.arange(g, device=device) * s for g, s in zip(self.grid, self.crop_size)]
        corners = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(self.grid))
        return corners.unsqueeze(0).expand(batch, -1, -1)

    def overlap_fractions(self, starts: torch.Tensor) -> torch.Tensor:
        """(B, n, ndim) random-crop corners -> (B, n, K) fraction of each crop inside each base crop."""
        fractions = None
        for axis, (g, s) in enumerate(zip(self.grid, self.crop_size)):
            lower = torch.arange(g, device=starts.device) * s  # base intervals [lower, lower + s)
            start = starts[..., axis : axis + 1]  # (B, n, 1)
            length = (torch.minimum(start + s, lower + s) - torch.maximum(start, lower)).clamp_min(0)
            axis_fraction = length.float() / s  # (B, n, g)
            if fractions is None:
                fractions = axis_fraction
            else:  # outer product, x-major like base_starts
                fractions = (fractions[..., :, None] * axis_fraction[..., None, :]).flatten(-2)
        return fractions

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(B, C, *patch_size) patches -> views; see the class docstring."""
        if image.ndim != len(self.grid) + 2 or tuple(image.shape[2:]) != self.patch_size:
            raise ValueError(
                f"VoCo needs patches of exactly grid x crop_size = {self.patch_size} voxels, got"
                f" {tuple(image.shape[2:])}; set patch_size to {list(self.patch_size)}."
            )
        batch = image.shape[0]
        span = torch.tensor([(g - 1) * s for g, s in zip(self.grid, self.crop_size)], device=image.device)
        starts = uniform_int(0, span.expand(batch, self.num_crops, -1), generator)
        bases = crop_boxes(image, self.base_starts(batch, image.device), self.crop_size)
        crops = crop_boxes(image, starts, self.crop_size)
        return {
            "input": torch.cat([bases, crops], dim=0),
            "overlaps": self.overlap_fractions(starts),
            "crop_starts": starts,
        }
