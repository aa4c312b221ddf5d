"""Networks: the dense ResEnc U-Net (nnU-Net compatible) and its presets with the patch-size check, its sparse
operations, the S3D wrapper, the baselines' pre-training wrappers (heads on the encoder, the AMAES light decoder),
and ``pretrained_state_dict``, the one converter from any pre-training network to fine-tuning weights."""

from custom_nets.nets.resenc import (
    PRESETS,
    ResEncUNet,
    ResidualEncoder,
    UNetDecoder,
    check_network_input,
    check_patch_size,
    dna_kwargs,
    dna_resenc_unet,
    resenc_unet,
    smallest_patch_size,
)
from custom_nets.nets.heads import ContrastiveEncoder, SwinUNETRStyleNet, VoCoNet
from custom_nets.nets.light_decoder import AMAESNet, LightDecoder
from custom_nets.nets.pretrained_weights import pretrained_state_dict
from custom_nets.nets.s3d import S3D, dense_state_dict
from custom_nets.nets.sparse import InstanceNorm, masked_instance_norm, stage_masks

__all__ = [
    "PRESETS",
    "ResEncUNet",
    "ResidualEncoder",
    "UNetDecoder",
    "dna_kwargs",
    "dna_resenc_unet",
    "resenc_unet",
    "check_patch_size",
    "check_network_input",
    "smallest_patch_size",
    "S3D",
    "dense_state_dict",
    "pretrained_state_dict",
    "InstanceNorm",
    "masked_instance_norm",
    "stage_masks",
    "ContrastiveEncoder",
    "VoCoNet",
    "SwinUNETRStyleNet",
    "AMAESNet",
    "LightDecoder",
]
