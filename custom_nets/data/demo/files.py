"""How the demo writers store a case: its spacing and orientation by case number, and its NIfTI header.

Real datasets mix voxel sizes and orientations, so the demo datasets do too: cases with
``index % 4`` in {1, 3} get the anisotropic spacing (1.2, 1.0, 1.5) mm and cases with
``index % 4`` in {2, 3} are stored with LPS instead of RAS axes. The reorientation and
resampling steps of preprocessing are then exercised by every demo run.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from custom_nets.data.atomic import atomic_save_nifti

__all__ = ["ANISOTROPIC_SPACING", "case_spacing", "save_demo_nifti", "stored_in_lps"]

#: Anisotropic spacing (mm) of every other demo case.
ANISOTROPIC_SPACING = (1.2, 1.0, 1.5)


def case_spacing(index: int) -> tuple[float, float, float]:
    """Voxel size (mm, x y z) of demo case ``index``: anisotropic when ``index % 4`` is 1 or 3."""
    return ANISOTROPIC_SPACING if index % 4 in (1, 3) else (1.0, 1.0, 1.0)


def stored_in_lps(index: int) -> bool:
    """Whether demo case ``index`` is stored with LPS axes (``index % 4`` is 2 or 3) instead of RAS."""
    return index % 4 in (2, 3)


def _to_lps(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store the same world-space image with LPS axes (flip the first two array axes)."""
    flipped = volume[::-1, ::-1, :].copy()
    flip = np.eye(4)
    for axis in (0, 1):
        flip[axis, axis] = -1.0
        flip[axis, 3] = volume.shape[axis] - 1
    return flipped, affine @ flip


def _nifti(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Wrap an array as NIfTI with matching qform/sform (scanner-anatomical, code 1)."""
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def save_demo_nifti(path: Path, volume: np.ndarray, affine: np.ndarray, index: int) -> None:
    """Write ``volume`` (RAS, 4x4 ``affine`` in mm) of demo case ``index`` atomically to ``path``.

    The world-space image is the same either way; only case numbers that ``stored_in_lps``
    selects have their first two array axes flipped and the affine adjusted to match.
    """
    if stored_in_lps(index):
        volume, affine = _to_lps(volume, affine)
    atomic_save_nifti(_nifti(volume, affine), path)
