"""The cache builder: run every case that is not cached yet through ``preprocess_case``, resumably.

One builder for the pre-training cache (``custom_nets.data.preprocess``) and the fine-tuning cache
(``custom_nets.data.segmentation``), which differ only in what a case holds and in the per-case settings:

1. ``plan``: a case is redone when its manifest record is absent, its input files changed (size, modification
   time) or its outputs are gone; a case id still held by another cached source gets a hash suffix, so a new case
   never overwrites another case's files;
2. ``build_cache``: the planned cases go to ``preprocess_case`` in worker processes (``custom_nets.data.parallel``;
   a crashed worker becomes an ``unreadable`` record), every result is appended to the manifest at once
   (``custom_nets.data.manifest``) and progress is logged with rate and time left.

The records of every case, old and new, are returned by identity; the callers turn them into datalists and reports.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from custom_nets.data.case import crash_record, preprocess_case
from custom_nets.data.case_ids import short_hash
from custom_nets.data.manifest import ManifestWriter, entry_identity, has_outputs, input_stamp, manifest_name
from custom_nets.data.parallel import run_tasks
from custom_nets.data.paths import as_files

__all__ = ["available_cores", "build_cache", "first_file", "plan", "worker_count"]

logger = logging.getLogger(__name__)

#: Progress is logged about this many times per run (and at least every 1000 cases).
_PROGRESS_STEPS = 20


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. container or scheduler limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on every platform
        return os.cpu_count() or 1


def worker_count(num_workers, num_tasks: int) -> int:
    """Worker processes for ``num_tasks`` cases: ``num_workers`` (None: the available cores), at most one per case."""
    if num_workers is None:
        num_workers = available_cores()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(
            f"num_workers={num_workers!r} is not an integer >= 0: pass 0 (in-process), a core count, or None"
        )
    return min(num_workers, num_tasks)


def first_file(value) -> str:
    """The first file of an image entry (one path, or a list with one path per modality)."""
    return as_files(value)[0]


class Progress:
    """Logs ``done/total``, counts, rate and remaining time every ``every`` results."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.every = max(1, min(1000, total // _PROGRESS_STEPS))
        self.done = self.ok = 0
        self.start = time.monotonic()

    def update(self, record: dict) -> None:
        self.done += 1
        self.ok += record.get("status") == "ok"
        if self.done % self.every == 0 or self.done == self.total:
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            logger.info(
                "Preprocessed %d/%d files (%d ok, %d excluded), %.1f files/s, about %.0f s left",
                self.done, self.total, self.ok, self.done - self.ok, rate, (self.total - self.done) / rate,
            )


def plan(inputs: list[dict], ids: list[str], records: dict[str, dict], cache: Path, image_key: str) -> list[tuple]:
    """``(inputs, case_id, stamp)`` for every input whose record is absent, stale or lost its files.

    A record is reused when its input files still have the recorded size and modification time
    and its outputs exist. A case id still held by another cached source (e.g. after the dataset
    root moved) gets the hash suffix, so a new case never overwrites another case's files.
    """
    todo = []
    for item, case_id in zip(inputs, ids):
        stamp = input_stamp(item)
        record = records.get(entry_identity(item))
        if not (has_outputs(record, cache) and record.get("stamp") == stamp):
            todo.append((item, case_id, stamp))
    redo = {entry_identity(item) for item, _, _ in todo}
    taken = {
        r["case_id"].lower() for identity, r in records.items()
        if identity not in redo and r.get("status") == "ok" and has_outputs(r, cache)
    }
    return [
        (item, f"{cid}__{short_hash(first_file(item[image_key]))}" if cid.lower() in taken else cid, stamp)
        for item, cid, stamp in todo
    ]


def build_cache(
    inputs: list[dict],
    case_ids: Sequence[str],
    cache: Path,
    keys: Sequence[str],
    settings: dict,
    records: dict[str, dict],
    num_workers=None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, dict]:
    """Preprocess every input of ``inputs`` that is not cached yet; update and return ``records`` in place.

    Args:
        inputs: ``{key: file or [files]}`` per case (the image key first in ``keys``).
        case_ids: the case id of each input (``custom_nets.data.case_ids``).
        cache: cache folder (absolute).
        keys: ``[image key, "label" and/or mask keys]``.
        settings: what every case's task gets besides its inputs (``target_spacing``, ``thresholds``; labeled data:
            ``classes``, ``channels``, ``normalisation``), see ``preprocess_case``.
        records: the cache's manifest records by input identity (``read_manifests``).
        num_workers: worker processes (None: the available cores; 0: in this process).
        rank, world_size: this process's manifest file (``manifest.rank<r>.jsonl`` when ``world_size > 1``).
    """
    todo = plan(inputs, list(case_ids), records, cache, keys[0])
    logger.info(
        "Preprocessing %d of %d cases into %s (%d already cached)",
        len(todo), len(inputs), cache, len(inputs) - len(todo),
    )
    tasks = [
        {"inputs": item, "keys": list(keys), "case_id": case_id, "cache_dir": str(cache), "stamp": stamp, **settings}
        for item, case_id, stamp in todo
    ]
    workers = worker_count(num_workers, len(tasks))  # checks num_workers even when everything is cached
    if not tasks:
        return records
    progress = Progress(len(tasks))
    with ManifestWriter(cache / manifest_name(rank, world_size)) as manifest:

        def on_result(task: dict, record: dict) -> None:
            manifest.append(record)
            records[entry_identity(record["inputs"])] = record
            progress.update(record)

        run_tasks(tasks, preprocess_case, workers, on_result, crash_record)
    return records
