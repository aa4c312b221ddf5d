"""Read NIfTI label maps for evaluation and check that a prediction lies on its reference's grid.

Metrics are computed voxel by voxel, so a prediction must have the same shape *and* the same
voxel-to-world affine as its reference label; a prediction saved in the preprocessed space
(cropped, resampled, reoriented) has to be mapped back first (MONAI's ``Invertd``). The check
names both files and both geometries so that the mismatch can be found without opening them.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import torch

__all__ = ["AFFINE_ATOL_MM", "check_same_geometry", "read_label_map", "voxel_spacing_mm"]

#: Largest difference (mm) between two affine entries that still counts as the same grid.
AFFINE_ATOL_MM = 1e-3


def _load(path: str | os.PathLike) -> nib.Nifti1Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map '{path}' does not exist: check the prediction folder and the datalist")
    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(f"cannot read '{path}' as NIfTI ({err}); re-save it as .nii or .nii.gz") from err


def read_label_map(path: str | os.PathLike) -> tuple[torch.Tensor, nib.Nifti1Image]:
    """Load an integer label map.

    Args:
        path: NIfTI file (``.nii`` or ``.nii.gz``) holding one 3D label map; a 4D file with a
            single volume (shape ``(D, H, W, 1)``) is accepted too.

    Returns:
        ``(labels, image)``: a (D, H, W) integer tensor (uint8 when all values fit, else int32)
        and the nibabel image (for the header and affine).

    Raises:
        ValueError: the file is not 3D, or holds non-integer or non-finite values.
    """
    image = _load(path)
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"label map '{path}' has shape {data.shape}: expected one 3D volume (D, H, W)")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise ValueError(
                f"label map '{path}' holds non-integer values: save the argmax label map, not probabilities"
            )
    if data.size and data.min() >= 0 and data.max() <= np.iinfo(np.uint8).max:
        data = data.astype(np.uint8)
    else:
        data = data.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(data)), image


def voxel_spacing_mm(image: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size along the three array axes in mm, from the NIfTI header (``pixdim``)."""
    return tuple(float(z) for z in image.header.get_zooms()[:3])


def _describe(image: nib.Nifti1Image, shape) -> str:
    codes = "".join(nib.aff2axcodes(image.affine))
    spacing = ", ".join(f"{s:g}" for s in voxel_spacing_mm(image))
    affine = np.array2string(np.asarray(image.affine), precision=4, suppress_small=True, separator=", ")
    affine = " ".join(affine.split())
    return f"shape {tuple(shape)}, spacing ({spacing}) mm, orientation {codes}, affine {affine}"


def check_same_geometry(
    pred_image: nib.Nifti1Image,
    pred_shape,
    label_image: nib.Nifti1Image,
    label_shape,
    pred_path: str | os.PathLike,
    label_path: str | os.PathLike,
    atol_mm: float = AFFINE_ATOL_MM,
) -> None:
    """Raise ``ValueError`` unless prediction and label have the same shape and affine.

    Args:
        pred_image, label_image: the loaded NIfTI images.
        pred_shape, label_shape: shapes of their (D, H, W) label maps.
        pred_path, label_path: file names used in the error message.
        atol_mm: largest allowed difference between affine entries (mm). Default 1e-3.
    """
    same_shape = tuple(pred_shape) == tuple(label_shape)
    same_affine = np.allclose(pred_image.affine, label_image.affine, rtol=0.0, atol=atol_mm)
    if same_shape and same_affine:
        return
    what = "shape" if not same_shape else "affine"
    raise ValueError(
        f"prediction '{os.fspath(pred_path)}' and label '{os.fspath(label_path)}' are on different grids "
        f"({what} differs):\n  prediction: {_describe(pred_image, pred_shape)}\n"
        f"  label:      {_describe(label_image, label_shape)}\n"
        "Save the prediction on the label's grid (undo cropping, resampling and reorientation, e.g. with "
        "MONAI's Invertd) before evaluating."
    )
