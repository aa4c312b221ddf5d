"""Dictionary transforms used when sampling training patches (beyond what MONAI provides)."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.transforms import Transform

__all__ = ["FillMissingMaskd", "NormaliseIntensityd", "nonzero"]


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


def nonzero(x):
    """Foreground for cropping: voxels that are non-zero in any channel (as in preprocessing)."""
    return x != 0


class NormaliseIntensityd(Transform):
    """The intensity normalisation of the segmentation preprocessing, for raw images at inference time.

    Must equal what ``prepare_segmentation_dataset`` applied to the training cache: MRI: z-score per channel
    over non-zero voxels (zeros stay 0); CT: clip to the dataset window and z-score with the dataset's
    foreground statistics (stored in the cache's ``normalisation`` record).

    Args:
        keys: image keys.
        normalisation: the ``normalisation`` dict returned by ``prepare_segmentation_dataset``
            ({"modality": "mri"} or {"modality": "ct", "statistics": {...}}).
    """

    def __init__(self, keys, normalisation: dict) -> None:
        from monai.transforms import NormalizeIntensityd

        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.normalisation = dict(normalisation)
        modality = self.normalisation.get("modality")
        if modality not in ("mri", "ct"):
            raise ValueError(f"normalisation must name modality 'mri' or 'ct', got {normalisation!r}.")
        if modality == "ct" and "statistics" not in self.normalisation:
            raise ValueError("CT normalisation needs the dataset statistics ('statistics') from preprocessing.")
        self.mri = NormalizeIntensityd(keys=self.keys, nonzero=True, channel_wise=True)

    def __call__(self, data: Mapping) -> dict:
        if self.normalisation["modality"] == "mri":
            return self.mri(data)
        from custom_nets.data.ct_normalisation import normalise_ct

        d = dict(data)
        for key in self.keys:
            d[key] = normalise_ct(d[key], self.normalisation["statistics"])
        return d
