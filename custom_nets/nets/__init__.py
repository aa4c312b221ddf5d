"""Networks: the dense ResEnc U-Net (nnU-Net compatible), its sparse operations, the S3D wrapper and the
baselines' pre-training wrappers (heads on the encoder, the AMAES light decoder)."""

from custom_nets.nets.resenc import PRESETS, ResEncUNet, ResidualEncoder, UNetDecoder, dna_kwargs, dna_resenc_unet, resenc_unet
from custom_nets.nets.heads import ContrastiveEncoder, SwinUNETRStyleNet, VoCoNet
from custom_nets.nets.light_decoder import AMAESNet, LightDecoder
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
    "S3D",
    "dense_state_dict",
    "InstanceNorm",
    "masked_instance_norm",
    "stage_masks",
    "ContrastiveEncoder",
    "VoCoNet",
    "SwinUNETRStyleNet",
    "AMAESNet",
    "LightDecoder",
]
