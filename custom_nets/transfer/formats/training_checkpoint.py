"""A training checkpoint of a dense ResEnc U-Net: a baseline's or a fine-tuning run's ``checkpoint_iter<N>.pt``.

``{"network": dense ResEnc state dict, "optimizer": ..., "trainer": ...}`` (read after the S3D reader, which takes
the ones whose network is an S3D model).
"""

from __future__ import annotations

from typing import Any, Mapping

from custom_nets.transfer.formats.reader import Reader
from custom_nets.transfer.layout import Layout

__all__ = ["READER"]


def detect(checkpoint: Mapping) -> bool:
    """A state dict under ``network``."""
    return isinstance(checkpoint.get("network"), Mapping)


def unpack(checkpoint: Mapping) -> tuple[Any, Layout]:
    """The network's state dict, with nnU-Net's key layout."""
    return checkpoint["network"], Layout()


READER = Reader("training_checkpoint", "'network' (training checkpoint)", detect, unpack)
