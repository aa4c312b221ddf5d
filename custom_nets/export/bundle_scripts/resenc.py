"""Dense Residual-Encoder U-Net (nnU-Net ResEnc) in plain PyTorch, for exported model-zoo bundles.

This file is copied into every exported bundle as ``scripts/resenc.py`` so that the bundle runs without the
``custom_nets`` package: ``network_def`` in the exported ``inference.yaml`` builds ``ResEncUNet`` from here and
``models/model.pt`` loads into it strictly. It depends on ``torch`` only and is TorchScript-compatible
(``monai.bundle ckpt_export`` scripts it into ``models/model.ts``).

It is the inference (dense, no mask, no deep supervision) part of ``custom_nets.nets.resenc.ResEncUNet``:
same modules, same state-dict keys (nnU-Net's, including the duplicate ``all_modules.N`` and
``decoder.encoder.*`` names), same function. A test checks both, key for key and output for output.

Shapes: input (B, in_channels, *spatial) with every spatial size a multiple of the total downsampling
(product of ``strides``); output (B, num_classes, *spatial) logits.
"""

from typing import List, Sequence

import torch
from torch import nn

__all__ = ["ResEncUNet"]

NEGATIVE_SLOPE = 0.01


def _conv(spatial_dims: int):
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


class ConvNormAct(nn.Module):
    """Conv -> InstanceNorm(affine) -> optional LeakyReLU(0.01); ``all_modules`` holds the same layers again
    (nnU-Net's duplicate state-dict keys)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, bias: bool = True, act: bool = True) -> None:
        super().__init__()
        norm_type = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        self.conv = _conv(spatial_dims)(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=bias)
        self.norm = norm_type(out_channels, eps=1e-5, affine=True)
        layers = [self.conv, self.norm]
        if act:
            self.nonlin = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
            layers.append(self.nonlin)
        self.all_modules = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class BasicBlockD(nn.Module):
    """ResNet-D block: conv-IN-LReLU-conv-IN plus shortcut (identity, or AvgPool and/or 1x1 conv-IN), LReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, act=True)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, act=False)
        self.nonlin2 = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        shortcut: List[nn.Module] = []
        if stride != 1:
            shortcut.append((nn.AvgPool3d if spatial_dims == 3 else nn.AvgPool2d)(stride, stride))
        if in_channels != out_channels:
            shortcut.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, 1, bias=False, act=False))
        # nn.Identity has no tensors, so the state dict has no "skip" keys, as in nnU-Net's block.
        self.skip = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class ResidualStage(nn.Module):
    """``n_blocks`` BasicBlockD; the first one changes width and resolution."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int, n_blocks: int):
        super().__init__()
        blocks = [BasicBlockD(spatial_dims, in_channels, out_channels, kernel_size, stride)]
        blocks += [BasicBlockD(spatial_dims, out_channels, out_channels, kernel_size, 1) for _ in range(n_blocks - 1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ConvStack(nn.Module):
    """``n_convs`` ConvNormAct at one resolution (the stem and every decoder stage)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, n_convs: int = 1):
        super().__init__()
        convs = [ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size)]
        convs += [ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size) for _ in range(n_convs - 1)]
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class ResidualEncoder(nn.Module):
    """Stem and residual stages; returns every stage's output, finest first."""

    def __init__(self, spatial_dims: int, in_channels: int, features: Sequence[int], strides: Sequence[int],
                 blocks_per_stage: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__()
        self.stem = ConvStack(spatial_dims, in_channels, features[0], kernel_size)
        stages, width = [], features[0]
        for out_channels, stride, n_blocks in zip(features, strides, blocks_per_stage):
            stages.append(ResidualStage(spatial_dims, width, out_channels, kernel_size, stride, n_blocks))
            width = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        skips: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Transposed conv -> concatenate skip -> conv stack per stage; the finest 1x1 head gives the logits.

    Every stage has a head (nnU-Net's deep-supervision layout, so its checkpoints load); only the last runs.
    """

    def __init__(self, encoder: ResidualEncoder, features: Sequence[int], strides: Sequence[int], num_classes: int,
                 convs_per_stage: int = 1, kernel_size: int = 3, spatial_dims: int = 3) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        transp = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.encoder = encoder  # registered again only for nnU-Net's "decoder.encoder.*" keys (shared tensors)
        self.stages = nn.ModuleList()
        self.transpconvs = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        n_up = len(features) - 1
        for s in range(1, n_up + 1):
            below, skip, stride = features[-s], features[-(s + 1)], strides[-s]
            self.transpconvs.append(transp(below, skip, stride, stride, bias=True))
            self.stages.append(ConvStack(spatial_dims, 2 * skip, skip, kernel_size, convs_per_stage))
            self.seg_layers.append(conv(skip, num_classes, 1, 1, 0, bias=True))
        self.n_up = n_up

    def forward(self, skips: List[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        s = 0
        for up, stage in zip(self.transpconvs, self.stages):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            s += 1
        out = x
        i = 0
        for head in self.seg_layers:
            if i == self.n_up - 1:
                out = head(x)
            i += 1
        return out


class ResEncUNet(nn.Module):
    """Dense ResEnc U-Net for inference.

    Args:
        in_channels: input channels (modalities).
        num_classes: output channels (classes including background).
        features: channels per encoder stage, e.g. ResEnc-L's (32, 64, 128, 256, 320, 320).
        strides: stride of each stage, e.g. (1, 2, 2, 2, 2, 2).
        blocks_per_stage: residual blocks per stage, e.g. (1, 3, 4, 6, 6, 6).
        decoder_convs_per_stage: conv layers per decoder stage. Defaults to 1.
        kernel_size: kernel edge. Defaults to 3.
        spatial_dims: 2 or 3. Defaults to 3.
    """

    def __init__(self, in_channels: int, num_classes: int, features: Sequence[int], strides: Sequence[int],
                 blocks_per_stage: Sequence[int], decoder_convs_per_stage: int = 1, kernel_size: int = 3,
                 spatial_dims: int = 3) -> None:
        super().__init__()
        features, strides, blocks_per_stage = list(features), list(strides), list(blocks_per_stage)
        if not len(features) == len(strides) == len(blocks_per_stage) >= 2:
            raise ValueError(
                f"features, strides and blocks_per_stage need one value per stage (at least 2 stages), got "
                f"{features}, {strides}, {blocks_per_stage}."
            )
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}.")
        self.encoder = ResidualEncoder(spatial_dims, in_channels, features, strides, blocks_per_stage, kernel_size)
        self.decoder = UNetDecoder(self.encoder, features, strides, num_classes, int(decoder_convs_per_stage),
                                   kernel_size, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *spatial) -> (B, num_classes, *spatial) logits."""
        return self.decoder(self.encoder(x))
