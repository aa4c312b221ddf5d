"""This project's S3D pre-training checkpoint (``ResumableCheckpoint``'s ``checkpoint_iter<N>.pt``).

``{"network": S3D state dict, "optimizer": ..., "trainer": ...}``; the S3D keys are the ResEnc's under
``backbone.`` next to the mask tokens and densification convs (dropped when read). Also under DDP / torch.compile
prefixes.
"""

from __future__ import annotations

from typing import Any, Mapping

from custom_nets.nets.s3d import BACKBONE_PREFIX
from custom_nets.transfer.formats.reader import Reader
from custom_nets.transfer.layout import Layout, strip_wrappers

__all__ = ["READER"]


def detect(checkpoint: Mapping) -> bool:
    """A ``network`` state dict whose keys (without wrapper prefixes) start with ``backbone.``."""
    network = checkpoint.get("network")
    return isinstance(network, Mapping) and any(k.startswith(BACKBONE_PREFIX) for k in strip_wrappers(network))


def unpack(checkpoint: Mapping) -> tuple[Any, Layout]:
    """The S3D state dict; ``read_checkpoint`` turns it into dense ResEnc weights."""
    return checkpoint["network"], Layout()


READER = Reader("s3d_training_checkpoint", "'network' (training checkpoint)", detect, unpack)
