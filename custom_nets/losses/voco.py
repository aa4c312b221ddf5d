"""VoCo's loss: overlap prediction from cosine similarities plus the base-crop dissimilarity regulariser."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VoCoLoss", "split_voco_embeddings"]


def split_voco_embeddings(embeddings: torch.Tensor, overlaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the network's embeddings into base and random crops with the layout of ``VoCoCrops``.

    Args:
        embeddings: (B * K + B * n, D): first the K base crops of every sample (sample-major, index b * K + k),
            then its n random crops (index B * K + b * n + j).
        overlaps: (B, n, K) overlap fractions (only the shape is used).

    Returns:
        bases (B, K, D) and crops (B, n, D).
    """
    batch, n, k = overlaps.shape
    if embeddings.ndim != 2 or embeddings.shape[0] != batch * (k + n):
        raise ValueError(
            f"expected ({batch} * ({k} base + {n} random crops), D) embeddings for overlaps of shape"
            f" {tuple(overlaps.shape)}, got {tuple(embeddings.shape)}."
        )
    bases = embeddings[: batch * k].reshape(batch, k, -1)
    crops = embeddings[batch * k :].reshape(batch, n, -1)
    return bases, crops


class VoCoLoss(nn.Module):
    """VoCo: predict each random crop's overlap with every base crop from embedding similarity.

    Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical Image
    Analysis", CVPR 2024, https://arxiv.org/abs/2402.17300. The similarity of a random crop to a base crop should
    equal the fraction of the random crop that lies in that base crop, which teaches the encoder where a crop
    sits in the volume; base crops of one volume are pushed apart so they stay distinguishable.

    Exact form implemented (the released VoCo code, which OpenMind's ResEnc baseline also follows; it differs
    from the paper's equations 3 and 5 in the ReLU, the split into overlapping / non-overlapping pairs and the
    stop-gradient):

    - ``l_jk = relu(cos(p_j, stopgrad(q_k)))`` for random crop j and base crop k of the same sample;
    - prediction, overlapping pairs (y > 0), weighted by the overlap:
      ``L_pos = sum(y * -log(1 - |y - l| + 1e-6)) / sum(y)``;
    - prediction, non-overlapping pairs (y = 0): ``L_neg = mean(l^2)``;
    - regulariser over base pairs i < j of every sample: ``L_reg = mean(relu(cos(q_i, q_j)))`` (the paper's
      ``2 / (K (K - 1)) sum |s_ij|`` with the ReLU of the code);
    - ``loss = prediction_weight * (L_pos + L_neg) + regularization_weight * L_reg``, weights 1 and 1.

    Sums and means run over the whole batch. Called as ``loss(outputs, views)`` with the (B(K + n), D)
    embeddings of ``VoCoNet`` and ``views["overlaps"]`` (B, n, K) from ``VoCoCrops``.

    Args:
        prediction_weight: weight of the prediction term. Defaults to 1.
        regularization_weight: weight of the regulariser. Defaults to 1.
    """

    def __init__(self, prediction_weight: float = 1.0, regularization_weight: float = 1.0) -> None:
        super().__init__()
        self.prediction_weight = float(prediction_weight)
        self.regularization_weight = float(regularization_weight)

    @staticmethod
    def prediction_loss(bases: torch.Tensor, crops: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
        """(B, K, D) bases, (B, n, D) random crops, (B, n, K) overlaps -> scalar."""
        similarity = F.cosine_similarity(crops.float()[:, :, None, :], bases.detach().float()[:, None, :, :], dim=-1)
        logits = similarity.relu()
        overlaps = overlaps.float()
        positive = (-torch.log(1 - (overlaps - logits).abs() + 1e-6) * overlaps).sum() / overlaps.sum().clamp_min(1e-6)
        empty = (overlaps == 0).float()
        negative = (logits.square() * empty).sum() / empty.sum().clamp_min(1.0)
        return positive + negative

    @staticmethod
    def regularization_loss(bases: torch.Tensor) -> torch.Tensor:
        """(B, K, D) base embeddings -> mean ReLU cosine similarity over pairs i < j (0 when K = 1)."""
        k = bases.shape[1]
        if k < 2:
            return bases.sum() * 0.0
        with torch.autocast(bases.device.type, enabled=False):  # float32 similarities under bf16 autocast
            z = F.normalize(bases.float(), dim=-1)
            similarity = (z @ z.transpose(1, 2)).relu()
        upper = torch.ones(k, k, dtype=torch.bool, device=bases.device).triu(diagonal=1)
        return similarity[:, upper].mean()

    def terms(self, outputs: torch.Tensor, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The unweighted "prediction" and "regularization" terms."""
        bases, crops = split_voco_embeddings(outputs, views["overlaps"])
        return {
            "prediction": self.prediction_loss(bases, crops, views["overlaps"]),
            "regularization": self.regularization_loss(bases),
        }

    def forward(self, outputs: torch.Tensor, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B(K + n), D) embeddings and views with "overlaps" (B, n, K) -> scalar loss."""
        terms = self.terms(outputs, views)
        return self.prediction_weight * terms["prediction"] + self.regularization_weight * terms["regularization"]
