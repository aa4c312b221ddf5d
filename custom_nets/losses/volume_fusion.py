"""Dice + cross-entropy on Volume Fusion's coefficient classes, with the pretext ``loss(outputs, views)`` contract."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["VolumeFusionLoss"]


class VolumeFusionLoss(nn.Module):
    """Soft Dice + cross-entropy between the predicted and the drawn fusion-coefficient class map.

    Volume Fusion (Wang et al., "MIS-FM", arXiv 2306.16925, 2023) treats each coefficient {0, 1/K, ..., 1} as a
    segmentation class and trains with Dice + CE, weights 1:1 (as nnssl's Volume Fusion trainer). Settings follow
    nnU-Net's soft Dice there: computed per sample and per class (no batch Dice), every class included (class 0
    is a coefficient like the others, not background), smoothing 1e-5. Built on ``monai.losses.DiceCELoss``:

        loss = mean_{b, c} (1 - (2 sum p g + s) / (sum p + sum g + s)) + mean_voxels(-log p[label])

    with p the softmax of the logits, g the one-hot label, s the smoothing. Computed in float32.

    Args:
        label_key: the views entry with the (B, 1, *spatial) int64 class map. Defaults to "label".
        smooth: Dice smoothing added to numerator and denominator. Defaults to 1e-5.
        lambda_dice, lambda_ce: weights of the two terms. Default to 1.0.

    Call: ``loss(outputs, views)`` with ``outputs`` (B, K + 1, *spatial) logits; returns a scalar.
    """

    def __init__(
        self, label_key: str = "label", smooth: float = 1e-5, lambda_dice: float = 1.0, lambda_ce: float = 1.0
    ) -> None:
        super().__init__()
        self.label_key = label_key
        self.dice_ce = DiceCELoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            batch=False,
            smooth_nr=smooth,
            smooth_dr=smooth,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def forward(self, outputs: torch.Tensor, views: dict[str, torch.Tensor]) -> torch.Tensor:
        label = views[self.label_key]
        if label.shape[0] != outputs.shape[0] or label.shape[2:] != outputs.shape[2:] or label.shape[1] != 1:
            raise ValueError(
                f"expected a (B, 1, *spatial) label matching the logits {tuple(outputs.shape)}, "
                f"got {tuple(label.shape)}."
            )
        if outputs.shape[1] < 2:
            raise ValueError(f"expected one logit channel per class (K + 1 >= 2), got {outputs.shape[1]}.")
        return self.dice_ce(outputs.float(), label)
