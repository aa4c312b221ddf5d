"""Volume Fusion: segment which mixture of two volumes every voxel is.

Wang et al., "MIS-FM: 3D Medical Image Segmentation using Foundation Models Pretrained on a Large-Scale
Unannotated Dataset", arXiv 2023, https://arxiv.org/abs/2306.16925.

Defining idea: two volumes are blended voxel by voxel, ``fused = alpha * foreground + (1 - alpha) * background``,
with a coefficient map ``alpha`` made of random boxes whose values come from the discrete set
{0, 1/K, ..., 1}; the network learns to segment the K + 1 coefficient classes, a pseudo-segmentation task that
trains the whole U-Net (encoder and decoder).

Settings (OpenMind appendix D.2 and MIS-FM): K = 4 non-zero coefficients (5 classes); per sample
M ~ U{10, ..., 40} boxes painted one after the other (later boxes overwrite earlier ones, which gives irregular
class regions), sides U{8, ..., 100} voxels per axis clipped to the patch (100 = 62.5 % of a 160^3 patch, the
fraction OpenMind used); each box draws its class uniformly from {0, ..., K}; voxels outside every box are class
0 (pure background volume).

The foreground is the loader's patch and the background is the batch rolled by one (sample b is fused with
sample b - 1), so the batch size is unchanged and every patch appears once in each role.
"""

from __future__ import annotations

from typing import Sequence

import torch

from custom_nets.pretext.boxes import box_mask, draw_boxes, uniform_int

__all__ = ["VolumeFusion"]


class VolumeFusion:
    """Fuse each patch with its neighbour in the batch through a random box-shaped class map.

    Args:
        fusion_levels: K, the number of non-zero fusion coefficients; classes are 0..K and alpha = class / K.
            Defaults to 4.
        num_boxes: (smallest, largest) number of boxes per sample, both inclusive. Defaults to (10, 40).
        box_size: (smallest, largest) box side in voxels, both inclusive, clipped to the patch per axis.
            Defaults to (8, 100).

    Call: ``views = VolumeFusion()(image, generator)`` with ``image`` (B, C, *spatial), B >= 2, returns
        ``input``: (B, C, *spatial) fused patches, ``alpha * image + (1 - alpha) * image.roll(1, 0)``;
        ``label``: (B, 1, *spatial) int64 class map, ``alpha = label / K``.
    """

    def __init__(
        self,
        fusion_levels: int = 4,
        num_boxes: Sequence[int] = (10, 40),
        box_size: Sequence[int] = (8, 100),
    ) -> None:
        if int(fusion_levels) < 1:
            raise ValueError(f"fusion_levels (K) must be >= 1, got {fusion_levels}; MIS-FM uses 4.")
        low, high = (int(v) for v in num_boxes)
        if not 1 <= low <= high:
            raise ValueError(f"num_boxes must be (smallest, largest) with 1 <= smallest <= largest, got {num_boxes}.")
        smallest, largest = (int(v) for v in box_size)
        if not 1 <= smallest <= largest:
            raise ValueError(
                f"box_size must be (smallest, largest) voxels with 1 <= smallest <= largest, got {box_size}."
            )
        self.fusion_levels = int(fusion_levels)
        self.num_boxes = (low, high)
        self.box_size = (smallest, largest)

    @property
    def num_classes(self) -> int:
        """K + 1 output channels of the segmentation network."""
        return self.fusion_levels + 1

    def draw(self, batch_size: int, spatial_size: Sequence[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw the boxes of every sample (on the generator's device).

        Returns:
            ``count`` (B,) boxes in use; ``starts``, ``sizes`` (B, K_max, D) int64 with K_max = the largest count
            allowed (boxes at index >= count are unused); ``classes`` (B, K_max) int64 in [0, K].
        """
        device = generator.device
        count = uniform_int(
            torch.full((batch_size,), self.num_boxes[0], device=device),
            torch.full((batch_size,), self.num_boxes[1], device=device),
            generator,
        )
        size_range = [(min(self.box_size[0], s), min(self.box_size[1], s)) for s in spatial_size]
        starts, sizes = draw_boxes(batch_size, self.num_boxes[1], spatial_size, size_range, generator)
        shape = (batch_size, self.num_boxes[1])
        classes = uniform_int(
            torch.zeros(shape, dtype=torch.int64, device=device),
            torch.full(shape, self.fusion_levels, device=device),
            generator,
        )
        return {"count": count, "starts": starts, "sizes": sizes, "classes": classes}

    @staticmethod
    def class_map(boxes: dict[str, torch.Tensor], spatial_size: Sequence[int]) -> torch.Tensor:
        """Paint the boxes in order (later over earlier) onto class 0.

        Returns:
            (B, 1, *spatial_size) int64 class map.
        """
        count, starts, sizes, classes = boxes["count"], boxes["starts"], boxes["sizes"], boxes["classes"]
        label = torch.zeros((starts.shape[0], 1, *spatial_size), dtype=torch.int64, device=starts.device)
        view = (-1, 1) + (1,) * len(spatial_size)
        for k in range(starts.shape[1]):
            paint = box_mask(starts[:, k], sizes[:, k], spatial_size) & (count > k).view(view)
            label = torch.where(paint, classes[:, k].view(view), label)
        return label

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if image.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(image.shape)}.")
        if image.shape[0] < 2:
            raise ValueError(
                f"Volume Fusion blends two different patches, so it needs batch_size >= 2 per device, got "
                f"{image.shape[0]}; raise batch_size."
            )
        spatial_size = tuple(image.shape[2:])
        label = self.class_map(self.draw(image.shape[0], spatial_size, generator), spatial_size)
        alpha = label.to(image.dtype) / self.fusion_levels
        fused = alpha * image + (1 - alpha) * image.roll(1, dims=0)
        return {"input": fused, "label": label}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fusion_levels={self.fusion_levels}, num_boxes={self.num_boxes}, "
            f"box_size={self.box_size})"
        )
