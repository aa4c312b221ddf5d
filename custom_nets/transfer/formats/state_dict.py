"""A plain state dict: this project's final ``models/model.pt``, an S3D model's or nnU-Net's ResEnc state dict.

Asked last: any top-level tensor makes a file a state dict.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from custom_nets.transfer.formats.reader import Reader
from custom_nets.transfer.layout import Layout

__all__ = ["READER"]


def detect(checkpoint: Mapping) -> bool:
    """Any tensor at the top level."""
    return any(isinstance(v, torch.Tensor) for v in checkpoint.values())


def unpack(checkpoint: Mapping) -> tuple[Any, Layout]:
    """The file itself, with nnU-Net's key layout."""
    return checkpoint, Layout()


READER = Reader("state_dict", "a plain state dict", detect, unpack)
