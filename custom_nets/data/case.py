"""Preprocess one case into the cache: file checks, loading, the preprocessing chain, atomic save.

One loader for every cache: a pre-training case (an image, optional masks such as OpenMind's anonymization
masks) and a labeled fine-tuning case (an image with any number of modality files and a label) go the same way:

1. file checks: every image file passes the quality filter of ``task["thresholds"]`` (``custom_nets.data.quality``;
   labeled data uses ``LABELED_DATA_THRESHOLDS``: no file-size, field-of-view or coarse-spacing rule), the label
   is readable, mask files exist;
2. loading: every file channel-first in RAS (``custom_nets.data.ras_loading``); the modalities must be
   co-registered (the first one's shape and affine within 0.01 mm) and are stacked as channels in the given
   order; label and masks must lie on the image grid; label values must be declared integer classes;
3. the preprocessing chain (``custom_nets.data.preprocessing``): RAS -> crop to the non-zero box -> normalisation
   (MRI, or CT with the dataset statistics in ``task["normalisation"]``) -> spacing, the label and masks with
   nearest-neighbour resampling;
4. saving: the image as float32 (``x, y, z`` or ``x, y, z, C``), masks as binary uint8, the label as uint8
   (uint16 beyond 255 classes), all with the image's geometry, written atomically.

``preprocess_case`` never raises: every problem becomes an ``excluded`` record whose ``reason`` starts with a code
(``missing``, ``unreadable``, ``not_3d``, ``nan_inf``, ``empty``, ``mask_mismatch``, ``label_mismatch``,
``modality_mismatch``, ``missing_modality``, ``extra_modality``, ``label_values``, ``bad_spacing``,
``permission_denied``, the quality codes), so one bad file cannot stop a large run; the cache builder decides
which codes stop a run (``ERROR_CODES`` for labeled data). Kept labeled cases carry ``label_voxels`` (voxels per
class after preprocessing) and ``warnings``: ``empty_label`` (no foreground) and ``label_cropped`` (foreground
where every image channel is 0, lost by the crop).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms.utils import generate_spatial_bounding_box

from custom_nets.data.atomic import atomic_save_nifti
from custom_nets.data.paths import as_files, input_problem, permission_denied
from custom_nets.data.preprocessing import nonzero, preprocessing_chain
from custom_nets.data.quality import QualityThresholds, check_image, describe_error
from custom_nets.data.ras_loading import load_ras

__all__ = ["ERROR_CODES", "LABELED_DATA_THRESHOLDS", "LABEL_KEY", "crash_record", "describe_geometry",
           "output_folder", "preprocess_case"]

logger = logging.getLogger(__name__)

#: The key of a case's label map (every other key after the image is a binary mask).
LABEL_KEY = "label"

#: Quality limits for labeled data: no file-size, field-of-view or coarse-spacing rule (1 km is no limit).
LABELED_DATA_THRESHOLDS = QualityThresholds(min_fov_mm=0.0, max_spacing_mm=1e6, min_file_bytes=0)

#: Reason codes of labeled cases that stop fine-tuning instead of skipping the case: they point at a file or
#: declaration the user can fix and would otherwise corrupt training or silently shrink a small labeled set.
ERROR_CODES = ("label_mismatch", "modality_mismatch", "label_values", "bad_spacing", "permission_denied")

#: Largest affine difference (mm) tolerated between the files of one case after reorientation.
GEOMETRY_TOLERANCE_MM = 1e-2

#: Most label values listed in a message.
_MAX_LISTED = 10


class CaseIssue(Exception):
    """A reason to exclude the case; ``reason`` starts with its code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def output_folder(key: str, image_key: str = "image") -> str:
    """Cache sub-folder for ``key``: ``images`` for the image, ``<key>s`` for labels and masks."""
    return "images" if key == image_key else f"{key}s"


def _record(task: dict, status: str, reason: str | None = None, **extra) -> dict:
    """Manifest record (format of ``custom_nets.data.manifest``); labeled cases add label counts and warnings."""
    inputs = task["inputs"]
    return {
        "source": inputs[task["keys"][0]], "inputs": inputs, "case_id": task["case_id"], "status": status,
        "reason": reason, "outputs": extra.pop("outputs", {}), "shape": extra.pop("shape", None),
        "stamp": task.get("stamp"), "time": time.time(), **extra,
    }


def crash_record(task: dict) -> dict:
    """Exclusion record for a task whose worker process died (it never returned a record)."""
    reason = "unreadable: the worker process died while reading this file (out of memory or a reader crash)"
    return _record(task, "excluded", reason)


def _several_files(task: dict) -> bool:
    """Whether a reason must name its file (the record's ``source`` names it when the case has one file)."""
    return len(as_files(task["inputs"][task["keys"][0]])) > 1 or LABEL_KEY in task["inputs"]


def _check_files(task: dict) -> None:
    """Quality filter on every image file, readability of the label, existence of the masks."""
    image_key, *other_keys = task["keys"]
    images = as_files(task["inputs"][image_key])
    thresholds: QualityThresholds = task["thresholds"]
    for path in images:
        reason = check_image(path, thresholds)
        if reason and "channels" in task and reason.startswith("not_3d: 4D"):
            continue  # a labeled dataset declares its channels: a 4D file holds several modalities
        if reason:
            raise CaseIssue(f"{reason} (image file '{path}')" if _several_files(task) else reason)
    for key in other_keys:
        if key not in task["inputs"]:
            continue
        path = task["inputs"][key]
        if key == LABEL_KEY:
            reason = check_image(path, LABELED_DATA_THRESHOLDS)
            if reason:
                raise CaseIssue(f"{reason} (label file '{path}')")
            continue
        problem = input_problem(path)
        if problem and problem.startswith("missing"):
            raise CaseIssue(f"missing: {key} file not found ({path})")
        if problem:
            raise CaseIssue(f"{problem} ({key})")


def describe_geometry(image: MetaTensor) -> str:
    """``shape (x, y, z), spacing (..) mm, origin (..) mm`` of a channel-first MetaTensor."""
    affine = image.affine.double().numpy()
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    return f"shape {tuple(int(s) for s in image.shape[1:])}, spacing {fmt(spacing)} mm, origin {fmt(affine[:3, 3])} mm"


def _affine_difference(a: MetaTensor, b: MetaTensor) -> float:
    return float(torch.max(torch.abs(a.affine.double() - b.affine.double())))


def _same_geometry(a: MetaTensor, b: MetaTensor) -> bool:
    return tuple(a.shape[1:]) == tuple(b.shape[1:]) and _affine_difference(a, b) <= GEOMETRY_TOLERANCE_MM


def _load_image(task: dict) -> MetaTensor:
    """The modality files as one ``(C, x, y, z)`` MetaTensor in RAS (the first file's affine and meta data)."""
    paths = as_files(task["inputs"][task["keys"][0]])
    modalities = [load_ras(p) for p in paths]
    for path, other in zip(paths[1:], modalities[1:]):
        if not _same_geometry(other, modalities[0]):
            raise CaseIssue(
                f"modality_mismatch: image '{path}' has {describe_geometry(other)} but image '{paths[0]}' has "
                f"{describe_geometry(modalities[0])} (after RAS reorientation): the modalities of a case must be "
                "co-registered on one voxel grid; resample them onto the first modality"
            )
    channels = sum(int(m.shape[0]) for m in modalities)
    expected = task.get("channels")
    if expected is not None and channels != expected:
        code = "missing_modality" if channels < expected else "extra_modality"
        raise CaseIssue(f"{code}: the image files hold {channels} channels, the dataset declares {expected}")
    if len(modalities) == 1:
        return modalities[0]
    return MetaTensor(torch.cat([m.as_tensor() for m in modalities]), meta=dict(modalities[0].meta))


def _load_label(path: str, image: MetaTensor, image_path: str) -> MetaTensor:
    label = load_ras(path)
    if not _same_geometry(label, image):
        raise CaseIssue(
            f"label_mismatch: label '{path}' has {describe_geometry(label)} but image '{image_path}' has "
            f"{describe_geometry(image)} (after RAS reorientation, tolerance {GEOMETRY_TOLERANCE_MM} mm): "
            "check that the label belongs to this image, or resample it onto the image grid (nearest neighbour)"
        )
    if label.shape[0] != 1:
        raise CaseIssue(f"not_3d: label '{path}' has {label.shape[0]} volumes; store one 3D label map")
    return label


def _load_mask(key: str, path: str, image: MetaTensor) -> MetaTensor:
    mask = load_ras(path)
    if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
        raise CaseIssue(
            f"mask_mismatch: {key} has shape {tuple(mask.shape[1:])} but the image has "
            f"{tuple(image.shape[1:])} (after RAS reorientation)"
        )
    difference = _affine_difference(mask, image)
    if difference > GEOMETRY_TOLERANCE_MM:
        raise CaseIssue(f"mask_mismatch: {key} affine differs from the image affine by up to {difference:.3g} mm")
    return mask


def _load(task: dict) -> dict:
    """``{image key: (C, x, y, z), label: (1, x, y, z), mask key: (1, x, y, z), ...}`` in RAS, checked."""
    image_key, *other_keys = task["keys"]
    image = _load_image(task)
    data = {image_key: image}
    first_file = as_files(task["inputs"][image_key])[0]
    for key in other_keys:
        if key not in task["inputs"]:
            continue
        if key == LABEL_KEY:
            data[key] = _load_label(task["inputs"][key], image, first_file)
        else:
            data[key] = _load_mask(key, task["inputs"][key], image)
    return data


def _check_image_values(image: torch.Tensor, preprocessed: bool, labeled: bool) -> None:
    """NaN/Inf voxels or an all-zero image exclude the case (``preprocessed``: checked after the chain).

    After the chain an all-zero image (a constant one, z-scored) excludes only an unlabeled case: there is nothing
    to reconstruct, while a labeled case is kept as labeled data is scarce.
    """
    finite = torch.isfinite(image)
    after = " after preprocessing" if preprocessed else ""
    if not bool(finite.all()):
        raise CaseIssue(f"nan_inf: {int((~finite).sum())} NaN/Inf voxels in the image{after}")
    if not (preprocessed and labeled) and not bool((image != 0).any()):
        raise CaseIssue(
            "empty: no non-zero voxels after normalisation (constant intensity)" if preprocessed
            else "empty: the image has no non-zero voxels"
        )


def _check_label_values(label: torch.Tensor, classes: list[int], path: str) -> None:
    if not bool(torch.isfinite(label).all()):
        raise CaseIssue(f"label_values: label '{path}' contains NaN/Inf values; store integer class values")
    values = torch.unique(label)
    fractional = values[values != torch.round(values)]
    if fractional.numel():
        listed = [round(float(v), 4) for v in fractional[:_MAX_LISTED]]
        raise CaseIssue(
            f"label_values: label '{path}' contains non-integer values {listed}: store integer class values "
            "(a label resampled with linear interpolation? use nearest neighbour)"
        )
    undeclared = sorted(int(v) for v in values if int(v) not in set(classes))
    if undeclared:
        raise CaseIssue(
            f"label_values: label '{path}' contains values {undeclared[:_MAX_LISTED]} that are not declared classes "
            f"{classes}: fix the label file, or declare the classes in the dataset's 'labels'"
        )


def _foreground_outside_crop(image: torch.Tensor, label: torch.Tensor) -> tuple[int, int]:
    """``(foreground voxels, those outside the box of non-zero image voxels)``: what the crop will drop."""
    start, end = generate_spatial_bounding_box(image, select_fn=nonzero, allow_smaller=True)
    foreground = label[0] > 0
    inside = foreground[tuple(slice(s, e) for s, e in zip(start, end))]
    total = int(foreground.sum())
    return total, total - int(inside.sum())


def _nifti(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.ascontiguousarray(volume), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _save(data: dict, task: dict) -> dict[str, str]:
    """Write image (float32), label (uint8/uint16) and masks (uint8 0/1) to the cache; return relative paths."""
    image_key = task["keys"][0]
    affine = data[image_key].affine.double().numpy()
    outputs = {}
    for key in [k for k in task["keys"] if k in data]:
        array = data[key].as_tensor()
        if key == image_key:
            volume = array.float().numpy()
            volume = volume[0] if volume.shape[0] == 1 else np.moveaxis(volume, 0, -1)
        elif key == LABEL_KEY:
            dtype = np.uint8 if max(task["classes"]) <= np.iinfo(np.uint8).max else np.uint16
            volume = torch.round(array[0]).long().numpy().astype(dtype)
        else:
            volume = (array != 0).any(dim=0).numpy().astype(np.uint8)
        relative = f"{output_folder(key, image_key)}/{task['case_id']}.nii.gz"
        atomic_save_nifti(_nifti(volume, affine), Path(task["cache_dir"]) / relative)
        outputs[key] = relative
    return outputs


def _preprocess(task: dict) -> dict:
    image_key = task["keys"][0]
    _check_files(task)
    data = _load(task)
    _check_image_values(data[image_key], preprocessed=False, labeled=LABEL_KEY in data)
    extra, warnings = {}, []
    if LABEL_KEY in data:
        _check_label_values(data[LABEL_KEY], task["classes"], task["inputs"][LABEL_KEY])
        foreground, cropped = _foreground_outside_crop(data[image_key], data[LABEL_KEY])
        if cropped:
            warnings.append(
                f"label_cropped: {cropped} of {foreground} foreground voxels lie where every image channel is 0 "
                "and were cropped away"
            )
    keys = list(data)
    chain = preprocessing_chain(
        keys, task["target_spacing"], task.get("normalisation") or {"modality": "mri"}, image_key,
        mode=["bilinear"] + ["nearest"] * (len(keys) - 1),
    )
    data = chain(data)
    _check_image_values(data[image_key], preprocessed=True, labeled=LABEL_KEY in data)
    if LABEL_KEY in data:
        label_map = torch.round(data[LABEL_KEY].as_tensor()[0]).long().numpy()
        counts = np.bincount(label_map.ravel(), minlength=len(task["classes"]))
        if counts[1:].sum() == 0:
            warnings.append("empty_label: the label has no foreground voxel (kept as a negative example)")
        extra = {"label_voxels": [int(c) for c in counts], "warnings": warnings}
    outputs = _save(data, task)
    return _record(task, "ok", outputs=outputs, shape=[int(s) for s in data[image_key].shape[1:]], **extra)


def preprocess_case(task: dict) -> dict:
    """Check, preprocess and save one case; never raises.

    Args:
        task: ``{"inputs": {key: file or [files]}, "keys": [image key, "label" and/or mask keys],
            "case_id": str, "cache_dir": str, "target_spacing": (x, y, z) mm, "thresholds": QualityThresholds,
            "stamp": input file stamps}``; a labeled case adds ``"classes": [0, 1, ...]``, ``"channels": int``
            and ``"normalisation": {"modality": "mri"} or {"modality": "ct", "statistics": ...}`` (default MRI).

    Returns:
        A manifest record (``custom_nets.data.manifest``) with status ``ok`` or ``excluded`` and a coded
        ``reason`` (see the module docstring); exceptions become ``unreadable: <error>``.
    """
    try:
        return _preprocess(task)
    except CaseIssue as issue:
        return _record(task, "excluded", issue.reason)
    except PermissionError as err:  # a file that became unreadable after the checks
        first = as_files(task["inputs"][task["keys"][0]])[0]
        return _record(task, "excluded", permission_denied(err.filename or first))
    except Exception as err:  # a bad file must never stop the run
        logger.debug("Case %s failed", task.get("case_id"), exc_info=True)
        reason = f"unreadable: {describe_error(err)}"
        if _several_files(task):
            files = [*as_files(task["inputs"][task["keys"][0]]), *(task["inputs"].get(k) for k in task["keys"][1:])]
            reason += f" (files: {', '.join(f for f in files if f)})"
        return _record(task, "excluded", reason)
