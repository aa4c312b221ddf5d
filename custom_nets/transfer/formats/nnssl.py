"""nnssl's (OpenMind's) ``checkpoint_final.pth``.

``{"network_weights": state dict, "nnssl_adaptation_plan": {...}, "optimizer_state": ..., ...}``. The adaptation
plan says where the stem, the encoder stages and the input projection sit (``key_to_stem``, ``key_to_encoder``,
``keys_to_in_proj``); without a plan nnU-Net's ResEnc key names are assumed.
"""

from __future__ import annotations

from typing import Any, Mapping

from custom_nets.transfer.formats.reader import Reader
from custom_nets.transfer.layout import Layout

__all__ = ["READER"]


def detect(checkpoint: Mapping) -> bool:
    """An nnssl checkpoint has ``network_weights`` at the top level."""
    return "network_weights" in checkpoint


def unpack(checkpoint: Mapping) -> tuple[Any, Layout]:
    """The weights, and the key layout named by the adaptation plan."""
    return checkpoint["network_weights"], Layout.from_plan(checkpoint.get("nnssl_adaptation_plan"))


READER = Reader("nnssl", "'network_weights' (nnssl)", detect, unpack)
