"""Build (or resume) the preprocessed cache that pre-training reads from.

``preprocess_dataset`` runs every entry through the cache builder (``custom_nets.data.cache``: one
``preprocess_case`` per source in worker processes, one manifest line per finished source) and finally writes

* ``<cache_dir>/images/<case_id>.nii.gz`` (float32, RAS, cropped, z-scored, resampled) and
  ``<cache_dir>/anonymization_masks/<case_id>.nii.gz`` (uint8, same geometry),
* ``<cache_dir>/datalist.json``: MSD-style ``{"training": [...]}`` with paths relative to the cache,
* ``<cache_dir>/excluded.csv``: one ``source,reason`` row per file the quality filter dropped or
  the selection filters (image quality score, modality; ``custom_nets.data.selection``) left out,
* ``<cache_dir>/settings.json`` and ``<cache_dir>/manifest*.jsonl`` (see ``manifest``).

A rerun skips every source whose manifest record is still valid (same inputs; outputs present),
so an interrupted run over 100k files resumes where it stopped. ``prepare_dataset`` is the single
call the training configs make: it finds the data (or writes the synthetic demo set), shards the
work over distributed ranks, and returns the training entries.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from custom_nets.data.cache import available_cores, build_cache, first_file
from custom_nets.data.case import output_folder
from custom_nets.data.case_ids import case_ids_for
from custom_nets.data.datalist import load_datalist
from custom_nets.data.demo import write_demo_dataset
from custom_nets.data.manifest import check_settings, entry_identity, read_manifests
from custom_nets.data.paths import check_writable_dir
from custom_nets.data.quality import QualityThresholds
from custom_nets.data.results import collect_results, without_shapes, write_results
from custom_nets.data.selection import select_entries
from custom_nets.distributed import barrier, is_initialized

__all__ = ["preprocess_dataset", "prepare_dataset"]

logger = logging.getLogger(__name__)

#: Sub-folder of the cache that receives the synthetic dataset when no dataset_dir is given.
DEMO_SOURCE_FOLDER = "demo_source"


def _spacing3(target_spacing) -> tuple[float, float, float]:
    """``1.0`` or ``(x, y, z)`` -> a 3-tuple of positive floats in mm."""
    values = np.atleast_1d(np.asarray(target_spacing, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, 3)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"target_spacing={target_spacing!r} is not one or three positive numbers in mm: "
            "pass e.g. 1.0 or (1.0, 1.0, 1.0)"
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _case_inputs(entries: list[dict], keys: tuple[str, ...], warn: bool = True) -> list[dict]:
    """Per entry the ``{key: path}`` subset that is preprocessed; duplicates are dropped."""
    image_key = keys[0]
    inputs, seen = [], set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get(image_key) is None:
            raise ValueError(
                f"entry {index} has no '{image_key}' path: build entries with load_datalist() or "
                f"give every entry an '{image_key}' key"
            )
        item = {k: entry[k] for k in keys if entry.get(k) is not None}
        identity = entry_identity(item)
        if identity not in seen:
            seen.add(identity)
            inputs.append(item)
    if warn and len(inputs) < len(entries):
        logger.warning("Ignoring %d duplicate entries", len(entries) - len(inputs))
    return inputs


def preprocess_dataset(
    entries: list[dict],
    cache_dir,
    num_workers=None,
    target_spacing=(1.0, 1.0, 1.0),
    thresholds: QualityThresholds = QualityThresholds(),
    keys=("image", "anonymization_mask"),
    *,
    rank: int = 0,
    world_size: int = 1,
    excluded=(),
) -> dict:
    """Quality-filter and preprocess ``entries`` into ``cache_dir``, resuming earlier runs.

    Args:
        entries: dicts with absolute paths (see ``load_datalist``); ``keys[0]`` is required.
        cache_dir: output folder; reused across runs with the same settings.
        num_workers: worker processes (default: the cores this process may use); 0 runs in
            this process.
        target_spacing: output voxel size in mm, one number or (x, y, z).
        thresholds: quality limits applied to every image file before preprocessing.
        keys: the image key first, then mask keys processed with the image's geometry.
        rank, world_size: process only ``entries[rank::world_size]`` and append to
            ``manifest.rank<rank>.jsonl``; with ``world_size > 1`` the datalist and
            ``excluded.csv`` are not written here (``prepare_dataset`` merges the shards).
        excluded: ``{"image", "reason"}`` rows of images left out before preprocessing (by the
            selection filters); listed first in ``excluded.csv`` and in the result.

    Returns:
        ``{"datalist": <cache_dir>/datalist.json, "training": [entries with absolute cached
        paths], "excluded": [{"image": source, "reason": ...}]}``; with ``world_size > 1``
        only this rank's share.

    Raises:
        ValueError: bad arguments, or ``cache_dir`` was built with different settings.
    """
    keys = tuple(keys)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(
            f"keys={keys!r} must be non-empty strings, the image key first: pass e.g. ('image', 'anonymization_mask')"
        )
    if not isinstance(thresholds, QualityThresholds):
        raise ValueError(
            f"thresholds must be a QualityThresholds, got {type(thresholds).__name__}: pass QualityThresholds(...)"
        )
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank={rank!r}, world_size={world_size!r} are inconsistent: need 0 <= rank < world_size")
    if not entries:
        raise ValueError("entries is empty: load them with load_datalist(<dataset folder or datalist JSON>)")
    spacing = _spacing3(target_spacing)
    cache = Path(os.path.abspath(os.fspath(cache_dir)))
    cache.mkdir(parents=True, exist_ok=True)
    check_settings(cache, {"target_spacing": list(spacing), "keys": list(keys), "thresholds": vars(thresholds)})

    # Case ids come from all entries, so every rank derives the same, collision-free names.
    all_inputs = _case_inputs(entries, keys)
    all_ids = case_ids_for([first_file(item[keys[0]]) for item in all_inputs])
    my_inputs = all_inputs[rank::world_size]
    records = read_manifests(cache)
    settings = {"target_spacing": spacing, "thresholds": thresholds}
    build_cache(my_inputs, all_ids[rank::world_size], cache, keys, settings, records, num_workers, rank, world_size)

    result, unfinished = collect_results(my_inputs, records, cache)
    if unfinished:  # only possible if cached files were deleted while this run was going on
        raise RuntimeError(
            f"{len(unfinished)} cases in '{cache}' lost their cached files during preprocessing: run again"
        )
    result["excluded"] = [*excluded, *result["excluded"]]
    if world_size == 1:
        write_results(result, cache)
    return without_shapes(result)


def _without_cache_outputs(entries: list[dict], cache: Path, keys) -> list[dict]:
    """Drop entries that are files of the cache itself (a cache folder inside a scanned dataset)."""
    folders = [str(cache / output_folder(k, keys[0])) + os.sep for k in keys]
    kept = [e for e in entries if not os.path.abspath(first_file(e["image"])).startswith(tuple(folders))]
    if len(kept) < len(entries):
        logger.warning(
            "Ignoring %d files inside the cache folder %s; keep cache_dir outside dataset_dir",
            len(entries) - len(kept), cache,
        )
    return kept


def _as_thresholds(thresholds) -> QualityThresholds:
    """``None`` -> defaults; a dict (e.g. from a YAML config) -> ``QualityThresholds(**dict)``."""
    if thresholds is None:
        return QualityThresholds()
    if isinstance(thresholds, QualityThresholds):
        return thresholds
    if isinstance(thresholds, dict):
        try:
            return QualityThresholds(**thresholds)
        except TypeError as err:
            raise ValueError(
                f"thresholds {thresholds!r} has unknown fields ({err}): "
                "use min_fov_mm, max_spacing_mm and min_file_bytes"
            ) from err
    raise ValueError(
        f"thresholds={thresholds!r} is not a QualityThresholds or a dict: pass e.g. {{'min_fov_mm': 50.0}}"
    )


def _patch3(patch_size) -> tuple[int, int, int]:
    values = [int(v) for v in np.atleast_1d(np.asarray(patch_size)).ravel()]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 1:
        raise ValueError(
            f"patch_size={patch_size!r} is not one or three positive integers (voxels): pass e.g. (160, 192, 160)"
        )
    return tuple(values)  # type: ignore[return-value]


def _warn_small_images(training: list[dict], patch_size) -> None:
    """Warn when cached images are smaller than the training patch on some axis (voxels)."""
    patch = _patch3(patch_size)
    shapes = [tuple(entry["shape"]) for entry in training if entry.get("shape")]
    small = [s for s in shapes if any(n < p for n, p in zip(s, patch))]
    if not small:
        return
    if len(small) == len(shapes):
        smallest = tuple(int(min(s[a] for s in shapes)) for a in range(3))
        logger.warning(
            "All %d preprocessed images are smaller than patch_size %s on some axis and will be zero-padded; "
            "choose a smaller patch_size (the smallest image extent per axis is %s voxels)",
            len(shapes), patch, smallest,
        )
    else:
        logger.warning(
            "%d of %d preprocessed images are smaller than patch_size %s on some axis; they will be zero-padded",
            len(small), len(shapes), patch,
        )


def _joins_process_group(rank: int, world_size: int) -> bool:
    """Whether this call is one of ``world_size`` ranks of an initialised process group (checked to agree)."""
    if not (world_size > 1 and is_initialized()):
        return False
    import torch.distributed as dist

    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"rank={rank}, world_size={world_size} disagree with the process group "
            f"(rank {dist.get_rank()} of {dist.get_world_size()}): pass the process group's rank and size"
        )
    return True


def _demo_datalist(cache: Path, rank: int, distributed: bool) -> Path:
    """Write the synthetic demo dataset into ``<cache>/demo_source`` (rank 0) and return its datalist."""
    source = cache / DEMO_SOURCE_FOLDER
    logger.warning("No dataset_dir given: using the synthetic demo dataset in %s", source)
    if rank == 0 or not distributed:
        write_demo_dataset(source)
    if distributed:
        barrier()
    return source / "datalist.json"


def _all_ranks_results(entries: list[dict], keys: tuple[str, ...], cache: Path, selected_out: list) -> dict:
    """Every rank's records merged into ``{"training", "excluded"}``; a case no rank has finished is an error."""
    result, unfinished = collect_results(_case_inputs(entries, keys, warn=False), read_manifests(cache), cache)
    result["excluded"] = [*selected_out, *result["excluded"]]
    if unfinished:
        raise RuntimeError(
            f"{len(unfinished)} of {len(unfinished) + len(result['training']) + len(result['excluded'])} cases in "
            f"'{cache}' have not been preprocessed by the other ranks yet: initialise torch.distributed before "
            "calling prepare_dataset, or run it once with world_size=1"
        )
    return result


def prepare_dataset(
    dataset_dir,
    cache_dir,
    num_workers=None,
    target_spacing=1.0,
    thresholds=None,
    patch_size=None,
    rank: int = 0,
    world_size: int = 1,
    max_image_quality_score=None,
    modalities=None,
) -> list[dict]:
    """Find, filter and preprocess the pre-training data; the one call the training configs make.

    Args:
        dataset_dir: folder of images, datalist JSON, OpenMind's ``openneuro_metadata.csv``, an
            nnssl ``pretrain_data.json`` or a BIDS root (see ``load_datalist``); ``None`` writes the
            synthetic demo dataset to ``<cache_dir>/demo_source`` and uses it.
        cache_dir: preprocessing cache folder (reused and resumed across runs).
        num_workers: worker processes per rank; 0 runs in-process. Default: the cores this
            process may use, divided among the ranks on this machine (``LOCAL_WORLD_SIZE``).
        target_spacing: output voxel size in mm, one number or (x, y, z).
        thresholds: ``QualityThresholds``, a dict of its fields, or ``None`` for the defaults.
        patch_size: training patch size in voxels; when given, a warning names how many cached
            images are smaller than it on some axis.
        rank, world_size: this process's rank and the number of ranks. Each rank preprocesses
            ``entries[rank::world_size]``; after a ``torch.distributed`` barrier (when
            initialised) every rank reads all manifest shards, so all ranks return the same list,
            and rank 0 writes ``datalist.json`` and ``excluded.csv``.
        max_image_quality_score: keep images whose OpenMind image quality score (1 best ... 5
            worst) is at most this; ``None``: no filter (see ``custom_nets.data.selection``).
        modalities: keep images of these modalities (e.g. ``["T1w", "T2w", "FLAIR"]``); ``None``: all.

    Returns:
        Training entries with absolute paths: ``image`` and, when present, ``anonymization_mask``.

    Raises:
        ValueError: no image passed the filters, or arguments are invalid.
        PermissionError: ``cache_dir`` cannot be written (the message names the path and the fix).
        RuntimeError: with several ranks but no initialised process group, another rank has not
            finished its share yet.
    """
    if cache_dir is None or not os.fspath(cache_dir):
        raise ValueError(
            "cache_dir is empty: pass a writable folder for the preprocessed cache, e.g. --cache_dir ./cache"
        )
    cache = Path(check_writable_dir(cache_dir, "cache folder", "--cache_dir"))
    quality = _as_thresholds(thresholds)
    distributed = _joins_process_group(rank, world_size)
    if dataset_dir is None:
        dataset_dir = _demo_datalist(cache, rank, distributed)

    keys = ("image", "anonymization_mask")
    entries = _without_cache_outputs(load_datalist(dataset_dir), cache, keys)
    entries, selected_out = select_entries(entries, max_image_quality_score, modalities)
    if num_workers is None and world_size > 1:
        # Ranks on one machine share its cores; torchrun exports how many ranks run here.
        num_workers = max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if entries:
        preprocess_dataset(
            entries, cache, num_workers, target_spacing, quality, keys, rank=rank, world_size=world_size,
            excluded=selected_out,
        )
    if distributed:
        barrier()
    elif world_size > 1:
        logger.warning(
            "world_size=%d but torch.distributed is not initialised: cannot wait for the other ranks", world_size
        )
    result = _all_ranks_results(entries, keys, cache, selected_out)
    if rank == 0 and (world_size > 1 or not entries):
        cache.mkdir(parents=True, exist_ok=True)
        write_results(result, cache)
    if not result["training"]:
        raise ValueError(
            f"no image passed the filters: all {len(result['excluded'])} files were excluded "
            f"(reasons in {cache / 'excluded.csv'}); check dataset_dir, or relax the quality_thresholds, "
            "max_image_quality_score or modalities"
        )
    if patch_size is not None:
        _warn_small_images(result["training"], patch_size)
    return without_shapes(result)["training"]
