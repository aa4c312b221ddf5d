"""Mean squared reconstruction error over masked voxels only (the MAE / S3D pre-training loss)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaskedMSELoss"]


class MaskedMSELoss(nn.Module):
    """MSE between reconstruction and target, averaged over masked voxels of the whole batch.

    Visible voxels are copied by the network and carry no learning signal, so only masked voxels count (He et
    al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022). OpenMind additionally ignores voxels
    that were anonymised (defaced or skull-stripped): reconstructing them teaches the network to paint
    anonymisation artefacts (Wald et al., "An OpenMind for 3D medical vision self-supervised learning", 2024).

    The target is the z-scored input patch itself; the error is computed in float32.

    Args:
        reduction: "mean" over counted voxels (default) or "sum".
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got '{reduction}'.")
        self.reduction = reduction

    def forward(
        self,
        reconstruction: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        anonymization_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            reconstruction: (B, C, *spatial) network output.
            target: (B, C, *spatial) original patch.
            mask: (B, 1, *spatial), 1 = visible (not counted), 0 = masked (counted).
            anonymization_mask: optional (B, 1, *spatial), 1 = anonymised voxel (not counted).

        Returns:
            Scalar loss. With no counted voxel it is 0 (and still differentiable).
        """
        if reconstruction.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ.")
        weight = 1.0 - mask.float()
        if anonymization_mask is not None:
            weight = weight * (1.0 - anonymization_mask.float())
        error = (reconstruction.float() - target.float()).square() * weight
        total = error.sum()
        if self.reduction == "sum":
            return total
        count = weight.sum() * reconstruction.shape[1]
        return total / count.clamp_min(1.0)
