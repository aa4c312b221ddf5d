"""Dictionary transforms used when sampling training patches (beyond what MONAI provides)."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform

__all__ = ["FillMissingMaskd"]


class FillMissingMaskd(MapTransform):
    """Add an all-zero mask for entries that have none, so every batch has the same keys.

    Used for optional per-image masks such as OpenMind's anonymization masks: a missing mask means "nothing
    anonymised", i.e. zeros, and collation needs the key in every sample.

    Args:
        keys: mask keys to fill when missing.
        like: key of the loaded image whose spatial shape the zeros take; the mask has one channel.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, like: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.like = like

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.keys:
            if d.get(key) is None:
                reference = d[self.like]
                d[key] = torch.zeros((1, *reference.shape[1:]), dtype=torch.float32)
        return d
