"""AMAES' pre-training network: the ResEnc encoder and a light decoder without skip connections.

Munk et al., "AMAES: Augmented Masked Autoencoder Pretraining on Public Brain MRI Data for 3D-Native
Segmentation", arXiv 2024, https://arxiv.org/abs/2408.00640.

AMAES reconstructs the masked patch from the bottleneck alone: the decoder is light (half the convolutions of
a U-Net decoder, 20 % faster pre-training and better fine-tuning in AMAES' Table 2) and has no skip
connections, so everything needed for the reconstruction must pass through the encoder's deepest features. The
decoder is thrown away after pre-training; fine-tuning attaches a new U-Net decoder with skips to the
pre-trained encoder (``decoder_pretrained = False``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from custom_nets.nets.blocks import ConvStack
from custom_nets.nets.resenc import ResEncUNet

__all__ = ["LightDecoder", "AMAESNet"]


class LightDecoder(nn.Module):
    """Upsample the bottleneck stage by stage to the first stage's resolution, without skips.

    Per stage (coarse to fine): transposed conv (kernel = stride = the encoder stage's stride) to the channels of
    the next finer encoder stage, then ``convs_per_stage`` conv-IN-LReLU; a 1x1 conv head at the end. It mirrors
    the ResEnc U-Net decoder with the skip concatenation removed, so each conv sees half the channels.

    Args:
        spatial_dims: 2 or 3.
        feature_channels: channels of every encoder stage, finest first (``encoder.feature_channels``).
        strides: stride of every encoder stage (``encoder.strides``).
        out_channels: reconstruction channels.
        kernel_size: conv kernel edge. Defaults to 3.
        convs_per_stage: conv layers per stage. Defaults to 1.

    Call: ``decoder(bottleneck)`` with (B, feature_channels[-1], *spatial / reduction) returns
        (B, out_channels, *spatial / strides[0]) (full resolution for ResEnc, whose first stride is 1).
    """

    def __init__(
        self,
        spatial_dims: int,
        feature_channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int,
        kernel_size: int = 3,
        convs_per_stage: int = 1,
    ) -> None:
        super().__init__()
        feature_channels, strides = tuple(feature_channels), tuple(strides)
        if len(feature_channels) != len(strides) or len(feature_channels) < 2:
            raise ValueError(
                f"feature_channels and strides need one entry per encoder stage (>= 2 stages), got "
                f"{list(feature_channels)} and {list(strides)}."
            )
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        transp_type, conv_type = Conv[Conv.CONVTRANS, spatial_dims], Conv[Conv.CONV, spatial_dims]
        self.transpconvs, self.stages = nn.ModuleList(), nn.ModuleList()
        for s in range(1, len(feature_channels)):
            below, above, stride = feature_channels[-s], feature_channels[-(s + 1)], strides[-s]
            self.transpconvs.append(transp_type(below, above, stride, stride, bias=True))
            self.stages.append(ConvStack(spatial_dims, above, above, kernel_size, convs_per_stage))
        self.head = conv_type(feature_channels[0], out_channels, 1, 1, 0, bias=True)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        x = bottleneck
        for up, stage in zip(self.transpconvs, self.stages):
            x = stage(up(x))
        return self.head(x)


class AMAESNet(nn.Module):
    """ResEnc encoder + ``LightDecoder`` for AMAES pre-training; the U-Net decoder of ``backbone`` is unused.

    The backbone's own decoder (transposed convs, stages, heads) gets no gradient, so it is frozen: optimisers
    skip it and DDP does not wait for it. Its initial values stay in ``backbone.state_dict()``, which therefore
    still loads strictly into a ResEnc U-Net; only the encoder is meant to be transferred.

    Args:
        backbone: the ``ResEncUNet`` whose encoder is pre-trained.
        out_channels: reconstruction channels. Defaults to the encoder's input channels.
        convs_per_stage: conv layers per light-decoder stage. Defaults to 1.

    Call: ``network(x)`` with (B, in_channels, *spatial) returns the (B, out_channels, *spatial) reconstruction.
    """

    decoder_pretrained: bool = False

    def __init__(self, backbone: ResEncUNet, out_channels: int | None = None, convs_per_stage: int = 1) -> None:
        super().__init__()
        if not isinstance(backbone, ResEncUNet):
            raise ValueError(
                f"backbone must be a ResEncUNet (custom_nets.nets.resenc_unet), got {type(backbone).__name__}."
            )
        self.backbone = backbone
        encoder = backbone.encoder
        self.decoder = LightDecoder(
            encoder.spatial_dims,
            encoder.feature_channels,
            encoder.strides,
            encoder.in_channels if out_channels is None else out_channels,
            encoder.kernel_size,
            convs_per_stage,
        )
        # not backbone.decoder.requires_grad_(False): the U-Net decoder also holds a reference to the encoder
        for unused in (backbone.decoder.transpconvs, backbone.decoder.stages, backbone.decoder.seg_layers):
            unused.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.backbone.check_input(x)
        return self.decoder(self.backbone.encoder(x)[-1])
