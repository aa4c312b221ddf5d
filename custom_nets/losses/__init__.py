"""Pre-training losses, one per module; each is called as the bundles' ``loss_function``.

Every pre-training loss takes ``(outputs, views)`` from ``custom_nets.engine.PretextIteration``; S3D and the
dense MAE use ``ViewMSELoss(mask_key="mask")``, which applies ``MaskedMSELoss(pred, image, mask,
anonymization_mask)``. ``deep_supervision_weights`` are nnU-Net's weights for MONAI's ``DeepSupervisionLoss`` in
fine-tuning.
"""

from custom_nets.losses.deep_supervision import deep_supervision_weights
from custom_nets.losses.masked_mse import MaskedMSELoss
from custom_nets.losses.ntxent import NTXentLoss
from custom_nets.losses.swinunetr_ssl import SwinUNETRSSLLoss
from custom_nets.losses.view_mse import ViewMSELoss
from custom_nets.losses.voco import VoCoLoss
from custom_nets.losses.volume_fusion import VolumeFusionLoss

__all__ = [
    "deep_supervision_weights",
    "MaskedMSELoss",
    "NTXentLoss",
    "SwinUNETRSSLLoss",
    "ViewMSELoss",
    "VoCoLoss",
    "VolumeFusionLoss",
]
