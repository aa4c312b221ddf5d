"""Dice (DSC) and Normalized Surface Distance (NSD) per class on integer label maps.

Both metrics compare a predicted label map with a reference label map of the same (D, H, W)
grid, class by class (a class is the binary mask ``map == value``).

* **DSC** = 2 |P ∩ R| / (|P| + |R|), computed with MONAI's ``compute_dice`` (the function behind
  ``DiceMetric``) on the class masks cropped to the bounding box of ``P ∪ R`` (cropping does not
  change the value and keeps memory small on whole-body volumes).
* **NSD** (Nikolov et al. 2021, https://arxiv.org/abs/1809.04430, "surface Dice at tolerance τ")
  = (|{p ∈ ∂P : d(p, ∂R) <= τ}| + |{r ∈ ∂R : d(r, ∂P) <= τ}|) / (|∂P| + |∂R|), where ∂ is the set
  of surface voxels (see :mod:`custom_nets.evaluation.surface`) and d the Euclidean distance in mm
  between voxel centres, using the voxel spacing. This is MONAI's ``compute_surface_dice`` with
  ``use_subvoxels=False`` (surface size = number of surface voxels). MONAI's own version needs
  SciPy on CPU (erosion and KD-tree), so surfaces and distances here come from torch-only code
  (:mod:`custom_nets.evaluation.surface`); the values are the same.
  The tolerance τ is in mm and may differ per class.

Empty classes (the convention of nnU-Net and of MONAI's metrics):

* class absent from both prediction and reference -> DSC = NSD = NaN. The case says nothing about
  that class; NaN values are left out of means, and the reports count them.
* class present in only one of the two -> DSC = NSD = 0 (all of it is a false positive or a
  false negative).

Both are registered in ``METRICS`` at the end of this file (:mod:`custom_nets.evaluation.metric_registry`), which
the evaluation, the report files, the demo table and the study reports loop over. **A new metric** is one
function of ``(pred_mask, reference_mask[, spacing_mm, tolerance_mm])`` here and one line in ``METRICS`` (plus its
test); every results file then has its columns.

A distance within ``TOLERANCE_ROUNDING_MM`` (1e-5 mm) of τ counts as within τ, so that a voxel
spacing stored as float32 in a NIfTI header (0.8 mm is stored as 0.800000012 mm) does not push a
one-voxel shift just past a tolerance of 0.8 mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics import compute_dice

from custom_nets.evaluation.metric_registry import Metric, MetricRegistry
from custom_nets.evaluation.surface import bounded_distance_map, check_spacing_mm, surface_voxels

__all__ = [
    "METRICS",
    "TOLERANCE_ROUNDING_MM",
    "binary_dice",
    "binary_nsd",
    "dice_per_class",
    "nsd_per_class",
]

#: Distances up to ``tolerance + TOLERANCE_ROUNDING_MM`` count as within the tolerance (mm).
TOLERANCE_ROUNDING_MM = 1e-5


def _check_pair(pred: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    if pred.shape != reference.shape:
        raise ValueError(
            f"{what}: prediction shape {tuple(pred.shape)} differs from reference shape "
            f"{tuple(reference.shape)}; resample the prediction onto the reference grid first"
        )
    if pred.ndim != 3:
        raise ValueError(f"{what}: expected (D, H, W) volumes, got shape {tuple(pred.shape)}")


def _union_crop(pred: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both masks cropped to the bounding box of their union; None when both are empty."""
    where = torch.nonzero(pred | reference)
    if where.numel() == 0:
        return None
    low, high = where.min(dim=0).values, where.max(dim=0).values + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    return pred[box], reference[box]


def binary_dice(pred_mask: torch.Tensor, reference_mask: torch.Tensor) -> float:
    """Dice of two binary masks; NaN when both are empty, 0 when only one is.

    Args:
        pred_mask: (D, H, W) tensor; non-zero voxels are foreground.
        reference_mask: (D, H, W) tensor of the same shape.
    """
    _check_pair(pred_mask, reference_mask, "binary_dice")
    cropped = _union_crop(pred_mask.bool(), reference_mask.bool())
    if cropped is None:
        return math.nan
    pred, reference = (m[None, None].float() for m in cropped)
    return float(compute_dice(pred, reference, include_background=True, ignore_empty=False)[0, 0])


def binary_nsd(
    pred_mask: torch.Tensor,
    reference_mask: torch.Tensor,
    spacing_mm: Sequence[float],
    tolerance_mm: float,
) -> float:
    """Normalized Surface Distance of two binary masks at a tolerance in mm.

    Args:
        pred_mask: (D, H, W) tensor; non-zero voxels are foreground.
        reference_mask: (D, H, W) tensor of the same shape.
        spacing_mm: voxel size along (D, H, W) in mm.
        tolerance_mm: largest surface deviation (mm) that still counts as correct.

    Returns:
        NSD in [0, 1]; NaN when both masks are empty, 0 when only one is.
    """
    _check_pair(pred_mask, reference_mask, "binary_nsd")
    tolerance = _check_tolerance(tolerance_mm, "tolerance_mm")
    spacing_mm = check_spacing_mm(spacing_mm)
    cropped = _union_crop(pred_mask.bool(), reference_mask.bool())
    if cropped is None:
        return math.nan
    # cropping to the union's bounding box keeps every surface voxel: a mask voxel on a face of
    # the box has a neighbour outside the box, hence outside the mask
    pred_surface, reference_surface = (surface_voxels(m) for m in cropped)
    total = int(pred_surface.sum()) + int(reference_surface.sum())
    if not pred_surface.any() or not reference_surface.any():
        return 0.0
    bound = tolerance + TOLERANCE_ROUNDING_MM
    pred_ok = torch.isfinite(bounded_distance_map(reference_surface, spacing_mm, bound)[pred_surface]).sum()
    reference_ok = torch.isfinite(bounded_distance_map(pred_surface, spacing_mm, bound)[reference_surface]).sum()
    return float(pred_ok + reference_ok) / total


def _check_tolerance(value, name: str) -> float:
    try:
        tolerance = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a distance in mm, got {value!r}") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"{name} must be a finite, non-negative distance in mm, got {value!r}")
    return tolerance


def _check_label_map(name: str, values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return ``values`` as an integer tensor; reject fractions and values outside [0, num_classes)."""
    if values.is_floating_point():
        if not bool(torch.all(values == torch.round(values))):
            raise ValueError(
                f"{name} holds non-integer values: pass a label map (argmax of the class scores), "
                "not probabilities"
            )
        values = values.long()
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(
            f"{name} holds values in [{int(values.min())}, {int(values.max())}] but num_classes={num_classes} "
            f"allows only 0..{num_classes - 1}: raise num_classes or fix the label map"
        )
    return values


def _classes(num_classes: int, include_background: bool) -> range:
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (background included), got {num_classes!r}")
    first = 0 if include_background else 1
    if first >= num_classes:
        raise ValueError(
            "num_classes=1 leaves no foreground class when include_background=False: "
            "pass the number of classes including the background"
        )
    return range(first, int(num_classes))


def dice_per_class(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, include_background: bool = False
) -> torch.Tensor:
    """DSC of every class of two integer label maps.

    Args:
        pred: (D, H, W) predicted label map with values in [0, num_classes).
        label: (D, H, W) reference label map of the same shape.
        num_classes: number of classes including the background (value 0).
        include_background: also score class 0. Default False.

    Returns:
        (C,) float64 tensor, C = num_classes - 1 (or num_classes with the background); NaN for a
        class absent from both maps, 0 for a class present in only one.
    """
    _check_pair(pred, label, "dice_per_class")
    classes = _classes(num_classes, include_background)
    pred = _check_label_map("pred", pred, num_classes)
    label = _check_label_map("label", label, num_classes)
    return torch.tensor([binary_dice(pred == c, label == c) for c in classes], dtype=torch.float64)


def nsd_per_class(
    pred: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    spacing_mm: Sequence[float],
    tolerance_mm: float | Sequence[float],
    include_background: bool = False,
) -> torch.Tensor:
    """NSD of every class of two integer label maps, with a tolerance in mm per class.

    Args:
        pred: (D, H, W) predicted label map with values in [0, num_classes).
        label: (D, H, W) reference label map of the same shape.
        num_classes: number of classes including the background (value 0).
        spacing_mm: voxel size along (D, H, W) in mm.
        tolerance_mm: one tolerance (mm) for all classes, or one per scored class (in class
            order, C values).
        include_background: also score class 0. Default False.

    Returns:
        (C,) float64 tensor; NaN for a class absent from both maps, 0 for a class present in
        only one.
    """
    _check_pair(pred, label, "nsd_per_class")
    classes = _classes(num_classes, include_background)
    if isinstance(tolerance_mm, Sequence) and not isinstance(tolerance_mm, str):
        if len(tolerance_mm) != len(classes):
            raise ValueError(
                f"tolerance_mm has {len(tolerance_mm)} values but {len(classes)} classes are scored "
                f"(classes {list(classes)}): give one tolerance in mm per class, or a single number"
            )
        tolerances = [_check_tolerance(t, f"tolerance_mm[{i}]") for i, t in enumerate(tolerance_mm)]
    else:
        tolerances = [_check_tolerance(tolerance_mm, "tolerance_mm")] * len(classes)
    pred = _check_label_map("pred", pred, num_classes)
    label = _check_label_map("label", label, num_classes)
    values = [binary_nsd(pred == c, label == c, spacing_mm, t) for c, t in zip(classes, tolerances)]
    return torch.tensor(values, dtype=torch.float64)


#: Every metric the evaluation computes, in report order; the first (DSC) ranks the methods of a study. A new
#: metric: its function above and one line here (see :class:`custom_nets.evaluation.metric_registry.Metric`).
METRICS = MetricRegistry(
    Metric("dsc", "DSC", binary_dice),
    Metric("nsd", "NSD", binary_nsd, arguments=("spacing_mm", "tolerance_mm")),
)
