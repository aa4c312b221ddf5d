"""Load one image file channel-first and reoriented to RAS, the common first step of every cache."""

from __future__ import annotations

import os

import numpy as np
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation

from custom_nets.data.preprocessing import RAS_LABELS
from custom_nets.data.quality import is_nibabel_file

__all__ = ["load_ras"]


def load_ras(path) -> MetaTensor:
    """Read ``path`` as a float32 ``(C, x, y, z)`` MetaTensor in RAS orientation (affine in mm).

    NIfTI/Analyze/MGH files are read with nibabel, anything else with ITK. A 3D file gives
    ``C = 1``; a 4D NIfTI ``(x, y, z, C)`` gives its ``C`` volumes as channels.

    Args:
        path: image file.
    """
    path = os.fspath(path)
    nibabel = is_nibabel_file(path)
    # NIfTI stores a 3D volume with unused 4th/5th axes as (x, y, z, 1, 1): drop them.
    options = {"squeeze_non_spatial_dims": True} if nibabel else {}
    loader = LoadImage(
        reader="NibabelReader" if nibabel else "ITKReader", image_only=True, dtype=np.float32,
        ensure_channel_first=True, **options,
    )
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(loader(path))
