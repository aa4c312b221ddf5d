"""Cheap per-file quality filter applied before preprocessing.

Large public collections contain files that would crash or silently poison a pre-training run:
missing or truncated downloads, 2D localisers, 4D time series, NaN-filled exports, thin slabs and
very coarse scans. ``check_image`` turns each of these into a short reason string that starts
with a stable code (``missing``, ``permission_denied``, ``too_small_file``, ``unreadable``,
``not_3d``, ``bad_spacing``, ``coarse_spacing``, ``small_fov``, ``nan_inf``), so excluded files can
be listed and counted instead of stopping the run. It never raises for a bad file.

The header is read first (cheap, lazy nibabel proxy); voxel data is read only at the end, both to
count NaN/Inf voxels and to prove that the whole (possibly compressed) file can be decoded.
Formats nibabel does not know (e.g. NRRD, MetaImage) are read with ITK instead.

A NIfTI/Analyze header whose voxel size (``pixdim[1:4]``) is 0 or missing and that has no sform is
``bad_spacing``: nibabel (and so MONAI's reader) silently replaces the 0 by 1 mm, which would
resample the image at a made-up scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from custom_nets.data.paths import input_problem, permission_denied

__all__ = ["QualityThresholds", "check_image", "NIBABEL_SUFFIXES"]

#: File endings read with nibabel; anything else is read with ITK.
NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".mgh", ".mgz")

#: Longest exception text kept in an "unreadable" reason.
_MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a file must meet to enter the pre-training set.

    Attributes:
        min_fov_mm: smallest accepted field of view (voxels x spacing) on every axis, in mm.
        max_spacing_mm: largest accepted voxel spacing on any axis, in mm.
        min_file_bytes: smallest accepted file size in bytes (catches truncated or empty files).
    """

    min_fov_mm: float = 50.0
    max_spacing_mm: float = 6.5
    min_file_bytes: int = 200_000

    def __post_init__(self) -> None:
        for name in ("min_fov_mm", "max_spacing_mm", "min_file_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"QualityThresholds.{name}={value!r} is not a finite number >= 0: "
                    "pass e.g. QualityThresholds(min_fov_mm=50.0, max_spacing_mm=6.5, min_file_bytes=200_000)"
                )
        if self.max_spacing_mm == 0:
            raise ValueError(
                "QualityThresholds.max_spacing_mm=0 rejects every image: pass a positive value such as 6.5"
            )


@dataclass(frozen=True)
class _Header:
    """What the checks need from a file: array shape, voxel spacing (mm) and a data reader."""

    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    read_data: Callable[[], np.ndarray]
    spacing_problem: str | None = None


def is_nibabel_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has a file ending that nibabel reads (NIfTI, Analyze, MGH)."""
    return os.fspath(path).lower().endswith(NIBABEL_SUFFIXES)


def _kilobytes(num_bytes: int) -> str:
    value = num_bytes / 1000.0
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def describe_error(err: BaseException) -> str:
    """One-line, length-limited ``"<ExceptionType>: <message>"`` for reason strings."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _unset_voxel_size(image) -> str | None:
    """``bad_spacing`` reason when a NIfTI/Analyze header has a 0 or missing voxel size and no sform.

    The stored header is re-read without nibabel's fix-ups, which set a 0 voxel size to 1 mm.
    """
    header = image.header
    if not isinstance(header, nib.analyze.AnalyzeHeader) or "mat" in image.file_map:
        return None  # MGH stores its geometry elsewhere; an SPM .mat file defines the affine
    if "sform_code" in header and int(header["sform_code"]) > 0:
        return None  # the sform alone gives the geometry (nibabel leaves sform_code as stored)
    with ImageOpener(image.file_map.get("header", image.file_map["image"]).filename) as handle:
        raw = type(header).from_fileobj(handle, check=False)
    axes = min(3, len(image.shape))
    sizes = [float(v) for v in raw["pixdim"][1 : 1 + axes]]
    if all(np.isfinite(v) and v != 0 for v in sizes):
        return None
    qform = int(raw["qform_code"]) if "qform_code" in raw else 0
    shown = ", ".join(f"{v:g}" for v in sizes)
    return (
        f"bad_spacing: the header gives no voxel size (pixdim[1:4] = ({shown}), sform_code 0, qform_code {qform}), "
        "so the spacing is unknown and readers would assume 1 mm; fix: write the voxel size in mm into the header "
        "(e.g. nibabel: img.header.set_zooms((x, y, z)), then save)"
    )


def _reader_failure(path: str, err: BaseException) -> str:
    """Reason for a reader exception; a permission problem is named as such."""
    if isinstance(err, PermissionError):
        return permission_denied(path)
    return f"unreadable: {describe_error(err)}"


def _nibabel_header(path: str) -> _Header:
    image = nib.load(path)
    spacing = np.sqrt((np.asarray(image.affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return _Header(tuple(int(s) for s in image.shape), tuple(float(s) for s in spacing),
                   lambda: np.asanyarray(image.dataobj), _unset_voxel_size(image))


def _itk_header(path: str) -> _Header:
    import itk  # imported lazily: only needed for non-NIfTI formats and slow to import

    image = itk.imread(path)
    size = tuple(int(s) for s in image.GetLargestPossibleRegion().GetSize())
    components = int(image.GetNumberOfComponentsPerPixel())
    shape = size + ((components,) if components > 1 else ())
    spacing = tuple(float(s) for s in image.GetSpacing())
    return _Header(shape, spacing, lambda: np.asarray(itk.array_view_from_image(image)))


def _read_header(path: str) -> _Header:
    if is_nibabel_file(path):
        return _nibabel_header(path)
    try:
        return _nibabel_header(path)
    except nib.filebasedimages.ImageFileError:
        return _itk_header(path)


def _dimension_problem(shape: tuple[int, ...]) -> str | None:
    """Reason when ``shape`` is not a single 3D volume (trailing singleton axes are allowed)."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        return f"not_3d: image has {len(dims)} dimensions"
    if len(dims) == 4:
        return f"not_3d: 4D image with {dims[3]} volumes (split it into 3D files)"
    if len(dims) > 4:
        return f"not_3d: {len(dims)}D image with shape {tuple(dims)} (store one 3D volume per file)"
    return None


def _geometry_problem(shape: tuple[int, ...], spacing: tuple[float, ...], thresholds: QualityThresholds) -> str | None:
    """Reason when spacing (mm) or field of view (mm) of the first three axes is out of range."""
    for axis in range(3):
        step = spacing[axis] if axis < len(spacing) else float("nan")
        if not np.isfinite(step) or step <= 0:
            return f"bad_spacing: spacing {step} mm on axis {axis} is not a positive number (fix the header)"
    for axis in range(3):
        if spacing[axis] > thresholds.max_spacing_mm:
            return f"coarse_spacing: spacing {spacing[axis]:.1f} mm > {thresholds.max_spacing_mm:g} mm on axis {axis}"
    for axis in range(3):
        fov = shape[axis] * spacing[axis]
        if fov < thresholds.min_fov_mm:
            return f"small_fov: field of view {fov:.1f} mm < {thresholds.min_fov_mm:g} mm on axis {axis}"
    return None


def check_image(path, thresholds: QualityThresholds = QualityThresholds()) -> str | None:
    """Decide whether one image file may enter the pre-training set.

    Args:
        path: image file (NIfTI; other formats that ITK reads also work).
        thresholds: limits on file size, spacing (mm) and field of view (mm).

    Returns:
        ``None`` when the file passes, otherwise ``"<code>: <detail>"``, e.g.
        ``"small_fov: field of view 40.0 mm < 50 mm on axis 2"`` or ``"permission_denied: '<path>'
        cannot be read by this user; fix: ..."``. Never raises for a bad file.
    """
    if not isinstance(thresholds, QualityThresholds):
        raise ValueError(
            f"thresholds must be a QualityThresholds, got {type(thresholds).__name__}: "
            "pass e.g. QualityThresholds(min_fov_mm=50.0)"
        )
    path = os.fspath(path)
    problem = input_problem(path)
    if problem:
        return problem
    size = os.path.getsize(path)
    if size < thresholds.min_file_bytes:
        return f"too_small_file: {_kilobytes(size)} kB < {_kilobytes(thresholds.min_file_bytes)} kB"
    try:
        header = _read_header(path)
    except Exception as err:  # any reader failure means the file cannot be used
        return _reader_failure(path, err)
    problem = (
        _dimension_problem(header.shape)
        or header.spacing_problem
        or _geometry_problem(header.shape, header.spacing_mm, thresholds)
    )
    if problem:
        return problem
    try:
        data = header.read_data()
    except Exception as err:  # truncated gzip streams and short files fail here
        return _reader_failure(path, err)
    if np.issubdtype(data.dtype, np.inexact):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            return f"nan_inf: {bad} NaN/Inf voxels"
    return None
