"""Pre-training and segmentation losses, one per module."""

from custom_nets.losses.masked_mse import MaskedMSELoss

__all__ = ["MaskedMSELoss"]
