"""Choose the pre-training images by their metadata: OpenMind's image quality score and the modality.

OpenMind (and nnssl's ``pretrain_data.json``) give every image an image quality score, 1 (clear,
sharp) to 5 (heavily compromised), rated per dataset, modality and DWI derivative. The OpenMind
benchmark pre-trained on all 114k images; its data ablation kept images with a score up to 3.0,
2.5 or 1.5, and alternatively only T1w, T2w and FLAIR images. ``select_entries`` applies both
filters to datalist entries (``image_quality_score`` and ``modality`` keys, as the layout readers
of ``custom_nets.data.layouts`` fill them) and returns the left-out images with a reason, which the
pre-training cache lists in ``excluded.csv`` next to the quality filter's exclusions.
"""

from __future__ import annotations

import logging
import math

__all__ = ["select_entries"]

logger = logging.getLogger(__name__)


def _check_score(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"max_image_quality_score={value!r} is not a number: pass e.g. 2.5 (OpenMind scores run from 1 = best "
            "to 5 = worst) or null for no filter"
        )
    return float(value)


def _check_modalities(value) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(
            f"modalities={value!r} is not a list of modality names: pass e.g. [T1w, T2w, FLAIR] or null for all"
        )
    return [n.strip() for n in names]


def _source(entry: dict):
    image = entry["image"]
    return image[0] if isinstance(image, (list, tuple)) and len(image) == 1 else image


def select_entries(entries: list[dict], max_image_quality_score=None, modalities=None) -> tuple[list[dict], list[dict]]:
    """Split entries into those the filters keep and those they leave out.

    Args:
        entries: datalist entries; filters read their ``image_quality_score`` and ``modality``.
        max_image_quality_score: keep images whose score is at most this (1 best ... 5 worst);
            ``None``: no quality filter.
        modalities: keep images whose modality is one of these (case-insensitive, e.g. ``["T1w",
            "T2w", "FLAIR"]``); ``None``: every modality.

    Returns:
        ``(kept, excluded)``; ``excluded`` rows are ``{"image": source, "reason": "<code>: ..."}``
        with codes ``quality_score`` and ``modality``, as ``excluded.csv`` lists them.

    Raises:
        ValueError: invalid settings, or a filter is set but no entry carries what it reads (the
            layout has no scores or modalities), which would leave nothing to train on.
    """
    limit = _check_score(max_image_quality_score)
    wanted = _check_modalities(modalities)
    if limit is None and wanted is None:
        return list(entries), []
    if limit is not None and not any(e.get("image_quality_score") is not None for e in entries):
        raise ValueError(
            f"max_image_quality_score={limit:g} is set, but no image of this dataset has an image_quality_score "
            "(OpenMind's openneuro_metadata.csv, nnssl's pretrain_data.json and datalist entries with an "
            "'image_quality_score' key have one): set max_image_quality_score null"
        )
    if wanted is not None and not any(e.get("modality") for e in entries):
        raise ValueError(
            f"modalities={wanted} is set, but no image of this dataset has a modality (OpenMind's csv, nnssl's "
            "pretrain_data.json, BIDS file names and datalist entries with a 'modality' key give one): set modalities null"
        )
    allowed = {n.lower() for n in wanted or []}
    kept, excluded = [], []
    for entry in entries:
        score, modality = entry.get("image_quality_score"), entry.get("modality")
        reason = None
        if limit is not None and score is None:
            reason = f"quality_score: no image_quality_score (max_image_quality_score {limit:g} is set)"
        elif limit is not None and float(score) > limit:
            reason = f"quality_score: image_quality_score {float(score):g} > max_image_quality_score {limit:g}"
        elif wanted is not None and not modality:
            reason = f"modality: no modality (modalities {wanted} is set)"
        elif wanted is not None and str(modality).lower() not in allowed:
            reason = f"modality: {modality} is not one of modalities {wanted}"
        if reason:
            excluded.append({"image": _source(entry), "reason": reason})
        else:
            kept.append(entry)
    logger.info(
        "Selected %d of %d images (max_image_quality_score %s, modalities %s); %d left out",
        len(kept), len(entries), "none" if limit is None else f"{limit:g}", wanted or "all", len(excluded),
    )
    return kept, excluded
