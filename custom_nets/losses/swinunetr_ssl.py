"""SwinUNETR's pre-training loss: in-painting L1 + rotation cross-entropy + contrastive, weights 1:1:1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from custom_nets.losses.ntxent import nt_xent

__all__ = ["SwinUNETRSSLLoss"]


class SwinUNETRSSLLoss(nn.Module):
    """Weighted sum of SwinUNETR's three self-supervised losses.

    Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR 2022,
    https://arxiv.org/abs/2111.14791: in-painting of cut-out regions (L1 to the uncorrupted view), rotation
    classification (cross-entropy over 0/90/180/270 degrees) and contrastive coding between the two views of a
    sample (NT-Xent, temperature 0.5 as in the original code), with ``lambda = 1`` each (method.md section 4).

    The L1 averages over every voxel of the volume, as the original code does (``region="all"``); with
    ``region="cutout"`` it averages over the replaced voxels only.

    Called as ``loss(outputs, views)`` with the outputs of ``SwinUNETRStyleNet`` ("reconstruction", "rotation",
    "embedding") and the views of ``SwinUNETRViews`` ("target", "rotation", "cutout"; rows i and i + B are the
    two views of sample i).

    Args:
        inpainting_weight: weight of the L1 term. Defaults to 1.
        rotation_weight: weight of the rotation term. Defaults to 1.
        contrastive_weight: weight of the contrastive term. Defaults to 1.
        temperature: NT-Xent temperature. Defaults to 0.5.
        region: "all" or "cutout", where the L1 is averaged. Defaults to "all".
    """

    def __init__(
        self,
        inpainting_weight: float = 1.0,
        rotation_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        temperature: float = 0.5,
        region: str = "all",
    ) -> None:
        super().__init__()
        if region not in ("all", "cutout"):
            raise ValueError(f"region must be 'all' or 'cutout', got {region!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.weights = {
            "inpainting": float(inpainting_weight),
            "rotation": float(rotation_weight),
            "contrastive": float(contrastive_weight),
        }
        self.temperature = float(temperature)
        self.region = region

    def inpainting_loss(self, reconstruction: torch.Tensor, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean absolute error to the uncorrupted view, over all voxels or the cut-out ones."""
        error = (reconstruction.float() - views["target"].float()).abs()
        if self.region == "all":
            return error.mean()
        weight = views["cutout"].float().expand_as(error)
        return (error * weight).sum() / weight.sum().clamp_min(1.0)

    def terms(self, outputs: dict[str, torch.Tensor], views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The three unweighted terms: "inpainting", "rotation", "contrastive"."""
        return {
            "inpainting": self.inpainting_loss(outputs["reconstruction"], views),
            "rotation": F.cross_entropy(outputs["rotation"].float(), views["rotation"].long()),
            "contrastive": nt_xent(outputs["embedding"], self.temperature),
        }

    def forward(self, outputs: dict[str, torch.Tensor], views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Network outputs and views -> scalar weighted sum."""
        terms = self.terms(outputs, views)
        return sum(self.weights[name] * value for name, value in terms.items())
