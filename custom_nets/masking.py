"""Random cubic block masks for masked-image-modelling pre-training.

The patch is tiled by non-overlapping cubes of ``block_size`` voxels (aligned to the patch origin); for every
sample, exactly ``round(ratio * n_blocks)`` blocks are masked (at most ``n_blocks - 1``: one block always stays
visible), where ``ratio`` is fixed or drawn per sample from U[low, high] (S3D's final setting is U[0.6, 0.9]
with 16^3 blocks; 32^3 blocks align with ResEnc-L's 5^3 bottleneck at 160^3, the variant described in the
paper's text).

Masks are made on the batch's device from an explicit seed or generator, so a run is reproducible and a resumed
run draws the same masks as an uninterrupted one (the train step seeds with the global iteration).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["BlockMaskGenerator", "parse_mask_ratio"]


def parse_mask_ratio(mask_ratio: float | Sequence[float]) -> tuple[float, float]:
    """Return (low, high); a single number means a fixed ratio. Raises ValueError outside [0, 1)."""
    if isinstance(mask_ratio, (int, float)):
        low = high = float(mask_ratio)
    else:
        values = [float(v) for v in mask_ratio]
        if len(values) != 2:
            raise ValueError(f"mask_ratio must be a number or a [low, high] pair, got {list(mask_ratio)}.")
        low, high = values
    if not 0.0 <= low <= high < 1.0:
        raise ValueError(
            f"mask_ratio must satisfy 0 <= low <= high < 1 (fraction of masked blocks), got {mask_ratio}; "
            "e.g. 0.75 or [0.6, 0.9]."
        )
    return low, high


class BlockMaskGenerator:
    """Draw (B, 1, *spatial) binary block masks, 1 = visible, 0 = masked.

    Args:
        block_size: cube edge in voxels. Defaults to 16 (the reference code); 32 aligns with the bottleneck.
        mask_ratio: fraction of masked blocks, fixed (0.75) or a [low, high] range drawn uniformly per sample.
            Defaults to (0.6, 0.9).
    """

    def __init__(self, block_size: int = 16, mask_ratio: float | Sequence[float] = (0.6, 0.9)) -> None:
        if int(block_size) < 1:
            raise ValueError(f"block_size must be a positive number of voxels, got {block_size}.")
        self.block_size = int(block_size)
        self.low, self.high = parse_mask_ratio(mask_ratio)

    def grid_size(self, spatial_size: Sequence[int]) -> tuple[int, ...]:
        """Blocks per axis; a partial block at the far border counts as a block."""
        return tuple(math.ceil(s / self.block_size) for s in spatial_size)

    def __call__(
        self, batch_size: int, spatial_size: Sequence[int], device: torch.device | str = "cpu", seed: int = 0
    ) -> torch.Tensor:
        """Args:
            batch_size: B.
            spatial_size: patch size in voxels, e.g. (160, 160, 160).
            device: where the mask is made (the batch's device).
            seed: makes the draw reproducible; use a different one per iteration and rank.

        Returns:
            (B, 1, *spatial_size) float32 mask, 1 = visible.
        """
        device = torch.device(device)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        return self.draw(batch_size, spatial_size, gen)

    def draw(self, batch_size: int, spatial_size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """(B, 1, *spatial_size) float32 mask, 1 = visible, drawn from ``generator`` on its device.

        What the pretext transforms use (``pretext.block_masking``, ``pretext.amaes``): the train step hands them a
        generator seeded per (seed, iteration, rank), so no seed goes through the host. ``__call__(..., seed=s)``
        is ``draw`` with a generator seeded with ``s``: the same masks.
        """
        device = generator.device
        n_blocks = math.prod(self.grid_size(spatial_size))
        ratio = torch.rand(batch_size, 1, generator=generator, device=device)
        noise = torch.rand(batch_size, n_blocks, generator=generator, device=device)
        return self.mask_from_noise(ratio, noise, spatial_size)

    def mask_from_noise(
        self, ratio_noise: torch.Tensor, block_noise: torch.Tensor, spatial_size: Sequence[int]
    ) -> torch.Tensor:
        """The deterministic part of ``__call__``: uniform noise in, block mask out.

        Pure tensor arithmetic with shapes known in advance: no ``.item()``, no ``nonzero``, no Python branch on
        tensor values, so it never waits for the GPU (and runs on the ``meta`` device, which the tests use to
        prove it). One sort per sample ranks the blocks; the inverse permutation is scattered instead of
        sorted a second time; blocks are expanded to voxels by one broadcast copy.

        Args:
            ratio_noise: (B, 1) uniform [0, 1) numbers; sample b masks ``min(round(ratio * n_blocks),
                n_blocks - 1)`` blocks with ``ratio = low + (high - low) * ratio_noise[b]`` (one block always
                stays visible).
            block_noise: (B, n_blocks) uniform [0, 1) numbers, one per block in C order of the block grid;
                the blocks with the smallest noise are masked.
            spatial_size: patch size in voxels.

        Returns:
            (B, 1, *spatial_size) float32 mask on ``block_noise``'s device, 1 = visible.
        """
        grid = self.grid_size(spatial_size)
        batch_size, n_blocks = block_noise.shape
        if n_blocks != math.prod(grid):
            raise ValueError(
                f"block_noise has {n_blocks} blocks per sample but a {tuple(spatial_size)} patch has "
                f"{math.prod(grid)} blocks of {self.block_size} voxels; draw one number per block."
            )
        ratio = self.low + (self.high - self.low) * ratio_noise
        # at least one visible block per sample: on a coarse grid round(0.9 * 2) = 2 would mask everything,
        # leaving the encoder no input and the visible-only norms no voxel
        n_masked = torch.round(ratio * n_blocks).clamp_max(n_blocks - 1)
        # rank[b, k] = position of block k in sample b's random order (the inverse of the sorting permutation)
        order = block_noise.argsort(dim=1)
        positions = torch.arange(n_blocks, device=block_noise.device).expand(batch_size, n_blocks)
        rank = torch.empty_like(order).scatter_(1, order, positions)
        visible = (rank >= n_masked).to(torch.float32)
        # (B, 1, g0, 1, g1, 1, ...) -> (B, 1, g0, bs, g1, bs, ...) -> (B, 1, g0*bs, g1*bs, ...), then crop
        interleaved = [n for g in grid for n in (g, 1)]
        expanded = [n for g in grid for n in (g, self.block_size)]
        voxels = visible.view(batch_size, 1, *interleaved).expand(batch_size, 1, *expanded)
        voxels = voxels.reshape(batch_size, 1, *(g * self.block_size for g in grid))
        crop = (slice(None), slice(None)) + tuple(slice(0, int(s)) for s in spatial_size)
        return voxels[crop].contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_size={self.block_size}, mask_ratio=({self.low}, {self.high}))"
