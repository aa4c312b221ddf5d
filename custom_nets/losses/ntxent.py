"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (also SwinUNETR's contrastive term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NTXentLoss", "nt_xent"]


def nt_xent(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of 2N embeddings where rows i and i + N are the two views of sample i.

    For every row i the positive is its partner j; the other 2N - 2 rows are negatives:
    ``l(i) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))`` with ``s`` the cosine similarity, averaged over
    all 2N rows (both directions of every pair), as in SimCLR.

    Args:
        embeddings: (2N, D), N >= 1, any scale (normalised here); computed in float32, also under autocast.
        temperature: t > 0.

    Returns:
        Scalar loss.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[0] % 2:
        raise ValueError(
            f"expected (2N, D) embeddings with views i and i + N of each sample, got {tuple(embeddings.shape)}."
        )
    two_n = embeddings.shape[0]
    # float32 even inside the train step's bf16 autocast: similarities near 1 need more than bf16's 8 bits.
    with torch.autocast(embeddings.device.type, enabled=False):
        z = F.normalize(embeddings.float(), dim=1)
        logits = z @ z.t() / temperature
    # A row is never its own negative: -inf on the diagonal drops it from the softmax.
    self_mask = torch.eye(two_n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = (torch.arange(two_n, device=z.device) + two_n // 2) % two_n
    return F.cross_entropy(logits, partner)


class NTXentLoss(nn.Module):
    """SimCLR's contrastive loss on the network's (2N, D) embeddings.

    SimCLR pulls together the embeddings of two augmentations of one image and pushes apart those of the other
    images of the batch (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020, https://arxiv.org/abs/2002.05709). Temperature 0.5 and cosine similarity as in OpenMind's
    SimCLR baseline (method.md section 4).

    Called as ``loss(outputs, views)``: ``outputs`` is the (2N, D) embedding tensor (or a dict holding it under
    ``key``); ``views`` is unused (the pairing is the layout: rows i and i + N are positives).

    Args:
        temperature: softmax temperature. Defaults to 0.5.
        key: entry of a dict output that holds the embeddings. Defaults to "embedding".
    """

    def __init__(self, temperature: float = 0.5, key: str = "embedding") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.key = key

    def forward(self, outputs: torch.Tensor | dict[str, torch.Tensor], views: dict | None = None) -> torch.Tensor:
        """(2N, D) embeddings (or a dict with them) -> scalar loss."""
        embeddings = outputs[self.key] if isinstance(outputs, dict) else outputs
        return nt_xent(embeddings, self.temperature)
