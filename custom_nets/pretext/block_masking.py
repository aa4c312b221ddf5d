"""Block masking: the views of S3D and the dense MAE, the patch and a random block mask per sample.

Wald, Ulrich et al., "Revisiting MAE pre-training for 3D medical image segmentation", CVPR 2025; He et al.,
"Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.

Unlike AMAES (``pretext.amaes``), the network is handed the unmasked patch and the mask as two inputs,
``network(image, mask)``: S3D masks the input itself and then re-applies the mask at every encoder stage
(``nets.sparse``), which needs the mask, not only a masked image. ``network_inputs`` names these two views for the
train step; the loss (``ViewMSELoss(mask_key="mask")``) counts the masked voxels of the target only.
"""

from __future__ import annotations

from typing import Sequence

import torch

from custom_nets.masking import BlockMaskGenerator

__all__ = ["BlockMasking"]


class BlockMasking:
    """Draw a block mask per sample; the network gets the patch and the mask.

    Args:
        block_size: mask block edge in voxels. Defaults to 16 (S3D's reference code).
        mask_ratio: fraction of masked blocks, fixed (0.75, the dense MAE) or [low, high] drawn per sample
            (S3D: [0.6, 0.9]). Defaults to (0.6, 0.9).

    Call: ``views = BlockMasking()(image, generator)`` with ``image`` (B, C, *spatial) returns
        ``input``: the patch as given (the network masks it, see the module docstring);
        ``mask``: (B, 1, *spatial) float32, 1 = visible, 0 = masked;
        ``target``: the patch as given (the loss counts its masked voxels).
    The masks equal ``BlockMaskGenerator(block_size, mask_ratio)(B, spatial, seed=s)`` when ``generator`` is
    seeded with ``s``.
    """

    #: views handed to the network, in order: ``network(views["input"], views["mask"])``.
    network_inputs = ("input", "mask")

    def __init__(self, block_size: int = 16, mask_ratio: float | Sequence[float] = (0.6, 0.9)) -> None:
        self.masks = BlockMaskGenerator(block_size, mask_ratio)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if image.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(image.shape)}.")
        mask = self.masks.draw(image.shape[0], tuple(image.shape[2:]), generator)
        return {"input": image, "mask": mask, "target": image}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(masks={self.masks!r})"
