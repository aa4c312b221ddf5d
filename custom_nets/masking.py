"""Random cubic block masks for masked-image-modelling pre-training.

The patch is tiled by non-overlapping cubes of ``block_size`` voxels (aligned to the patch origin); for every
sample, exactly ``round(ratio * n_blocks)`` blocks are masked, where ``ratio`` is fixed or drawn per sample from
U[low, high] (S3D's final setting is U[0.6, 0.9] with 16^3 blocks; 32^3 blocks align with ResEnc-L's 5^3
bottleneck at 160^3, the variant described in the paper's text).

Masks are made on the batch's device from an explicit seed, so a run is reproducible and a resumed run draws
the same masks as an uninterrupted one (the iteration function seeds with the global iteration).
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
        grid = self.grid_size(spatial_size)
        n_blocks = math.prod(grid)
        ratio = self.low + (self.high - self.low) * torch.rand(batch_size, 1, generator=gen, device=device)
        n_masked = torch.round(ratio * n_blocks)
        # A random permutation per sample; the blocks ranked below n_masked are masked.
        rank = torch.rand(batch_size, n_blocks, generator=gen, device=device).argsort(dim=1).argsort(dim=1)
        visible = (rank >= n_masked).to(torch.float32).view(batch_size, 1, *grid)
        for axis, size in enumerate(spatial_size):
            visible = visible.repeat_interleave(self.block_size, dim=axis + 2).narrow(axis + 2, 0, size)
        return visible.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_size={self.block_size}, mask_ratio=({self.low}, {self.high}))"
