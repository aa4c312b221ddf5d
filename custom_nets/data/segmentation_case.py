"""Preprocess one labeled case into the cache: checks, the pre-training transform chain, atomic save.

The chain is the pre-training one (``custom_nets.data.case``) with a label riding along:

1. every modality file and the label are loaded channel-first and reoriented to RAS;
2. geometry check: every modality and the label must have the first modality's shape and affine
   (after reorientation, within 0.01 mm); label values must be declared integer classes;
3. the modalities are stacked as channels in dataset order;
4. crop to the bounding box of the voxels that are non-zero in any channel, label included;
5. normalisation: MRI z-score per channel over non-zero voxels (zeros stay 0); CT clip + z-score
   with the dataset's statistics (``custom_nets.data.ct_normalisation``);
6. resampling to the target spacing in mm: bilinear for the image, nearest for the label.

The image is stored as float32 (``x, y, z`` or ``x, y, z, C``), the label as uint8 (uint16 beyond
255 classes) with the image's geometry.

Which problems are errors and which are skips (the record's ``reason`` code says which):

* errors, ``ERROR_CODES``: ``label_mismatch`` (label geometry differs from the image),
  ``modality_mismatch`` (modalities not co-registered), ``label_values`` (values outside the
  declared classes or not integers), ``bad_spacing`` (a zero or missing voxel size: the header
  needs fixing, readers would silently assume 1 mm) and ``permission_denied`` (a file this user
  may not read). They point at a file or declaration the user can fix and that would otherwise
  corrupt training or silently shrink a small labeled set; ``prepare_segmentation_dataset``
  raises listing every such case with the file;
* skips: files that cannot be used at all (``missing``, ``unreadable``, ``not_3d``,
  ``nan_inf``, ``empty``, ``missing_modality``/``extra_modality``); logged and counted, the rest
  of the dataset goes on;
* warnings on kept cases (``warnings`` in the record): ``empty_label`` (no foreground voxel) and
  ``label_cropped`` (foreground outside the image's non-zero box, lost by the crop).

The pre-training quality filter's file-size, field-of-view and coarse-spacing rules do not apply:
labeled cases are too precious to drop for being small; only readability, NaN/Inf and
dimensionality are checked.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CropForegroundd, NormalizeIntensityd, Spacingd

from custom_nets.data.atomic import atomic_save_nifti
from custom_nets.data.case import _GEOMETRY_TOLERANCE_MM, _nonzero
from custom_nets.data.ct_normalisation import normalise_ct
from custom_nets.data.paths import permission_denied
from custom_nets.data.quality import QualityThresholds, check_image, describe_error
from custom_nets.data.ras_loading import load_ras

__all__ = ["ERROR_CODES", "LABELED_DATA_THRESHOLDS", "preprocess_segmentation_case"]

logger = logging.getLogger(__name__)

#: Quality limits for labeled data: no file-size, field-of-view or coarse-spacing rule (1 km is no limit).
LABELED_DATA_THRESHOLDS = QualityThresholds(min_fov_mm=0.0, max_spacing_mm=1e6, min_file_bytes=0)

#: Reason codes that make ``prepare_segmentation_dataset`` raise instead of skipping the case.
ERROR_CODES = ("label_mismatch", "modality_mismatch", "label_values", "bad_spacing", "permission_denied")

#: Most label values listed in a message.
_MAX_LISTED = 10


class _CaseIssue(Exception):
    """A reason to exclude the case; ``reason`` starts with its code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _record(task: dict, status: str, reason: str | None = None, **extra) -> dict:
    """Manifest record (format of ``custom_nets.data.manifest``) plus label counts and warnings."""
    return {
        "source": task["inputs"]["image"], "inputs": task["inputs"], "case_id": task["case_id"],
        "status": status, "reason": reason, "outputs": extra.pop("outputs", {}), "shape": extra.pop("shape", None),
        "stamp": task.get("stamp"), "time": time.time(), **extra,
    }


def _check_files(task: dict) -> None:
    """Readability, dimensionality and NaN/Inf of every file (4D image files are allowed)."""
    images = task["inputs"]["image"]
    for channel, path in enumerate(images):
        reason = check_image(path, LABELED_DATA_THRESHOLDS)
        if reason and not reason.startswith("not_3d: 4D"):  # 4D files hold several modalities
            raise _CaseIssue(f"{reason} (image file '{path}')")
    reason = check_image(task["inputs"]["label"], LABELED_DATA_THRESHOLDS)
    if reason:
        raise _CaseIssue(f"{reason} (label file '{task['inputs']['label']}')")


def describe_geometry(image: MetaTensor) -> str:
    """``shape (x, y, z), spacing (..) mm, origin (..) mm`` of a channel-first MetaTensor."""
    affine = image.affine.double().numpy()
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    return f"shape {tuple(int(s) for s in image.shape[1:])}, spacing {fmt(spacing)} mm, origin {fmt(affine[:3, 3])} mm"


def _same_geometry(a: MetaTensor, b: MetaTensor) -> bool:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        return False
    return float(torch.max(torch.abs(a.affine.double() - b.affine.double()))) <= _GEOMETRY_TOLERANCE_MM


def _load(task: dict) -> tuple[MetaTensor, MetaTensor]:
    """Load, check geometry and channels, stack modalities; returns ``(image (C,...), label (1,...))``."""
    paths = task["inputs"]["image"]
    label_path = task["inputs"]["label"]
    modalities = [load_ras(p) for p in paths]
    label = load_ras(label_path)
    for path, other in zip(paths[1:], modalities[1:]):
        if not _same_geometry(other, modalities[0]):
            raise _CaseIssue(
                f"modality_mismatch: image '{path}' has {describe_geometry(other)} but image '{paths[0]}' has "
                f"{describe_geometry(modalities[0])} (after RAS reorientation): the modalities of a case must be "
                "co-registered on one voxel grid; resample them onto the first modality"
            )
    if not _same_geometry(label, modalities[0]):
        raise _CaseIssue(
            f"label_mismatch: label '{label_path}' has {describe_geometry(label)} but image '{paths[0]}' has "
            f"{describe_geometry(modalities[0])} (after RAS reorientation, tolerance {_GEOMETRY_TOLERANCE_MM} mm): "
            "check that the label belongs to this image, or resample it onto the image grid (nearest neighbour)"
        )
    if label.shape[0] != 1:
        raise _CaseIssue(f"not_3d: label '{label_path}' has {label.shape[0]} volumes; store one 3D label map")
    channels = sum(int(m.shape[0]) for m in modalities)
    if channels != task["channels"]:
        code = "missing_modality" if channels < task["channels"] else "extra_modality"
        raise _CaseIssue(f"{code}: the image files hold {channels} channels, the dataset declares {task['channels']}")
    stacked = torch.cat([m.as_tensor() for m in modalities])
    image = MetaTensor(stacked, meta=dict(modalities[0].meta))  # the meta holds the first modality's affine
    return image, label


def _check_image_values(image: torch.Tensor) -> None:
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        raise _CaseIssue(f"nan_inf: {int((~finite).sum())} NaN/Inf voxels in the image")
    if not bool((image != 0).any()):
        raise _CaseIssue("empty: the image has no non-zero voxels")


def _check_label_values(label: torch.Tensor, classes: list[int], path: str) -> None:
    if not bool(torch.isfinite(label).all()):
        raise _CaseIssue(f"label_values: label '{path}' contains NaN/Inf values; store integer class values")
    values = torch.unique(label)
    fractional = values[values != torch.round(values)]
    if fractional.numel():
        listed = [round(float(v), 4) for v in fractional[:_MAX_LISTED]]
        raise _CaseIssue(
            f"label_values: label '{path}' contains non-integer values {listed}: store integer class values "
            "(a label resampled with linear interpolation? use nearest neighbour)"
        )
    undeclared = sorted(int(v) for v in values if int(v) not in set(classes))
    if undeclared:
        raise _CaseIssue(
            f"label_values: label '{path}' contains values {undeclared[:_MAX_LISTED]} that are not declared classes "
            f"{classes}: fix the label file, or declare the classes in the dataset's 'labels'"
        )


def _normalise(data: dict, normalisation: dict) -> dict:
    if normalisation["modality"] == "ct":
        data["image"] = normalise_ct(data["image"], normalisation["statistics"])
        return data
    return NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)(data)


def _nifti(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.ascontiguousarray(volume), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _save(image: MetaTensor, label: np.ndarray, task: dict) -> dict[str, str]:
    affine = image.affine.double().numpy()
    volume = image.as_tensor().float().numpy()
    volume = volume[0] if volume.shape[0] == 1 else np.moveaxis(volume, 0, -1)
    label_dtype = np.uint8 if max(task["classes"]) <= np.iinfo(np.uint8).max else np.uint16
    outputs = {"image": f"images/{task['case_id']}.nii.gz", "label": f"labels/{task['case_id']}.nii.gz"}
    atomic_save_nifti(_nifti(volume, affine), Path(task["cache_dir"]) / outputs["image"])
    atomic_save_nifti(_nifti(label.astype(label_dtype), affine), Path(task["cache_dir"]) / outputs["label"])
    return outputs


def _preprocess(task: dict) -> dict:
    _check_files(task)
    image, label = _load(task)
    _check_image_values(image)
    _check_label_values(label, task["classes"], task["inputs"]["label"])
    foreground = int((label > 0).sum())
    data = CropForegroundd(keys=["image", "label"], source_key="image", select_fn=_nonzero, allow_smaller=True)(
        {"image": image, "label": label}
    )
    warnings = []
    cropped = foreground - int((data["label"] > 0).sum())
    if cropped:
        warnings.append(
            f"label_cropped: {cropped} of {foreground} foreground voxels lie where every image channel is 0 "
            "and were cropped away"
        )
    data = _normalise(data, task["normalisation"])
    data = Spacingd(keys=["image", "label"], pixdim=task["target_spacing"], mode=["bilinear", "nearest"],
                    dtype=np.float32)(data)
    if not bool(torch.isfinite(data["image"]).all()):
        raise _CaseIssue("nan_inf: NaN/Inf voxels after preprocessing")
    label_map = torch.round(data["label"].as_tensor()[0]).long().numpy()
    counts = np.bincount(label_map.ravel(), minlength=len(task["classes"]))
    if counts[1:].sum() == 0:
        warnings.append("empty_label: the label has no foreground voxel (kept as a negative example)")
    outputs = _save(data["image"], label_map, task)
    return _record(task, "ok", outputs=outputs, shape=[int(s) for s in label_map.shape],
                   label_voxels=[int(c) for c in counts], warnings=warnings)


def preprocess_segmentation_case(task: dict) -> dict:
    """Check, preprocess and save one labeled case; never raises.

    Args:
        task: ``{"inputs": {"image": [files], "label": file}, "keys": ["image", "label"],
            "case_id": str, "cache_dir": str, "target_spacing": (x, y, z) mm, "classes": [0, 1, ...],
            "channels": int, "normalisation": {"modality": "mri"} or {"modality": "ct",
            "statistics": ct_statistics(...)}, "stamp": input file stamps}``.

    Returns:
        A manifest record with status ``ok`` (plus ``label_voxels``: voxels per class after
        preprocessing, and ``warnings``) or ``excluded`` with a coded ``reason`` (see the module
        docstring for which codes are errors).
    """
    try:
        return _preprocess(task)
    except _CaseIssue as issue:
        return _record(task, "excluded", issue.reason)
    except PermissionError as err:  # a file that became unreadable after the checks
        return _record(task, "excluded", permission_denied(err.filename or task["inputs"]["label"]))
    except Exception as err:  # a bad file must never stop the run; the reason names the files
        logger.debug("Case %s failed", task.get("case_id"), exc_info=True)
        files = ", ".join([*task["inputs"]["image"], task["inputs"]["label"]])
        return _record(task, "excluded", f"unreadable: {describe_error(err)} (files: {files})")
