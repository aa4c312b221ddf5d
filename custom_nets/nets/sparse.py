"""Sparse (masked) operations of S3D: keep masked regions exactly zero and normalise over visible voxels only.

S3D treats the visible part of a masked volume like a sparse tensor. Instead of gathering visible voxels with
``nonzero`` (one mask ratio per batch, host syncs, no ``torch.compile``), everything here is computed with
masked sums over the dense tensor, so every sample may have its own mask ratio and the graph stays static.

Two implementations of the visible-only instance norm compute the same function:

* ``masked_instance_norm``: plain autograd. Simple and the reference, but autograd keeps several float32
  full-size intermediates of every norm for backward (the naive prototype of ``docs/method.md`` section 7 ran
  out of memory at 160^3 batch 6 in eager mode).
* ``masked_instance_norm_fused``: a ``torch.autograd.Function`` with a hand-written backward that keeps only
  the input (in its own dtype, bf16 under autocast), the mask and the per-(sample, channel) mean and 1/std.
  Chosen per module with ``InstanceNorm(fused=True)`` or ``set_fused_norm(model, True)``.

Conventions used across the package:
    x:    (B, C, *spatial) features
    mask: (B, 1, *spatial) float, 1 = visible, 0 = masked, same spatial size as ``x``, and of ``x``'s dtype
          inside the network (bf16 under autocast: a float32 mask would promote every masked product, and with
          it the norms, activations and residual sums after it, to float32)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "InstanceNorm",
    "activation_dtype",
    "masked_instance_norm",
    "masked_instance_norm_fused",
    "set_fused_norm",
    "stage_masks",
]


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


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bf16/float32 inputs, float64 for float64 (so ``gradcheck`` runs in double)."""
    return torch.promote_types(dtype, torch.float32)


class _MaskedInstanceNormFunction(torch.autograd.Function):
    """Visible-only instance norm with a hand-written backward; see ``masked_instance_norm_fused``.

    Saved for backward: ``x`` (its own dtype), ``mask``, and (B, C, 1, ...) mean, 1/std and (B, 1, 1, ...)
    visible count in the statistics dtype. The normalised input is recomputed from them in backward.
    """

    @staticmethod
    def forward(ctx, x, mask, weight, bias, eps):
        dims = tuple(range(2, x.ndim))
        dtype = _stat_dtype(x.dtype)
        shape = (1, -1) + (1,) * len(dims)
        m = mask.to(dtype)
        count = m.sum(dim=dims, keepdim=True).clamp_min(1.0)
        xf = x.to(dtype)
        mean = (xf * m).sum(dim=dims, keepdim=True) / count
        # two passes (mean, then centred squares) instead of E[x^2] - mean^2, which cancels catastrophically
        centred = (xf - mean) * m
        rstd = torch.rsqrt((centred * centred).sum(dim=dims, keepdim=True) / count + eps)
        y = centred * rstd
        if weight is not None:
            y = y * weight.to(dtype).view(shape)
        if bias is not None:
            y = y + bias.to(dtype).view(shape) * m
        ctx.save_for_backward(x, mask, weight, mean, rstd, count)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable  # mean and 1/std are saved as constants: a second derivative would be wrong, so none
    def backward(ctx, grad_out):
        x, mask, weight, mean, rstd, count = ctx.saved_tensors
        dims = tuple(range(2, x.ndim))
        dtype = mean.dtype
        shape = (1, -1) + (1,) * len(dims)
        m = mask.to(dtype)
        g = grad_out.to(dtype) * m  # masked outputs are constant zero: their gradient never flows back
        xhat = (x.to(dtype) - mean) * rstd * m
        grad_x = grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[2]:
            grad_weight = (g * xhat).sum(dim=(0, *dims)).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[3]:
            grad_bias = g.sum(dim=(0, *dims)).to(ctx.bias_dtype)
        if ctx.needs_input_grad[0]:
            gxhat = g if weight is None else g * weight.to(dtype).view(shape)
            mean_g = gxhat.sum(dim=dims, keepdim=True) / count
            mean_gx = (gxhat * xhat).sum(dim=dims, keepdim=True) / count
            grad_x = ((gxhat - mean_g - xhat * mean_gx) * rstd * m).to(x.dtype)
        return grad_x, None, grad_weight, grad_bias, None


def masked_instance_norm_fused(
    x: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``masked_instance_norm`` with a hand-written backward that keeps little for it.

    Same function, same float32 statistics (float64 for float64 input) and same zeros at masked voxels as
    ``masked_instance_norm``, computed with masked sums (no ``nonzero``, no host sync, ``torch.compile``
    friendly). Backward keeps ``x`` in its own dtype, the mask, and per-(sample, channel) mean and 1/std instead
    of autograd's several full-size float32 intermediates; the normalised input is recomputed in backward.
    The mask is treated as a constant (no gradient w.r.t. ``mask``).

    Args:
        x: (B, C, *spatial) features.
        mask: (B, 1, *spatial) binary float mask, 1 = visible.
        weight, bias: optional (C,) affine parameters.
        eps: added to the variance, as in ``torch.nn.InstanceNorm3d``.

    Returns:
        (B, C, *spatial) tensor of ``x``'s dtype. A sample with no visible voxel gives all zeros (and zero
        gradients).
    """
    return _MaskedInstanceNormFunction.apply(x, mask, weight, bias, eps)


class InstanceNorm(nn.Module):
    """Instance normalisation that becomes visible-voxel-only when given a mask.

    Parameter names (``weight``, ``bias``) equal those of ``torch.nn.InstanceNorm3d(affine=True)``, so state
    dicts are interchangeable with nnU-Net / dynamic-network-architectures networks. Without a mask it calls
    ``F.instance_norm``, i.e. it is exactly ``nn.InstanceNorm{1,2,3}d(affine=True)``.

    Args:
        num_features: channels C.
        eps: variance epsilon. Defaults to 1e-5.
        affine: learnable per-channel scale and shift. Defaults to True.
        fused: with a mask, use ``masked_instance_norm_fused`` (same function, less memory kept for backward)
            instead of the plain autograd ``masked_instance_norm``. Defaults to False. Change it on a whole
            model with ``set_fused_norm``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, fused: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.fused = bool(fused)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        norm = masked_instance_norm_fused if self.fused else masked_instance_norm
        return norm(x, mask, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, fused={self.fused}"


def set_fused_norm(model: nn.Module, enabled: bool = True) -> int:
    """Switch every ``InstanceNorm`` inside ``model`` to the fused (or back to the autograd) masked norm.

    Only the masked path changes; dense calls (no mask) always use ``F.instance_norm``. Weights and state dicts
    are untouched, so the switch can be flipped on a trained or loaded model.

    Args:
        model: any module (an ``S3D``, a ``ResEncUNet``, a DDP or compiled wrapper's inner module).
        enabled: True for ``masked_instance_norm_fused``, False for ``masked_instance_norm``. Defaults to True.

    Returns:
        The number of ``InstanceNorm`` modules switched; 0 means the model has none (e.g. nnU-Net's own class).
    """
    norms = [module for module in model.modules() if isinstance(module, InstanceNorm)]
    for module in norms:
        module.fused = bool(enabled)
    return len(norms)


def activation_dtype(x: torch.Tensor) -> torch.dtype:
    """dtype of the activations a network computes from input ``x``: the autocast dtype when autocast is on for
    ``x``'s device type (bf16 in mixed-precision training), else ``x``'s own dtype (always on devices without
    autocast, such as ``meta``)."""
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def stage_masks(
    mask: torch.Tensor, reductions: Sequence[int], block_size: int, dtype: torch.dtype | None = None
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
        dtype: cast the mask to this dtype once (the activation dtype, see ``activation_dtype``); the stage masks
            are strided views of that one tensor, so they add no memory. Defaults to None (``mask``'s dtype).

    Returns:
        One entry per stage: (B, 1, *spatial / r) mask, or None for dense stages.
    """
    if dtype is not None:
        mask = mask.to(dtype)
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
