"""A MONAI ``CheckpointSaver`` file or model-zoo bundle weights: ``{"model": state dict}`` or
``{"state_dict": state dict, ...}``."""

from __future__ import annotations

from typing import Any, Mapping

from custom_nets.transfer.formats.reader import Reader
from custom_nets.transfer.layout import Layout

__all__ = ["READER"]


def detect(checkpoint: Mapping) -> bool:
    """A state dict under ``model`` or ``state_dict``."""
    return isinstance(checkpoint.get("model"), Mapping) or isinstance(checkpoint.get("state_dict"), Mapping)


def unpack(checkpoint: Mapping) -> tuple[Any, Layout]:
    """The state dict under ``model`` (preferred) or ``state_dict``."""
    state = checkpoint["model"] if isinstance(checkpoint.get("model"), Mapping) else checkpoint["state_dict"]
    return state, Layout()


READER = Reader("monai_bundle", "'model'/'state_dict' (MONAI)", detect, unpack)
