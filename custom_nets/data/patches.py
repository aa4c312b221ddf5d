"""Dictionary transforms used when sampling training patches (beyond what MONAI provides)."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.transforms import Transform

__all__ = ["FillMissingMaskd"]


class FillMissingMaskd(Transform):
    """Add an all-zero mask for entries that have none, so every batch has the same keys.

    Used for optional per-image masks such as OpenMind's anonymization masks: a missing mask means "nothing
    anonymised", i.e. zeros, and collation needs the key in every sample. An empty ``keys`` makes it a no-op
    (the config passes an empty list when anonymization masks are switched off).

    Args:
        keys: mask keys to fill when missing or None.
        like: key of the loaded (C, *spatial) image whose spatial shape the (1, *spatial) zeros take.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, like: str = "image") -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.like = like

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.keys:
            if d.get(key) is None:
                if self.like not in d:
                    raise KeyError(f"FillMissingMaskd needs '{self.like}' in the sample to size '{key}'; got {sorted(d)}.")
                d[key] = torch.zeros((1, *d[self.like].shape[1:]), dtype=torch.float32)
        return d
