"""Preprocess one case into the cache: quality check, MONAI transform chain, atomic save.

The chain, all MONAI transforms (image key first, mask keys after it):

1. ``LoadImaged`` (nibabel for NIfTI/Analyze/MGH, ITK for anything else), ``EnsureChannelFirstd``;
2. ``Orientationd(axcodes="RAS")`` so every cached volume has the same axis directions;
3. ``CropForegroundd`` to the bounding box of the image's non-zero voxels (any channel), applied
   to the masks too, which drops the empty field of view around heads and skull-stripped brains;
4. ``NormalizeIntensityd(nonzero=True, channel_wise=True)``: z-score over non-zero voxels, voxels
   that were 0 stay 0. This mimics nnU-Net's mask-based normalisation for skull-stripped brains
   (the zero background is not counted as tissue);
5. ``Spacingd`` to the target spacing in mm with torch interpolation (bilinear for the image,
   nearest for masks), so no scipy is needed.

The image is stored as float32 (a 4D x-y-z-channel file for multi-modal cases), each mask as a
binary uint8 volume with the image's geometry. ``preprocess_case`` never raises: every failure
becomes an ``excluded`` record with a reason, so one bad file cannot stop a large run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import (
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from custom_nets.data.atomic import atomic_save_nifti
from custom_nets.data.paths import input_problem, permission_denied
from custom_nets.data.quality import QualityThresholds, check_image, describe_error, is_nibabel_file

__all__ = ["crash_record", "output_folder", "preprocess_case"]

logger = logging.getLogger(__name__)

#: Axis labels of the NIfTI world frame (left-right, posterior-anterior, inferior-superior).
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))

#: Largest affine difference (mm) tolerated between an image and its mask after reorientation.
_GEOMETRY_TOLERANCE_MM = 1e-2


def output_folder(key: str, image_key: str = "image") -> str:
    """Cache sub-folder for ``key``: ``images`` for the image, ``<key>s`` for masks."""
    return "images" if key == image_key else f"{key}s"


def _nonzero(x):
    """Foreground selector for ``CropForegroundd``: any non-zero voxel (works for CT as well)."""
    return x != 0


def _files(value) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _reader_for(value) -> str:
    return "NibabelReader" if all(is_nibabel_file(f) for f in _files(value)) else "ITKReader"


def _record(task: dict, status: str, reason: str | None = None, outputs=None, shape=None) -> dict:
    inputs = task["inputs"]
    return {
        "source": inputs[task["keys"][0]],
        "inputs": inputs,
        "case_id": task["case_id"],
        "status": status,
        "reason": reason,
        "outputs": outputs or {},
        "shape": shape,
        "stamp": task.get("stamp"),
        "time": time.time(),
    }


def crash_record(task: dict) -> dict:
    """Exclusion record for a task whose worker process died (it never returned a record)."""
    reason = "unreadable: the worker process died while reading this file (out of memory or a reader crash)"
    return _record(task, "excluded", reason)


def _input_problem(task: dict, thresholds: QualityThresholds) -> str | None:
    """Quality-check every image file and make sure every mask file exists."""
    image_key, *mask_keys = task["keys"]
    for path in _files(task["inputs"][image_key]):
        reason = check_image(path, thresholds)
        if reason:
            return reason if len(_files(task["inputs"][image_key])) == 1 else f"{reason} ({path})"
    for key in mask_keys:
        if key not in task["inputs"]:
            continue
        problem = input_problem(task["inputs"][key])
        if problem and problem.startswith("missing"):
            return f"missing: {key} file not found ({task['inputs'][key]})"
        if problem:
            return f"{problem} ({key})"
    return None


def _load(task: dict) -> dict:
    """Load every present key channel-first and reoriented to RAS."""
    data = {}
    for key, value in task["inputs"].items():
        if key in task["keys"]:
            reader = _reader_for(value)
            # NIfTI stores a 3D volume with unused 4th/5th axes as (x, y, z, 1, 1): drop them.
            options = {"squeeze_non_spatial_dims": True} if reader == "NibabelReader" else {}
            loader = LoadImaged(keys=key, reader=reader, image_only=True, dtype=np.float32, **options)
            data.update(loader({key: value}))
    present = [k for k in task["keys"] if k in data]
    data = EnsureChannelFirstd(keys=present)(data)
    return Orientationd(keys=present, axcodes="RAS", labels=_RAS_LABELS)(data)


def _geometry_mismatch(data: dict, image_key: str, mask_keys: list[str]) -> str | None:
    image = data[image_key]
    for key in mask_keys:
        mask = data[key]
        if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
            return (
                f"mask_mismatch: {key} has shape {tuple(mask.shape[1:])} but the image has "
                f"{tuple(image.shape[1:])} (after RAS reorientation)"
            )
        difference = float(torch.max(torch.abs(mask.affine.double() - image.affine.double())))
        if difference > _GEOMETRY_TOLERANCE_MM:
            return f"mask_mismatch: {key} affine differs from the image affine by up to {difference:.3g} mm"
    return None


def _bad_result(image: torch.Tensor, after: bool) -> str | None:
    """Reason when ``image`` holds NaN/Inf or only zeros (``after``: checked after the chain)."""
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        return f"nan_inf: {int((~finite).sum())} NaN/Inf voxels" + (" after preprocessing" if after else "")
    if not bool((image != 0).any()):
        return "empty: no non-zero voxels" + (" after normalisation (constant intensity)" if after else "")
    return None


def _save(data: dict, task: dict) -> dict[str, str]:
    """Write the image (float32) and masks (uint8 0/1) to the cache; return relative paths."""
    image_key, *mask_keys = task["keys"]
    affine = data[image_key].affine.double().numpy()
    outputs = {}
    for key in [image_key, *[k for k in mask_keys if k in data]]:
        array = data[key].as_tensor()
        if key == image_key:
            volume = array.float().numpy()
            volume = volume[0] if volume.shape[0] == 1 else np.moveaxis(volume, 0, -1)
        else:
            volume = (array != 0).any(dim=0).numpy().astype(np.uint8)
        nifti = nib.Nifti1Image(np.ascontiguousarray(volume), affine)
        nifti.set_qform(affine, code=1)
        nifti.set_sform(affine, code=1)
        nifti.header.set_xyzt_units("mm", "sec")
        relative = f"{output_folder(key, image_key)}/{task['case_id']}.nii.gz"
        atomic_save_nifti(nifti, Path(task["cache_dir"]) / relative)
        outputs[key] = relative
    return outputs


def _preprocess(task: dict) -> dict:
    thresholds: QualityThresholds = task["thresholds"]
    image_key, *mask_keys = task["keys"]
    problem = _input_problem(task, thresholds)
    if problem:
        return _record(task, "excluded", problem)
    data = _load(task)
    present_masks = [k for k in mask_keys if k in data]
    problem = _geometry_mismatch(data, image_key, present_masks) or _bad_result(data[image_key], after=False)
    if problem:
        return _record(task, "excluded", problem)
    keys = [image_key, *present_masks]
    data = CropForegroundd(keys=keys, source_key=image_key, select_fn=_nonzero, allow_smaller=True)(data)
    data = NormalizeIntensityd(keys=image_key, nonzero=True, channel_wise=True)(data)
    modes = ["bilinear"] + ["nearest"] * len(present_masks)
    data = Spacingd(keys=keys, pixdim=task["target_spacing"], mode=modes, dtype=np.float32)(data)
    problem = _bad_result(data[image_key], after=True)
    if problem:
        return _record(task, "excluded", problem)
    outputs = _save(data, task)
    return _record(task, "ok", outputs=outputs, shape=[int(s) for s in data[image_key].shape[1:]])


def preprocess_case(task: dict) -> dict:
    """Run one case through the quality check and the transform chain and save it.

    Args:
        task: ``{"inputs": {key: path or [paths]}, "keys": [image_key, *mask_keys],
            "case_id": str, "cache_dir": str, "target_spacing": (x, y, z) mm,
            "thresholds": QualityThresholds, "stamp": input file sizes and times}``.

    Returns:
        A manifest record (see ``custom_nets.data.manifest``) with status ``ok`` or ``excluded``.
        Exceptions are caught and reported as ``unreadable: <error>``.
    """
    try:
        return _preprocess(task)
    except PermissionError as err:  # e.g. a file that became unreadable after the quality check
        return _record(task, "excluded", permission_denied(err.filename or _files(task["inputs"][task["keys"][0]])[0]))
    except Exception as err:  # a bad file must never stop the run
        logger.debug("Case %s failed", task.get("case_id"), exc_info=True)
        return _record(task, "excluded", f"unreadable: {describe_error(err)}")
