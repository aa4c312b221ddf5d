"""Sparse (masked) operations of S3D: keep masked regions exactly zero and normalise over visible voxels only.

S3D treats the visible part of a masked volume like a sparse tensor. Instead of gathering visible voxels with
``nonzero`` (one mask ratio per batch, host syncs, no ``torch.compile``), everything here is computed with
masked sums over the dense tensor, so every sample may have its own mask ratio and the graph stays static.

Conventions used across the package:
    x:    (B, C, *spatial) features
    mask: (B, 1, *spatial) float, 1 = visible, 0 = masked, same spatial size as ``x``
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceNorm", "masked_instance_norm", "stage_masks"]


def masked_instance_norm(
    x: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Instance normalisation whose statistics come from visible voxels only.

    Mean and (biased) variance are taken per sample and channel over voxels where ``mask == 1``; the output is
    zero at masked voxels, so the sparse pattern survives the affine shift. Statistics are accumulated in
    float32 whatever the input dtype (bf16 sums over 10^5 voxels lose too many digits).

    Args:
        x: (B, C, *spatial) features.
        mask: (B, 1, *spatial) binary float mask, 1 = visible.
        weight, bias: optional (C,) affine parameters.
        eps: added to the variance, as in ``torch.nn.InstanceNorm3d``.

    Returns:
        (B, C, *spatial) tensor of ``x``'s dtype. A sample with no visible voxel gives all zeros.
    """
    dims = tuple(range(2, x.ndim))
    xf = x.float()
    m = mask.to(xf.dtype)
    count = m.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (xf * m).sum(dim=dims, keepdim=True) / count
    centred = (xf - mean) * m
    var = (centred * centred).sum(dim=dims, keepdim=True) / count
    y = centred * torch.rsqrt(var + eps)
    if weight is not None:
        shape = (1, -1) + (1,) * len(dims)
        y = y * weight.float().view(shape) + bias.float().view(shape) * m
    return y.to(x.dtype)


class InstanceNorm(nn.Module):
    """Instance normalisation that becomes visible-voxel-only when given a mask.

    Parameter names (``weight``, ``bias``) equal those of ``torch.nn.InstanceNorm3d(affine=True)``, so state
    dicts are interchangeable with nnU-Net / dynamic-network-architectures networks. Without a mask it calls
    ``F.instance_norm``, i.e. it is exactly ``nn.InstanceNorm{1,2,3}d(affine=True)``.

    Args:
        num_features: channels C.
        eps: variance epsilon. Defaults to 1e-5.
        affine: learnable per-channel scale and shift. Defaults to True.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return masked_instance_norm(x, mask, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


def stage_masks(
    mask: torch.Tensor, reductions: Sequence[int], block_size: int
) -> list[torch.Tensor | None]:
    """Masks at the resolution of every encoder stage.

    A stage whose downsampling factor ``r`` is at most the mask block size sees whole blocks, so its mask is the
    full-resolution mask subsampled by ``r`` (exact, because blocks are aligned to a grid of ``block_size``).
    A coarser stage (``r > block_size``) mixes visible and masked blocks in one voxel and is treated as dense
    (``None``), as in the paper: it needs neither re-masking nor a mask token.

    Args:
        mask: (B, 1, *spatial) full-resolution mask, 1 = visible.
        reductions: cumulative downsampling of each stage, e.g. (1, 2, 4, 8, 16, 32) for ResEnc-L.
        block_size: edge of the cubic mask blocks in voxels.

    Returns:
        One entry per stage: (B, 1, *spatial / r) mask, or None for dense stages.
    """
    out: list[torch.Tensor | None] = []
    for r in reductions:
        if r > block_size or block_size % r:
            out.append(None)
        elif r == 1:
            out.append(mask)
        else:
            index = (slice(None), slice(None)) + (slice(None, None, r),) * (mask.ndim - 2)
            out.append(mask[index])
    return out
