"""Building blocks of the Residual-Encoder U-Net, each usable dense or sparse (masked).

Every block takes ``forward(x, mask=None)``. With ``mask=None`` it is the plain dense nnU-Net block. With a mask
(B, 1, *spatial) at the block's *output* resolution it is the S3D sparse block: the mask is re-applied after
every convolution and pooling, and instance norms use visible voxels only, so masked regions stay exactly zero
and never erode from their borders. Every activation keeps the dtype of the convolution output (bf16 under
autocast): pass masks in that dtype (see ``_apply``).

Attribute names (``conv``, ``norm``, ``nonlin``, ``all_modules``, ``blocks``, ``convs``, ``skip``) reproduce the
state-dict keys of nnU-Net's ``dynamic_network_architectures`` so checkpoints move between the two unchanged.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from custom_nets.nets.sparse import InstanceNorm

__all__ = ["ConvNormAct", "BasicBlockD", "ResidualStage", "ConvStack"]

NEGATIVE_SLOPE = 0.01


def _apply(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Re-mask ``x``: (B, C, *s) * (B, 1, *s) -> (B, C, *s) in ``x``'s dtype.

    Autograd keeps only ``mask`` for this product (it needs no gradient), and every block of a stage uses the
    same mask, so the product costs nothing for backward when the mask already has the activation dtype (S3D
    casts its stage masks once per forward). A mask of another dtype is cast here rather than promoting the
    activations to float32 (which would make every following norm, activation and residual sum float32); that
    cast makes a new copy at every call, which is why callers should pass masks in the activation dtype.
    """
    if mask is None:
        return x
    return x * (mask if mask.dtype == x.dtype else mask.to(x.dtype))


class ConvNormAct(nn.Module):
    """Convolution -> instance norm -> optional LeakyReLU(0.01).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels.
        kernel_size: cubic kernel edge; padding keeps the size ("same" for stride 1).
        stride: convolution stride. Defaults to 1.
        bias: convolution bias. Defaults to True (nnU-Net's ResEnc uses biases except in 1x1 projections).
        act: append LeakyReLU. Defaults to True.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.conv = conv_type(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=bias)
        self.norm = InstanceNorm(out_channels)
        modules = [self.conv, self.norm]
        if act:
            self.nonlin = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
            modules.append(self.nonlin)
        else:
            self.nonlin = None
        # Registered a second time only so that the state dict carries nnU-Net's duplicate "all_modules.N" keys.
        self.all_modules = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _apply(self.conv(x), mask)
        x = self.norm(x, mask)
        return x if self.nonlin is None else self.nonlin(x)


class BasicBlockD(nn.Module):
    """ResNet-D basic block: conv-IN-LReLU-conv-IN plus a shortcut, then LReLU.

    The shortcut is the identity, or AvgPool(stride) and/or a 1x1 conv (no bias) + IN when the stride or the
    width changes (ResNet-D keeps the 1x1 conv unstrided so it sees every input voxel).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels.
        kernel_size: kernel edge of both 3^3 convolutions.
        stride: stride of the first convolution. Defaults to 1.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, act=True)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, act=False)
        self.nonlin2 = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(Pool[Pool.AVG, spatial_dims](stride, stride))
        if in_channels != out_channels:
            shortcut.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, 1, bias=False, act=False))
        self.skip = nn.Sequential(*shortcut) if shortcut else None

    def shortcut(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.skip is None:
            return x
        dtype = x.dtype
        for layer in self.skip:
            # CPU autocast runs average pooling in float32 (CUDA autocast leaves it alone); returning to the
            # block's dtype keeps the residual sum, and every block after it, in the activation dtype.
            x = layer(x, mask) if isinstance(layer, ConvNormAct) else _apply(layer(x).to(dtype), mask)
        return x

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        residual = self.shortcut(x, mask)
        out = self.conv2(self.conv1(x, mask), mask)
        return self.nonlin2(out + residual)


class ResidualStage(nn.Module):
    """``n_blocks`` BasicBlockD; the first one changes width and resolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels.
        kernel_size: kernel edge.
        stride: downsampling of the stage.
        n_blocks: number of residual blocks (>= 1).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int, n_blocks: int):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"a residual stage needs at least 1 block, got n_blocks={n_blocks}.")
        blocks = [BasicBlockD(spatial_dims, in_channels, out_channels, kernel_size, stride)]
        blocks += [BasicBlockD(spatial_dims, out_channels, out_channels, kernel_size, 1) for _ in range(n_blocks - 1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x


class ConvStack(nn.Module):
    """``n_convs`` ConvNormAct at one resolution (the stem and every decoder stage).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels of the first / all following convolutions.
        kernel_size: kernel edge.
        n_convs: number of conv-IN-LReLU layers. Defaults to 1.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, n_convs: int = 1):
        super().__init__()
        if n_convs < 1:
            raise ValueError(f"a conv stack needs at least 1 convolution, got n_convs={n_convs}.")
        convs = [ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size)]
        convs += [ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size) for _ in range(n_convs - 1)]
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x, mask)
        return x
