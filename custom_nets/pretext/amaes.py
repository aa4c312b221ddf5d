"""AMAES views: a masked, intensity-augmented input and the unaugmented patch as target.

Munk et al., "AMAES: Augmented Masked Autoencoder Pretraining on Public Brain MRI Data for 3D-Native
Segmentation", arXiv 2024, https://arxiv.org/abs/2408.00640.

Defining idea: a masked autoencoder whose input also carries strong intensity augmentations that the target
does not, so the encoder learns to be invariant to intensity changes (noise, blur, gamma, bias field, MRI
artefacts) while staying covariant with spatial ones (rotation and scaling come from the loader and apply to
input and target alike).

Mask: AMAES divides the patch into sub-patches of 4 x 4 x 4 voxels and masks each with probability 0.6 (its
section 3.1; "mask size 4^3" in its appendix A, at 128^3 patches). "4^3" is therefore the block edge in voxels,
not a 4 x 4 x 4 grid of blocks, and it does not scale with the patch: at 160^3 the grid has 40^3 blocks. As
for S3D and the dense MAE here, exactly ``round(0.6 * n_blocks)`` blocks are masked per sample (MAE's rule)
instead of an independent draw per block; the expected fraction is the same. Masked voxels of the input are 0.
"""

from __future__ import annotations

import torch

from custom_nets.masking import BlockMaskGenerator
from custom_nets.pretext.intensity_augment import IntensityAugmentation

__all__ = ["AMAESViews"]


class AMAESViews:
    """Mask and intensity-augment the input; keep the target clean.

    Args:
        block_size: mask block edge in voxels. Defaults to 4 (AMAES).
        mask_ratio: fraction of masked blocks. Defaults to 0.6 (AMAES).
        augmentation: callable ``(image, generator) -> image`` applied to the input only. Defaults to
            ``IntensityAugmentation()`` (AMAES' intensity augmentations).

    Call: ``views = AMAESViews()(image, generator)`` with ``image`` (B, C, *spatial) returns
        ``input``: (B, C, *spatial) augmented patch with masked voxels set to 0;
        ``target``: (B, C, *spatial) the patch as given (spatially augmented by the loader only);
        ``mask``: (B, 1, *spatial) float, 1 = visible, 0 = masked (the loss counts masked voxels).
    """

    def __init__(self, block_size: int = 4, mask_ratio: float = 0.6, augmentation=None) -> None:
        if not isinstance(mask_ratio, (int, float)):
            raise ValueError(f"AMAES uses one fixed mask_ratio, got {mask_ratio}; e.g. 0.6.")
        self.masks = BlockMaskGenerator(block_size, mask_ratio)
        self.augmentation = IntensityAugmentation() if augmentation is None else augmentation

    def mask(self, batch_size: int, spatial_size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """(B, 1, *spatial) block mask drawn from ``generator`` (no seed round trip through the host)."""
        return self.masks.draw(batch_size, spatial_size, generator)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if image.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(image.shape)}.")
        mask = self.mask(image.shape[0], tuple(image.shape[2:]), generator)
        augmented = self.augmentation(image, generator)
        return {"input": augmented * mask.to(augmented.dtype), "target": image, "mask": mask}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(masks={self.masks!r}, augmentation={self.augmentation!r})"
