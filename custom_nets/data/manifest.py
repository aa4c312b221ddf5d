"""Bookkeeping files of a preprocessing cache: the resumable manifest and the settings guard.

``manifest.jsonl`` (or ``manifest.rank<r>.jsonl`` for rank ``r`` of a multi-process run) gets
one JSON line per finished source, appended and flushed as soon as the result arrives, so an
interrupted run loses at most the cases that were in flight. A record looks like::

    {"source": "/data/a.nii.gz", "inputs": {"image": "/data/a.nii.gz"}, "case_id": "a",
     "status": "ok", "reason": null, "outputs": {"image": "images/a.nii.gz"},
     "shape": [140, 172, 140], "stamp": [[52123456, 1718000000000000000]], "time": 1718000000.0}

Output paths are relative to the cache folder, so the cache can be moved. ``stamp`` holds the
size and modification time of every input file when it was read (``null`` for a missing file),
so a re-downloaded or newly appeared file is processed again. When the same inputs
appear more than once (a case redone after its output was deleted, or records from runs with a
different number of ranks) the record with the newest ``time`` wins. A torn last line from a
crash is skipped.

``settings.json`` stores what determines the cached content (target spacing, keys, quality
thresholds); reusing a cache folder with different settings is refused, because mixing spacings
in one cache would silently corrupt pre-training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.paths import as_files

__all__ = [
    "MANIFEST_PATTERN",
    "ManifestWriter",
    "check_settings",
    "entry_identity",
    "has_outputs",
    "input_stamp",
    "manifest_name",
    "read_manifests",
]

logger = logging.getLogger(__name__)

#: Glob that matches the manifest of a single-process run and every rank's shard.
MANIFEST_PATTERN = "manifest*.jsonl"

_SETTINGS_FILE = "settings.json"


def manifest_name(rank: int = 0, world_size: int = 1) -> str:
    """File name of the manifest written by ``rank`` of ``world_size`` processes."""
    return "manifest.jsonl" if world_size == 1 else f"manifest.rank{rank}.jsonl"


def entry_identity(inputs: dict) -> str:
    """Canonical text of a case's input paths; records are matched to entries with it."""
    return json.dumps(inputs, sort_keys=True)


def input_stamp(inputs: dict) -> list:
    """``[size_bytes, mtime_ns]`` of every input file in key order (``None`` when missing)."""
    stamps = []
    for key in sorted(inputs):
        value = inputs[key]
        for path in as_files(value):
            try:
                info = os.stat(path)
                stamps.append([int(info.st_size), int(info.st_mtime_ns)])
            except OSError:
                stamps.append(None)
    return stamps


def has_outputs(record: dict | None, cache_dir) -> bool:
    """True for an exclusion, or for an ``ok`` record whose output files all still exist."""
    if record is None:
        return False
    if record.get("status") == "excluded":
        return True
    outputs = record.get("outputs") or {}
    if record.get("status") != "ok" or not outputs:
        return False
    return all((Path(cache_dir) / p).is_file() for p in outputs.values())


def read_manifests(cache_dir) -> dict[str, dict]:
    """Newest record per input identity over all manifest files in ``cache_dir``."""
    newest: dict[str, dict] = {}
    torn = 0
    for path in sorted(Path(cache_dir).glob(MANIFEST_PATTERN)):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    identity = entry_identity(record["inputs"])
                    stamp = float(record.get("time", 0.0))
                except (ValueError, KeyError, TypeError):
                    torn += 1
                    continue
                if identity not in newest or stamp >= float(newest[identity].get("time", 0.0)):
                    newest[identity] = record
    if torn:
        logger.warning("Skipped %d unreadable manifest lines in %s (left by an interrupted run)", torn, cache_dir)
    return newest


class ManifestWriter:
    """Append-only JSON-lines writer that flushes after every record.

    Use as a context manager in the main process only (workers return records instead of
    writing), so lines from concurrent workers can never interleave.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        self._handle = None

    def __enter__(self) -> "ManifestWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                needs_newline = existing.read(1) != b"\n"
        self._handle = open(self.path, "a", encoding="utf-8")
        if needs_newline:  # terminate a line torn by a crash so the next record stays parseable
            self._handle.write("\n")
        return self

    def append(self, record: dict) -> None:
        """Write one record as a single line and flush it to the operating system."""
        if self._handle is None:
            raise ValueError(f"manifest '{self.path}' is not open: use ManifestWriter as a context manager")
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def check_settings(cache_dir, settings: dict) -> None:
    """Record ``settings`` in a new cache, or refuse a cache made with different settings.

    Raises:
        ValueError: ``cache_dir/settings.json`` exists and differs from ``settings``; the message
            names the differing fields and tells the user to pick a new cache folder or delete
            the old one.
    """
    path = Path(cache_dir) / _SETTINGS_FILE
    wanted = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from JSON
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(
                f"settings file '{path}' is not valid JSON ({err}): delete the cache folder '{cache_dir}' "
                "(or only that file, if you are sure the cache matches) and run again"
            ) from err
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        if changed:
            details = "; ".join(f"{k}: cached {stored.get(k)!r}, requested {wanted.get(k)!r}" for k in changed)
            raise ValueError(
                f"cache folder '{cache_dir}' was built with different preprocessing settings ({details}): "
                "choose a new cache_dir for the new settings, or delete the old cache folder to rebuild it"
            )
        return
    atomic_write_text(path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")
