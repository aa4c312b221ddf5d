"""Evaluation of one run: Dice (DSC) and Normalized Surface Distance (NSD) per class, per case and per folder.

See ``metrics.py`` for the definitions, the empty-class convention (NaN when a class is absent
from both prediction and reference, left out of means and counted) and ``METRICS``, the registry of
metrics every report loops over (``metric_registry.py``); ``evaluate.py`` for reading NIfTI
predictions and labels, ``summary.py`` for the report files, ``inference.py`` for test-time
mirroring and ``predictions.py`` for the cases and prediction files of the bundles. Comparing many
runs (evaluation studies, ranks, significance, plots) is :mod:`custom_nets.study`.
"""

from custom_nets.evaluation.evaluate import evaluate_case, evaluate_folder, normalise_labels, resolve_tolerances
from custom_nets.evaluation.inference import MirroredSlidingWindowInferer
from custom_nets.evaluation.predictions import SavePredictiond, evaluation_cases, inference_inputs
from custom_nets.evaluation.metric_registry import Metric, MetricRegistry
from custom_nets.evaluation.metrics import METRICS, binary_dice, binary_nsd, dice_per_class, nsd_per_class
from custom_nets.evaluation.summary import summarise, write_reports
from custom_nets.evaluation.surface import bounded_distance_map, nearest_distances, surface_points_mm, surface_voxels

__all__ = [
    "METRICS",
    "Metric",
    "MetricRegistry",
    "SavePredictiond",
    "evaluation_cases",
    "inference_inputs",
    "MirroredSlidingWindowInferer",
    "binary_dice",
    "binary_nsd",
    "bounded_distance_map",
    "dice_per_class",
    "evaluate_case",
    "evaluate_folder",
    "nearest_distances",
    "normalise_labels",
    "nsd_per_class",
    "resolve_tolerances",
    "summarise",
    "surface_points_mm",
    "surface_voxels",
    "write_reports",
]
