"""Residual-Encoder U-Net (nnU-Net ResEnc) with size presets, state-dict compatible with nnU-Net.

Isensee et al., "nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation",
MICCAI 2024, https://arxiv.org/abs/2404.09556 (ResEnc-L preset used by S3D / OpenMind).

``ResEncUNet(**PRESETS["resenc_l"])`` has, key for key and shape for shape, the state dict of
``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet`` built with ``dna_kwargs("resenc_l")``,
and computes the same function, so released nnU-Net / nnssl weights load strictly and vice versa.

The encoder also runs sparse: ``encoder(x, masks)`` with one mask per stage (see ``sparse.stage_masks``).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from custom_nets.errors import ConfigError
from custom_nets.nets.blocks import ConvStack, ResidualStage

__all__ = [
    "PRESETS", "ResidualEncoder", "UNetDecoder", "ResEncUNet", "resenc_unet", "dna_kwargs", "smallest_patch_size",
    "check_patch_size", "check_network_input",
]

# Size presets are data. "resenc_l" is the paper's backbone (102.35 M parameters at 1 in / 1 out); the small
# ones keep the same topology rules so tests and the demo exercise the same code paths on a CPU.
PRESETS = MappingProxyType(
    {
        "resenc_l": {
            "features": (32, 64, 128, 256, 320, 320),
            "strides": (1, 2, 2, 2, 2, 2),
            "blocks_per_stage": (1, 3, 4, 6, 6, 6),
            "decoder_convs_per_stage": 1,
        },
        # CPU demo: the same 6 stages (1/32 bottleneck, needs patches >= 64^3) at 1/8 to 1/5 of the width.
        "demo": {
            "features": (4, 8, 16, 32, 64, 64),
            "strides": (1, 2, 2, 2, 2, 2),
            "blocks_per_stage": (1, 1, 2, 2, 2, 2),
            "decoder_convs_per_stage": 1,
        },
        # Unit tests: 4 stages (1/8 bottleneck), 32^3 patches run in well under a second.
        "tiny": {
            "features": (4, 8, 12, 16),
            "strides": (1, 2, 2, 2),
            "blocks_per_stage": (1, 2, 2, 1),
            "decoder_convs_per_stage": 1,
        },
    }
)


def _per_stage(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(f"{name} needs one value per stage ({n}), got {len(values)}: {list(values)}.")
    return values


class ResidualEncoder(nn.Module):
    """Stem (one conv-IN-LReLU) followed by residual stages; returns the output of every stage.

    Encoder contract used by the S3D wrapper, the baselines and weight transfer: ``feature_channels`` and
    ``reductions`` (cumulative downsampling) per stage.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        features: channels per stage.
        strides: stride of each stage's first block (the first is normally 1).
        blocks_per_stage: residual blocks per stage.
        kernel_size: kernel edge. Defaults to 3.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        strides: Sequence[int],
        blocks_per_stage: Sequence[int],
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        n = len(features)
        strides = _per_stage(strides, n, "strides")
        blocks_per_stage = _per_stage(blocks_per_stage, n, "blocks_per_stage")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels = tuple(features)
        self.strides = strides
        self.reductions = tuple(math.prod(strides[: i + 1]) for i in range(n))
        self.kernel_size = kernel_size
        self.stem = ConvStack(spatial_dims, in_channels, features[0], kernel_size)
        stages, width = [], features[0]
        for out_channels, stride, n_blocks in zip(features, strides, blocks_per_stage):
            stages.append(ResidualStage(spatial_dims, width, out_channels, kernel_size, stride, n_blocks))
            width = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """Args:
            x: (B, in_channels, *spatial).
            masks: None (dense) or one (B, 1, *spatial / reduction) mask or None per stage.

        Returns:
            Stage outputs, finest first: [(B, features[i], *spatial / reductions[i])].
        """
        masks = [None] * len(self.stages) if masks is None else list(masks)
        if len(masks) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} stage masks, got {len(masks)}.")
        x = self.stem(x, masks[0])
        skips = []
        for stage, mask in zip(self.stages, masks):
            x = stage(x, mask)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """nnU-Net decoder: per stage transposed conv -> concat skip -> conv stack, 1x1 heads.

    A 1x1 head exists for every stage (so deep-supervision checkpoints load either way); only the finest is
    used unless ``deep_supervision``.

    Args:
        encoder: the ``ResidualEncoder`` whose outputs are decoded.
        num_classes: output channels.
        convs_per_stage: conv-IN-LReLU layers per decoder stage (int or one per decoder stage). Defaults to 1.
        deep_supervision: return the outputs of all stages, finest first. Defaults to False.
    """

    def __init__(
        self,
        encoder: ResidualEncoder,
        num_classes: int,
        convs_per_stage: int | Sequence[int] = 1,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        n_up = len(encoder.feature_channels) - 1
        convs_per_stage = _per_stage(convs_per_stage, n_up, "decoder_convs_per_stage")
        dims, channels = encoder.spatial_dims, encoder.feature_channels
        conv_type, transp_type = Conv[Conv.CONV, dims], Conv[Conv.CONVTRANS, dims]
        # nnU-Net keeps a reference to the encoder inside its decoder; registering it reproduces the duplicate
        # "decoder.encoder.*" keys of released checkpoints (the tensors are shared, not copied).
        self.encoder = encoder
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList()
        self.transpconvs = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for s in range(1, n_up + 1):
            below, skip, stride = channels[-s], channels[-(s + 1)], encoder.strides[-s]
            self.transpconvs.append(transp_type(below, skip, stride, stride, bias=True))
            self.stages.append(ConvStack(dims, 2 * skip, skip, encoder.kernel_size, convs_per_stage[s - 1]))
            self.seg_layers.append(conv_type(skip, num_classes, 1, 1, 0, bias=True))

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Args:
            skips: encoder outputs, finest first (bottleneck last).

        Returns:
            (B, num_classes, *spatial) logits at full resolution, or, with deep supervision, a list of them at
            every decoder resolution, finest first.
        """
        x = skips[-1]
        outputs = []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            if self.deep_supervision:
                outputs.append(self.seg_layers[s](x))
        if not self.deep_supervision:
            return self.seg_layers[-1](x)
        return outputs[::-1]


class ResEncUNet(nn.Module):
    """Residual-Encoder U-Net; see the module docstring and ``PRESETS``.

    Args:
        in_channels: input channels. Defaults to 1.
        num_classes: output channels. Defaults to 1.
        features: channels per stage. Defaults to ResEnc-L's.
        strides: stride per stage. Defaults to ResEnc-L's.
        blocks_per_stage: residual blocks per stage. Defaults to ResEnc-L's.
        decoder_convs_per_stage: conv layers per decoder stage. Defaults to 1.
        kernel_size: kernel edge. Defaults to 3.
        spatial_dims: 2 or 3. Defaults to 3.
        deep_supervision: return every decoder stage's output. Defaults to False.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        features: Sequence[int] = PRESETS["resenc_l"]["features"],
        strides: Sequence[int] = PRESETS["resenc_l"]["strides"],
        blocks_per_stage: Sequence[int] = PRESETS["resenc_l"]["blocks_per_stage"],
        decoder_convs_per_stage: int | Sequence[int] = 1,
        kernel_size: int = 3,
        spatial_dims: int = 3,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}.")
        self.encoder = ResidualEncoder(spatial_dims, in_channels, features, strides, blocks_per_stage, kernel_size)
        self.decoder = UNetDecoder(self.encoder, num_classes, decoder_convs_per_stage, deep_supervision)

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (the bottleneck's downsampling)."""
        return self.encoder.reductions[-1]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the fix when ``x`` cannot go through the network (shape checks only)."""
        expected_ndim = self.encoder.spatial_dims + 2
        if x.ndim != expected_ndim or x.shape[1] != self.encoder.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.encoder.in_channels}, *{self.encoder.spatial_dims} spatial sizes),"
                f" got {tuple(x.shape)}."
            )
        bad = [s for s in x.shape[2:] if s % self.divisor]
        if bad:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} is not a multiple of {self.divisor}, the network's total"
                f" downsampling; use a patch size such as {self.divisor * max(2, round(max(x.shape[2:]) / self.divisor))}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, in_channels, *spatial) -> (B, num_classes, *spatial) logits (a list with deep supervision)."""
        self.check_input(x)
        return self.decoder(self.encoder(x))


def resenc_unet(preset: str = "resenc_l", **overrides: Any) -> ResEncUNet:
    """Build a ``ResEncUNet`` from a named preset; keyword arguments override preset values or set the rest.

    Example: ``resenc_unet("resenc_l", in_channels=4, num_classes=3, deep_supervision=True)``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset '{preset}'; choose one of {sorted(PRESETS)}.")
    return ResEncUNet(**{**PRESETS[preset], **overrides})


def _preset_divisor(preset: str) -> int:
    if preset not in PRESETS:
        raise ConfigError(f"unknown network preset '{preset}'; choose one of {sorted(PRESETS)}.")
    return math.prod(PRESETS[preset]["strides"])


def smallest_patch_size(preset: str) -> int:
    """Edge of the smallest cube a preset trains on: twice its total downsampling (64 for resenc_l and demo).

    Every spatial size must be a multiple of the downsampling (``ResEncUNet.divisor``), and the bottleneck needs
    more than one voxel: instance norm in training has nothing to normalise over a single voxel.
    """
    return 2 * _preset_divisor(preset)


def check_patch_size(preset: str, patch_size: Sequence[int], key: str = "patch_size") -> tuple[int, ...]:
    """Refuse, when a config is read, a patch the preset's network cannot train on; return it as a tuple.

    Valid: every size a positive multiple of the preset's total downsampling, and more than one bottleneck voxel
    (``smallest_patch_size``). Without this check a wrong size fails deep inside the network at the first step.

    Args:
        preset: network preset of ``PRESETS``.
        patch_size: spatial size of one network input, e.g. [160, 160, 160].
        key: the config key named in the message. Defaults to "patch_size".

    Raises:
        ConfigError (a ValueError) naming the smallest valid size and the nearest valid one.
    """
    divisor = _preset_divisor(preset)
    sizes = tuple(int(s) for s in patch_size)
    fitted = [max(divisor, -(-s // divisor) * divisor) for s in sizes]
    if all(f == s for f, s in zip(fitted, sizes)) and math.prod(s // divisor for s in sizes) > 1:
        return sizes
    if math.prod(f // divisor for f in fitted) == 1:
        fitted[0] = 2 * divisor
    smallest = smallest_patch_size(preset)
    raise ConfigError(
        f"{key} {list(sizes)} does not fit network preset '{preset}': every size must be a multiple of {divisor} "
        f"(its total downsampling) with more than one voxel left at the bottleneck; the smallest valid cube is "
        f"{smallest}^3. Set --{key} \"[{','.join(str(f) for f in fitted)}]\" (the nearest valid size) or larger."
    )


def check_network_input(
    preset: str, patch_size: Sequence[int], crop_size: Sequence[int] | None = None
) -> tuple[int, ...]:
    """``check_patch_size`` of what the network sees per sample: the crop when the method cuts crops from each
    patch (SimCLR, VoCo: ``crop_size``), else the patch. The pre-training bundles call it in ``initialize``."""
    if crop_size is not None:
        return check_patch_size(preset, crop_size, key="crop_size")
    return check_patch_size(preset, patch_size)


def dna_kwargs(preset: str = "resenc_l", in_channels: int = 1, num_classes: int = 1, deep_supervision: bool = False) -> dict:
    """Keyword arguments that build the same network with ``dynamic_network_architectures``' ResidualEncoderUNet.

    Used by the equivalence tests and by the benchmark's dense anchor (nnU-Net's own class). Requires torch only.
    """
    p = PRESETS[preset]
    n = len(p["features"])
    return {
        "input_channels": in_channels,
        "n_stages": n,
        "features_per_stage": list(p["features"]),
        "conv_op": nn.Conv3d,
        "kernel_sizes": 3,
        "strides": list(p["strides"]),
        "n_blocks_per_stage": list(p["blocks_per_stage"]),
        "num_classes": num_classes,
        "n_conv_per_stage_decoder": [p["decoder_convs_per_stage"]] * (n - 1),
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
        "deep_supervision": deep_supervision,
    }


def dna_resenc_unet(preset: str = "resenc_l") -> nn.Module:
    """nnU-Net's own ``ResidualEncoderUNet(**dna_kwargs(preset))`` (1 channel in, 1 out): the dense anchor that the
    benchmark and the memory count compare S3D with. Needs the ``dynamic_network_architectures`` package."""
    try:
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    except ImportError as err:
        raise ImportError(
            "the dense anchor 'dense_dna' is nnU-Net's ResidualEncoderUNet: install it with pip install --no-deps "
            "dynamic-network-architectures==0.4.4, or leave dense_dna out of --models"
        ) from err
    return ResidualEncoderUNet(**dna_kwargs(preset))
