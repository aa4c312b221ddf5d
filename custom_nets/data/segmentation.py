"""Labeled data for fine-tuning: read an MSD-style dataset, preprocess it like the pre-training data, split it.

``prepare_segmentation_dataset`` is the one call a fine-tuning config makes. It reads the dataset
(``custom_nets.data.labeled_dataset``), resolves the target spacing (a number, ``[x, y, z]``
or the dataset's median spacing, ``custom_nets.data.spacing``), computes nnU-Net's CT statistics
when ``modality="ct"`` (``custom_nets.data.ct_normalisation``) and runs every case through
the cache builder of the pre-training data (``custom_nets.data.cache``: ``custom_nets.data.case`` in worker
processes, a resumable manifest), behind a settings guard (``manifest``), with atomic writes. The cache
folder then holds

* ``images/<case>.nii.gz`` (float32, RAS, cropped, normalised, resampled; ``x, y, z, C`` for C > 1
  modalities) and ``labels/<case>.nii.gz`` (uint8, same grid),
* ``dataset.json``: MSD-style, paths relative to the cache, with ``labels``, ``modality`` and the
  ``spacing`` used, the held-out cases of the source's labeled ``test`` list under ``test`` (itself
  readable by ``load_segmentation_datalist``),
* ``skipped.csv``: ``case,reason`` for every case left out,
* ``settings.json``, ``manifest.jsonl`` and, for CT, ``intensity_statistics.json``.

Problem handling (details in ``custom_nets.data.case``): geometry mismatches, undeclared label
values, a zero or missing voxel size and files this user may not read raise one ``ValueError``
that lists every such case with its file after all other cases are cached; missing files or
modalities and corrupt files are skipped with a logged, counted reason; cases with an empty label
are kept with a warning.

Labeled cases of the dataset's ``test`` list are cached with the others and named in the result's
``test_cases``; ``make_splits(..., test_cases=...)`` then holds exactly them out.

``make_splits`` and ``select_split`` (``custom_nets.data.splits``) are re-exported here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.cache import build_cache, worker_count
from custom_nets.data.case import ERROR_CODES, LABELED_DATA_THRESHOLDS
from custom_nets.data.ct_normalisation import ct_statistics
from custom_nets.data.demo import write_demo_segmentation_dataset
from custom_nets.data.manifest import check_settings, entry_identity, read_manifests
from custom_nets.data.paths import check_writable_dir
from custom_nets.distributed import barrier, rank_and_world
from custom_nets.data.labeled_dataset import load_segmentation_datalist, read_segmentation_dataset
from custom_nets.data.spacing import resolve_target_spacing
from custom_nets.data.splits import make_splits, select_split

__all__ = ["labeled_source", "load_segmentation_datalist", "make_splits", "prepare_segmentation_dataset",
           "select_split"]

logger = logging.getLogger(__name__)

#: Sub-folder of the cache that receives the synthetic labeled dataset when no source is given.
DEMO_SOURCE_FOLDER = "demo_source"

_MODALITIES = ("mri", "ct")


def labeled_source(source, cache_dir) -> str:
    """The raw labeled dataset a fine-tuning run reads: ``source``, or (``None``) the demo dataset that
    ``prepare_segmentation_dataset`` writes into ``<cache_dir>/demo_source``; evaluation reads the raw cases again."""
    return os.fspath(source) if source is not None else os.path.join(os.fspath(cache_dir), DEMO_SOURCE_FOLDER)

#: Most cases listed in an error message.
_MAX_LISTED = 20


def _check_modality(modality, ct_clip) -> tuple[str, tuple[float, float] | None]:
    name = str(modality).strip().lower()
    if name not in _MODALITIES:
        raise ValueError(
            f"modality={modality!r} is not a normalisation scheme: pass 'mri' (z-score per image) or 'ct' "
            "(clip + z-score with dataset statistics)"
        )
    if ct_clip is None:
        return name, None
    if name != "ct":
        raise ValueError(f"ct_clip={ct_clip!r} only applies to modality='ct': drop it or pass modality='ct'")
    try:
        low, high = (float(v) for v in ct_clip)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ct_clip={ct_clip!r} is not (low, high): pass e.g. ct_clip=(-1000, 1000)") from err
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"ct_clip={ct_clip!r} needs finite low < high (HU), e.g. (-1000, 1000)")
    return name, (low, high)


def _distributed_rank() -> int | None:
    """This process's rank when a multi-process ``torch.distributed`` group is running, else None."""
    rank, world = rank_and_world()
    return rank if world > 1 else None


def _format_cases(items: list[tuple[str, str]]) -> str:
    lines = [f"  {case}: {reason}" for case, reason in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
    return "\n".join(lines)


def _write_outputs(
    cache: Path, training: list[dict], test_cases, skipped, labels, modalities, spacing, normalisation
) -> str:
    """Write the cache's ``dataset.json`` (paths relative to the cache) and ``skipped.csv``."""
    held_out = set(test_cases)

    def relative(entries):
        return [{"image": os.path.relpath(e["image"], cache), "label": os.path.relpath(e["label"], cache)} for e in entries]

    dataset = {
        "name": "preprocessed segmentation cache",
        "modality": {str(i): name for i, name in enumerate(modalities)},
        "labels": {str(k): v for k, v in labels.items()},
        "spacing": list(spacing),
        "normalisation": normalisation,
        "numTraining": len(training) - len(held_out),
        "training": relative([e for e in training if e["case"] not in held_out]),
    }
    if held_out:
        dataset["numTest"] = len(held_out)
        dataset["test"] = relative([e for e in training if e["case"] in held_out])
    atomic_write_text(cache / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "reason"])
    writer.writerows(skipped)
    atomic_write_text(cache / "skipped.csv", buffer.getvalue())
    return str(cache / "dataset.json")


def _labeled_entries(dataset, key: str) -> tuple[list[dict], list[tuple], list[tuple]]:
    """The dataset's usable labeled entries, and its ``(case, reason)`` problems: ``(entries, errors, skipped)``."""
    skipped = [(p.case, p.reason) for p in dataset.problems if p.code not in ERROR_CODES]
    errors = [(p.case, p.reason) for p in dataset.problems if p.code in ERROR_CODES]
    entries = [e for e in dataset.entries if "label" in e]
    if len(entries) < len(dataset.entries):
        raise ValueError(f"the '{key}' list of '{dataset.path}' has no labels: pass the key of the labeled cases")
    if not entries:
        raise ValueError(f"no usable case in '{dataset.path}':\n{_format_cases(errors + skipped)}")
    return entries, errors, skipped


def _case_settings(dataset, entries, cache: Path, target_spacing, modality, ct_clip, num_workers) -> dict:
    """What every case's task gets (spacing, classes, channels, normalisation, thresholds); refuses a cache that
    was built with other settings (``check_settings``)."""
    spacing = resolve_target_spacing(target_spacing, [e["image"][0] for e in entries])
    normalisation: dict = {"modality": modality}
    if modality == "ct":
        workers = worker_count(num_workers, len(entries))
        normalisation["statistics"] = ct_statistics(entries, workers, ct_clip, cache / "intensity_statistics.json")
    check_settings(cache, {
        "task": "segmentation", "keys": ["image", "label"], "target_spacing": list(spacing),
        "normalisation": normalisation, "labels": {str(k): v for k, v in dataset.labels.items()},
        "modalities": dataset.modalities, "thresholds": vars(LABELED_DATA_THRESHOLDS),
    })
    return {"target_spacing": spacing, "classes": sorted(dataset.labels), "channels": len(dataset.modalities),
            "normalisation": normalisation, "thresholds": LABELED_DATA_THRESHOLDS}


def _cached_cases(entries, inputs, records, cache: Path, classes, errors: list, skipped: list) -> tuple:
    """``(training entries with cached paths, cases with an empty label, voxels per class)``; a case that was not
    cached goes to ``errors`` or ``skipped`` by its reason code; warnings of kept cases are logged."""
    training, empty, class_voxels = [], [], np.zeros(len(classes), dtype=np.int64)
    for entry, item in zip(entries, inputs):
        record = records[entry_identity(item)]
        case = entry["case"]
        if record["status"] != "ok":
            (errors if record["reason"].split(":")[0] in ERROR_CODES else skipped).append((case, record["reason"]))
            continue
        training.append({"case": case, **{k: str(cache / p) for k, p in record["outputs"].items()}})
        class_voxels += np.asarray(record.get("label_voxels") or np.zeros(len(classes)), dtype=np.int64)
        for warning in record.get("warnings") or []:
            logger.warning("Case '%s': %s", case, warning)
            if warning.startswith("empty_label"):
                empty.append(case)
    return training, empty, class_voxels


def _prepare(source, cache: Path, target_spacing, modality, ct_clip, num_workers, key, write: bool) -> dict:
    dataset = read_segmentation_dataset(source, key)
    entries, errors, skipped = _labeled_entries(dataset, key)
    settings = _case_settings(dataset, entries, cache, target_spacing, modality, ct_clip, num_workers)
    inputs = [{"image": list(e["image"]), "label": e["label"]} for e in entries]
    records = build_cache(inputs, [e["case"] for e in entries], cache, ["image", "label"], settings,
                          read_manifests(cache), num_workers)
    classes, spacing, normalisation = settings["classes"], settings["target_spacing"], settings["normalisation"]
    training, empty, class_voxels = _cached_cases(entries, inputs, records, cache, classes, errors, skipped)
    for case, reason in skipped:
        logger.warning("Skipping case '%s': %s", case, reason)
    if errors:
        raise ValueError(
            f"{len(errors)} labeled cases of '{dataset.path}' have files that need fixing (wrong labels or geometry, "
            "no voxel size, or no read permission; the other cases are cached; fix these files or remove the cases "
            f"from dataset.json, then run again):\n{_format_cases(errors)}"
        )
    if not training:
        raise ValueError(f"no case of '{dataset.path}' could be preprocessed:\n{_format_cases(skipped)}")
    if empty:
        logger.warning("%d of %d cases have an empty label (no foreground): %s", len(empty), len(training), empty[:10])
    cached = {e["case"] for e in training}
    test_cases = [case for case in dataset.test_cases if case in cached]
    datalist = str(cache / "dataset.json")
    if write:
        datalist = _write_outputs(
            cache, training, test_cases, skipped, dataset.labels, dataset.modalities, spacing, normalisation
        )
    logger.info(
        "Segmentation data ready: %d cases, %d skipped (see %s); voxels per class %s",
        len(training), len(skipped), cache / "skipped.csv",
        {dataset.labels[c]: int(n) for c, n in zip(classes, class_voxels)},
    )
    return {
        "training": training, "test_cases": test_cases, "labels": dict(dataset.labels), "spacing": list(spacing),
        "skipped": skipped, "modalities": list(dataset.modalities), "empty_labels": empty,
        "normalisation": normalisation, "datalist": datalist,
    }


def prepare_segmentation_dataset(
    source,
    cache_dir,
    target_spacing=1.0,
    modality: str = "mri",
    ct_clip=None,
    num_workers=None,
    key: str = "training",
) -> dict:
    """Check and preprocess a labeled dataset into ``cache_dir`` (resuming earlier runs).

    Args:
        source: MSD-style ``dataset.json`` (or its folder), see ``load_segmentation_datalist``;
            ``None`` writes the synthetic demo dataset to ``<cache_dir>/demo_source`` and uses it.
        cache_dir: output folder; reused across runs with the same settings, refused otherwise.
        target_spacing: voxel size in mm after resampling (RAS axes): one number, ``[x, y, z]``,
            or ``"median"`` for the dataset's median spacing per axis (nnU-Net's choice; keeps
            thin structures such as vessels in TOF angiography).
        modality: ``"mri"``: z-score each channel over its non-zero voxels; ``"ct"``: clip to
            the dataset's foreground 0.5/99.5 percentiles and z-score with the foreground mean
            and std (nnU-Net's CT normalisation, see ``ct_normalisation``).
        ct_clip: ``(low, high)`` fixed CT window (HU) replacing the percentiles; CT only.
        num_workers: worker processes (default: the cores this process may use); 0 runs here.
        key: the entry list of ``dataset.json`` to use.

    Returns:
        ``{"training": [{"case", "image", "label"} with absolute cached paths of every cached case,
        the held-out ones included], "test_cases": [cases from the labeled 'test' list], "labels":
        {0: "background", ...}, "spacing": [x, y, z] mm used, "skipped": [(case, reason)],
        "modalities": [channel names], "empty_labels": [cases], "normalisation": {...},
        "datalist": <cache_dir>/dataset.json}``.

    Raises:
        ValueError: invalid arguments or dataset declaration; cases whose label geometry or
            values are wrong (all listed, with case names and geometries or values); no case
            left; ``cache_dir`` built with other settings.

    In a multi-process ``torch.distributed`` run, rank 0 preprocesses while the other ranks wait,
    then they read the finished cache.
    """
    if cache_dir is None or not os.fspath(cache_dir):
        raise ValueError("cache_dir is empty: pass a writable folder for the preprocessed cache, e.g. ./cache_finetune")
    modality, ct_clip = _check_modality(modality, ct_clip)
    cache = Path(os.path.abspath(os.fspath(cache_dir)))
    rank = _distributed_rank()
    if rank:  # not rank 0: wait until rank 0 has built the cache, then only read it
        barrier()
        num_workers = 0
    if not rank:
        check_writable_dir(cache, "cache folder", "--cache_dir")
    cache.mkdir(parents=True, exist_ok=True)
    if source is None:
        logger.warning("No dataset given: using the synthetic labeled demo dataset in %s", cache / DEMO_SOURCE_FOLDER)
        source = write_demo_segmentation_dataset(cache / DEMO_SOURCE_FOLDER)
    result = _prepare(source, cache, target_spacing, modality, ct_clip, num_workers, key, write=not rank)
    if rank == 0:
        barrier()
    return result
