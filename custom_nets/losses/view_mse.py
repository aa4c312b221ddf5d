"""Reconstruction MSE with the pretext ``loss(outputs, views)`` contract, over all voxels or masked ones only."""

from __future__ import annotations

import torch
from torch import nn

from custom_nets.losses.masked_mse import MaskedMSELoss

__all__ = ["ViewMSELoss"]


class ViewMSELoss(nn.Module):
    """Mean squared error between the network output and a target carried in the views.

    - S3D and the dense MAE (``pretext.block_masking``) and AMAES (Munk et al., arXiv 2408.00640) are masked
      autoencoders: only masked voxels count (``mask_key="mask"``, 1 = visible), delegated to ``MaskedMSELoss``
      so the average is over all masked voxels of the batch; voxels marked in ``views[anonymization_key]`` (when
      the loader provides OpenMind's anonymisation masks) do not count either.
    - Models Genesis (Zhou et al., arXiv 1908.06912) restores the whole patch: every voxel counts
      (``mask_key=None``), ``mean((outputs - views["target"])^2)``.

    The error is computed in float32.

    Args:
        target_key: views entry with the (B, C, *spatial) target. Defaults to "target".
        mask_key: views entry with a (B, 1, *spatial) mask, 1 = visible (not counted), or None to count every
            voxel. Defaults to None.
        anonymization_key: views entry with a (B, 1, *spatial) mask, 1 = anonymised voxel (not counted), used with
            ``mask_key`` when present. Defaults to "anonymization_mask".

    Call: ``loss(outputs, views)`` with ``outputs`` (B, C, *spatial); returns a scalar.
    """

    def __init__(
        self, target_key: str = "target", mask_key: str | None = None, anonymization_key: str = "anonymization_mask"
    ) -> None:
        super().__init__()
        self.target_key = target_key
        self.mask_key = mask_key
        self.anonymization_key = anonymization_key
        self.masked = MaskedMSELoss()

    def forward(self, outputs: torch.Tensor, views: dict[str, torch.Tensor]) -> torch.Tensor:
        target = views[self.target_key]
        if outputs.shape != target.shape:
            raise ValueError(
                f"outputs {tuple(outputs.shape)} and views['{self.target_key}'] {tuple(target.shape)} differ; the "
                "network needs as many output channels as the target has (num_classes = in_channels)."
            )
        if self.mask_key is None:
            return (outputs.float() - target.float()).square().mean()
        return self.masked(outputs, target, views[self.mask_key], views.get(self.anonymization_key))
