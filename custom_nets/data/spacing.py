"""Voxel spacing of a dataset in the RAS axis order that preprocessing resamples in.

Preprocessing reorients every image to RAS before resampling, so a target spacing ``(x, y, z)``
refers to the left-right, posterior-anterior and inferior-superior axes, whatever the storage
order of the file. A file stored with its slice axis first (e.g. sagittal acquisitions) therefore
contributes its slice spacing to whichever RAS axis that voxel axis points along. The dataset's
median spacing per RAS axis is nnU-Net's default target spacing; it keeps thin structures
(e.g. vessels in TOF angiography at 0.3-0.6 mm) that resampling to 1 mm would blur away.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from custom_nets.data.quality import is_nibabel_file

__all__ = ["median_spacing", "ras_spacing", "resolve_target_spacing"]

logger = logging.getLogger(__name__)


def _header_affine(path: str) -> np.ndarray:
    """Voxel-to-world affine from the header only (no voxel data is read)."""
    if is_nibabel_file(path):
        return np.asarray(nib.load(path).affine, dtype=np.float64)
    import itk  # lazily: only for formats nibabel does not read

    reader = itk.ImageFileReader.New(FileName=path)
    reader.UpdateOutputInformation()
    image = reader.GetOutput()
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64)[:3, :3]
    affine[:3, :3] = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64)[:3])
    return affine


def ras_spacing(path) -> tuple[float, float, float]:
    """Voxel spacing in mm along the R, A and S world axes of one image file.

    Args:
        path: image file (NIfTI or anything ITK reads).

    Returns:
        ``(x, y, z)`` spacing in mm, the spacing of the voxel axis closest to each world axis.
    """
    affine = _header_affine(os.fspath(path))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # per voxel axis
    orientation = nib.io_orientation(affine)  # row i: world axis of voxel axis i
    ras = np.empty(3)
    ras[orientation[:, 0].astype(int)] = spacing
    return tuple(float(s) for s in ras)  # type: ignore[return-value]


def median_spacing(paths: Sequence) -> tuple[float, float, float]:
    """Median RAS spacing (mm, rounded to 1e-5 mm) per axis over image files; unreadable files are skipped
    with a warning.

    Args:
        paths: one image file per case (for multi-modal cases the first modality).

    Raises:
        ValueError: no file could be read.
    """
    spacings, unreadable = [], []
    for path in paths:
        try:
            spacings.append(ras_spacing(path))
        except Exception as err:  # noqa: BLE001 - the file is reported by the preprocessing step
            unreadable.append(f"{path} ({type(err).__name__})")
    if unreadable:
        logger.warning("Median spacing ignores %d unreadable files: %s", len(unreadable), ", ".join(unreadable[:5]))
    if not spacings:
        raise ValueError(
            f"cannot compute the median spacing: none of the {len(paths)} image files could be read; "
            "check the dataset paths or pass target_spacing=<mm> explicitly"
        )
    # Headers store float32 spacings (1.2 -> 1.2000000477); rounding to 1e-5 mm keeps the values readable.
    return tuple(round(float(v), 5) for v in np.median(np.asarray(spacings), axis=0))  # type: ignore[return-value]


def resolve_target_spacing(target_spacing, paths: Sequence) -> tuple[float, float, float]:
    """Turn ``target_spacing`` (mm number, ``[x, y, z]`` or ``"median"``) into a 3-tuple in mm.

    Args:
        target_spacing: one positive number, three positive numbers (RAS order) or ``"median"``
            for the dataset's median spacing over ``paths``.
        paths: image files used for ``"median"`` (one per case).
    """
    if isinstance(target_spacing, str):
        if target_spacing.strip().lower() != "median":
            raise ValueError(
                f"target_spacing={target_spacing!r} is not a spacing: pass a number of mm, [x, y, z] mm, or 'median'"
            )
        spacing = median_spacing(paths)
        logger.info("Median spacing of %d cases: %s mm", len(paths), tuple(round(s, 4) for s in spacing))
        return spacing
    try:
        values = np.atleast_1d(np.asarray(target_spacing, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        values = np.empty(0)
    if len(values) == 1:
        values = np.repeat(values, 3)
    if len(values) != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"target_spacing={target_spacing!r} is not one or three positive numbers in mm or 'median': "
            "pass e.g. 1.0, [0.8, 0.8, 1.0] or 'median'"
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]
