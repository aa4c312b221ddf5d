"""nnU-Net's foreground oversampling: where each training patch of a batch is centred.

nnU-Net (Isensee et al., Nature Methods 2021, https://www.nature.com/articles/s41592-020-01008-z) decides per
*batch position*, not per sample: with ``oversample_foreground_percent = 0.33``, the sample at position ``i`` of
a batch of ``B`` is forced onto the foreground when ``not i < round(B * (1 - 0.33))``, i.e. the last third of
every batch (batch 2: the second patch; batch 6: the last two). A forced patch is centred on a voxel of a
foreground class present in the case (class drawn uniformly, then a voxel of it uniformly); every other patch
is centred at a random location, so it may or may not contain foreground. MONAI's ``RandCropByPosNegLabeld``
instead flips a coin per sample and centres the other patches on *background* voxels.

Two pieces implement it with MONAI's data loading:

- :class:`ForegroundOversampledDataset`, a MONAI ``Dataset`` whose ``__getitems__`` receives the indices of a
  whole batch from PyTorch's ``DataLoader`` (in the worker that builds the batch) and tells each sample whether
  it is forced, through ``data["force_foreground"]``;
- :class:`RandPatchCenterd`, the transform that reads that flag and chooses the patch centre, written to
  ``data["patch_center"]`` for :class:`custom_nets.data.spatial_augment.RandAffineCropd`, which cuts the patch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Randomizable, Transform, apply_transform

__all__ = [
    "CENTER_KEY",
    "FORCE_KEY",
    "OVERSAMPLE_FOREGROUND_PERCENT",
    "ForegroundOversampledDataset",
    "RandPatchCenterd",
    "forced_foreground",
]

OVERSAMPLE_FOREGROUND_PERCENT = 0.33  # nnU-Net's default
FORCE_KEY = "force_foreground"
CENTER_KEY = "patch_center"


def forced_foreground(
    batch_size: int, oversample_foreground_percent: float = OVERSAMPLE_FOREGROUND_PERCENT
) -> list[bool]:
    """Which positions of a batch are forced onto the foreground: nnU-Net's rule.

    Position ``i`` is forced when ``not i < round(batch_size * (1 - oversample_foreground_percent))`` (Python's
    ``round``). Batch 2 -> [False, True]; batch 6 -> [False] * 4 + [True] * 2; batch 1 -> [False].

    Raises:
        ValueError: ``batch_size`` < 1 or the percentage is outside [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= oversample_foreground_percent <= 1.0:
        raise ValueError(
            f"oversample_foreground_percent must be in [0, 1] (nnU-Net: 0.33), got {oversample_foreground_percent}"
        )
    random_positions = round(batch_size * (1.0 - oversample_foreground_percent))
    return [not i < random_positions for i in range(batch_size)]


class ForegroundOversampledDataset(Dataset):
    """A MONAI ``Dataset`` whose batches follow nnU-Net's foreground oversampling.

    PyTorch's ``DataLoader`` gives the dataset the indices of a whole batch (``__getitems__``, in the worker that
    builds the batch); before the transform runs, the sample at batch position ``i`` gets
    ``data[force_key] = forced_foreground(len(indices), oversample_foreground_percent)[i]``. Indexing one sample
    (``dataset[i]``) forces nothing. The sampler (which cases) and the loader are unchanged.

    Args:
        data: the datalist (dicts).
        transform: the training transforms; :class:`RandPatchCenterd` reads the flag.
        oversample_foreground_percent: share of each batch forced onto the foreground. Defaults to 0.33.
        force_key: name of the flag. Defaults to "force_foreground".
    """

    def __init__(
        self,
        data: Sequence,
        transform: Callable | Sequence[Callable] | None = None,
        oversample_foreground_percent: float = OVERSAMPLE_FOREGROUND_PERCENT,
        force_key: str = FORCE_KEY,
    ) -> None:
        super().__init__(data, transform)
        forced_foreground(1, oversample_foreground_percent)  # checks the value
        self.oversample_foreground_percent = oversample_foreground_percent
        self.force_key = force_key

    def _flagged(self, index: int, force: bool):
        item = self.data[index]
        if not isinstance(item, Mapping):
            raise TypeError(
                f"ForegroundOversampledDataset needs dict items (a MONAI datalist), item {index} is "
                f"{type(item).__name__}"
            )
        item = {**item, self.force_key: force}
        return apply_transform(self.transform, item) if self.transform is not None else item

    def _transform(self, index: int):
        return self._flagged(index, False)

    def __getitems__(self, indices: Sequence[int]) -> list:
        forced = forced_foreground(len(indices), self.oversample_foreground_percent)
        return [self._flagged(int(i), f) for i, f in zip(indices, forced)]


def _start_range(size: int, patch: int) -> tuple[int, int]:
    """Lowest and highest patch start along one axis: the patch inside the image, or centred when it is larger."""
    if size >= patch:
        return 0, size - patch
    start = -((patch - size) // 2)
    return start, start


class RandPatchCenterd(Randomizable, Transform):
    """Choose the centre of a training patch: a random location or, when forced, a foreground voxel.

    Writes ``data[center_key]``: an int64 tensor of voxel indices, one per spatial axis; the patch then covers
    ``[center - patch_size // 2, center - patch_size // 2 + patch_size)`` (it may extend outside the image, which
    is zero there). Removes ``data[force_key]``.

    - Random location (nnU-Net's random bounding box): the patch start is uniform over the positions that keep
      the patch inside the image; along an axis where the image is smaller than the patch, the patch is centred.
    - Forced (``data[force_key]`` true and ``label_key`` set): a class drawn uniformly among the foreground
      classes (label > 0) present in the case, then one of its voxels uniformly; the centre is that voxel,
      moved just enough to keep the patch inside the image. A case without foreground gets a random location.

    Args:
        spatial_size: patch size in voxels, one per spatial axis.
        image_key: key of the image, whose shape (C, *spatial) sets the ranges. Defaults to "image".
        label_key: key of the (1, *spatial) label map; None (pre-training) never forces. Defaults to "label".
        force_key: the flag set by :class:`ForegroundOversampledDataset`; absent means not forced.
        center_key: where the centre is written. Defaults to "patch_center".
    """

    def __init__(
        self,
        spatial_size: Sequence[int],
        image_key: Hashable = "image",
        label_key: Hashable | None = "label",
        force_key: Hashable = FORCE_KEY,
        center_key: Hashable = CENTER_KEY,
    ) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if any(s < 1 for s in self.spatial_size):
            raise ValueError(f"spatial_size must hold positive patch sizes, got {list(spatial_size)}")
        self.image_key, self.label_key = image_key, label_key
        self.force_key, self.center_key = force_key, center_key

    def _random_start(self, shape: Sequence[int]) -> list[int]:
        ranges = [_start_range(n, p) for n, p in zip(shape, self.spatial_size)]
        return [int(self.R.randint(low, high + 1)) for low, high in ranges]

    def _foreground_voxel(self, label: torch.Tensor) -> list[int] | None:
        flat = torch.as_tensor(label).reshape(-1).long()
        counts = torch.bincount(flat.clamp(min=0))
        classes = [c for c in range(1, len(counts)) if counts[c] > 0]
        if not classes:
            return None
        chosen = classes[int(self.R.randint(len(classes)))]
        nth = int(self.R.randint(int(counts[chosen])))
        flat_index = int(torch.nonzero(flat == chosen)[nth])
        return [int(i) for i in np.unravel_index(flat_index, tuple(label.shape[1:]))]

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        shape = tuple(d[self.image_key].shape[1:])
        if len(shape) != len(self.spatial_size):
            raise ValueError(
                f"spatial_size {list(self.spatial_size)} has {len(self.spatial_size)} axes but '{self.image_key}' "
                f"has {len(shape)} spatial axes (shape {tuple(d[self.image_key].shape)}): give one size per axis"
            )
        force = bool(d.pop(self.force_key, False))
        half = [p // 2 for p in self.spatial_size]
        voxel = self._foreground_voxel(d[self.label_key]) if force and self.label_key is not None else None
        if voxel is None:
            start = self._random_start(shape)
        else:
            start = []
            for v, h, n, p in zip(voxel, half, shape, self.spatial_size):
                low, high = _start_range(n, p)
                start.append(min(max(v - h, low), high))
        d[self.center_key] = torch.tensor([s + h for s, h in zip(start, half)], dtype=torch.int64)
        return d
