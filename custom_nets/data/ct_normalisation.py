"""nnU-Net's CT normalisation: one intensity window and one z-score for the whole dataset.

CT intensities are calibrated (Hounsfield units), so nnU-Net does not z-score each image on its
own, which would throw the calibration away. Instead it collects foreground intensities (voxels
where the label is > 0) over the training cases, and then for every image and channel

    x -> (clip(x, p0.5, p99.5) - mean) / std

with p0.5 / p99.5 the 0.5th / 99.5th percentiles and mean / std those of the collected foreground
intensities (not clipped). Here, as in nnU-Net, up to 10,000 foreground voxels per case and channel
are used (all of them when a case has fewer; a seeded random subset otherwise, seeded by the case
id), so every case has about the same weight. ``ct_clip=(low, high)`` replaces the percentile
window by a fixed one (e.g. a soft-tissue window), mean and std stay the dataset's.

The statistics are cached in the preprocessing folder together with the size and time of every
input file, so a rerun on unchanged data does not read the dataset again. The normalisation itself is a step of
the preprocessing chain (``custom_nets.data.preprocessing.normalisation_config``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.case_ids import short_hash
from custom_nets.data.manifest import input_stamp
from custom_nets.data.parallel import run_tasks
from custom_nets.data.quality import describe_error
from custom_nets.data.ras_loading import load_ras

__all__ = ["FOREGROUND_SAMPLES_PER_CASE", "PERCENTILES", "ct_statistics", "sample_foreground"]

logger = logging.getLogger(__name__)

#: Foreground voxels kept per case and channel (nnU-Net's ``num_samples``).
FOREGROUND_SAMPLES_PER_CASE = 10_000

#: Percentiles (%) of the foreground intensities that bound the intensity window.
PERCENTILES = (0.5, 99.5)


def sample_foreground(task: dict) -> dict:
    """Worker: foreground intensities of one case, per channel.

    Args:
        task: ``{"index": int, "case": str, "image": [files], "label": file}``.

    Returns:
        ``{"index", "case", "samples": [float64 array per channel] or None, "problem": str or None}``;
        never raises (a case that cannot be read is reported when it is preprocessed).
    """
    try:
        channels = torch.cat([load_ras(path).as_tensor() for path in task["image"]])
        label = load_ras(task["label"]).as_tensor()
        if tuple(label.shape[1:]) != tuple(channels.shape[1:]):
            return {**task, "samples": None, "problem": "label and image shapes differ"}
        foreground = (label > 0).any(dim=0)
        rng = np.random.default_rng(int(short_hash(task["case"]), 16))
        samples = []
        for channel in channels:
            values = channel[foreground].double().numpy()
            if values.size > FOREGROUND_SAMPLES_PER_CASE:
                values = values[np.sort(rng.choice(values.size, FOREGROUND_SAMPLES_PER_CASE, replace=False))]
            samples.append(values)
        return {**task, "samples": samples, "problem": None}
    except Exception as err:  # noqa: BLE001 - reported per case by the preprocessing step
        return {**task, "samples": None, "problem": describe_error(err)}


def _crashed(task: dict) -> dict:
    return {**task, "samples": None, "problem": "the worker process died while reading this case"}


def _summarise(per_case: list[list[np.ndarray]], ct_clip) -> dict:
    channels = []
    for values in zip(*per_case):
        pooled = np.concatenate(values)
        if pooled.size == 0:
            raise ValueError(
                "no foreground voxels (label > 0) in any case: the CT statistics need labeled voxels; "
                "check that the label files are not empty"
            )
        low, high = (float(v) for v in np.percentile(pooled, PERCENTILES))
        channels.append({
            "low": float(ct_clip[0]) if ct_clip is not None else low,
            "high": float(ct_clip[1]) if ct_clip is not None else high,
            "mean": float(pooled.mean()),
            "std": float(pooled.std()),
            "percentiles": [low, high],
            "foreground_samples": int(pooled.size),
        })
    return {"window": "ct_clip" if ct_clip is not None else "percentiles", "channels": channels}


def _stamps(entries: list[dict]) -> dict:
    return {e["case"]: input_stamp({"image": e["image"], "label": e["label"]}) for e in entries}


def _cached(cache_file: Path | None, stamps: dict, ct_clip) -> dict | None:
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        stored = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted_clip = None if ct_clip is None else [float(v) for v in ct_clip]
    if stored.get("stamps") == json.loads(json.dumps(stamps)) and stored.get("ct_clip") == wanted_clip:
        return stored["statistics"]
    return None


def ct_statistics(entries: list[dict], num_workers: int = 0, ct_clip=None, cache_file=None) -> dict:
    """Dataset-wide CT intensity window and z-score parameters from the labeled foreground.

    Args:
        entries: cases ``{"case", "image": [files], "label": file}``.
        num_workers: worker processes reading the cases (0: in this process).
        ct_clip: ``(low, high)`` window in the image's units (HU), or None for the foreground's
            0.5 / 99.5 percentiles.
        cache_file: JSON file that stores the result with the input file stamps; reused when
            the inputs and ``ct_clip`` are unchanged.

    Returns:
        ``{"window": "percentiles" | "ct_clip", "channels": [{"low", "high", "mean", "std",
        "percentiles": [p0.5, p99.5], "foreground_samples"}, ...]}`` (one dict per channel).

    Raises:
        ValueError: no case has foreground voxels.
    """
    cache_file = Path(cache_file) if cache_file is not None else None
    stamps = _stamps(entries)
    cached = _cached(cache_file, stamps, ct_clip)
    if cached is not None:
        logger.info("Reusing CT intensity statistics from %s", cache_file)
        return cached
    tasks = [
        {"index": i, "case": e["case"], "image": list(e["image"]), "label": e["label"]} for i, e in enumerate(entries)
    ]
    results: dict[int, dict] = {}
    workers = min(num_workers, len(tasks))
    run_tasks(tasks, sample_foreground, workers, lambda task, result: results.update({task["index"]: result}), _crashed)
    per_case = []
    for index in range(len(tasks)):  # entry order, so the pooled statistics do not depend on timing
        result = results[index]
        if result["samples"] is None:
            logger.warning("CT statistics leave out case '%s': %s", result["case"], result["problem"])
        else:
            per_case.append(result["samples"])
    if not per_case:
        raise ValueError(f"no case could be read to compute CT statistics (first: {results[0]['problem']})")
    statistics = _summarise(per_case, ct_clip)
    for c, channel in enumerate(statistics["channels"]):
        logger.info(
            "CT channel %d: window [%.1f, %.1f], mean %.1f, std %.1f over %d foreground samples",
            c, channel["low"], channel["high"], channel["mean"], channel["std"], channel["foreground_samples"],
        )
    if cache_file is not None:
        stored = {"ct_clip": None if ct_clip is None else [float(v) for v in ct_clip], "stamps": stamps,
                  "statistics": statistics}
        atomic_write_text(cache_file, json.dumps(stored, indent=1) + "\n")
    return statistics
