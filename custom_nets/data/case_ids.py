"""Stable, collision-free names for cached cases.

A cached file is named after its source path relative to the common folder of all sources, with
folder separators replaced by ``__`` and the image extension removed, e.g.
``/data/siteA/sub-01/anat/T1w.nii.gz`` -> ``siteA__sub-01__anat__T1w`` when ``/data`` is the
common root. Names therefore stay unique across nested collections of any size; when two names
still collide (``a/b.nii`` next to ``a/b.nii.gz``, ``a__b.nii`` next to ``a/b.nii``, or names
that differ only in letter case, which clash on case-insensitive file systems) every member of
the clash gets ``__`` plus the first 8 hex digits of the SHA-1 of its absolute path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

__all__ = ["case_ids_for", "strip_image_extension", "short_hash"]

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst")


def strip_image_extension(name: str) -> str:
    """``'T1w.nii.gz'`` -> ``'T1w'``; ``'scan.v2.nrrd'`` -> ``'scan.v2'``; a compression suffix and
    one format suffix are removed."""
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    stem, ext = os.path.splitext(name)
    return stem if ext and stem else name


def short_hash(text: str) -> str:
    """First 8 hex digits of the SHA-1 of ``text`` (deterministic across runs and machines)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def case_ids_for(sources: Sequence[str]) -> list[str]:
    """Case ids for absolute source paths, in the same order.

    Args:
        sources: absolute image paths (one per case; the first file of a multi-modal case).

    Returns:
        One id per source; equal sources give equal ids.
    """
    if not sources:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(s)) for s in sources])
    ids = []
    for source in sources:
        parts = list(os.path.normpath(os.path.relpath(os.path.abspath(source), root)).split(os.sep))
        parts[-1] = strip_image_extension(parts[-1])
        ids.append("__".join(parts))
    distinct_sources = {}
    for case_id, source in zip(ids, sources):
        distinct_sources.setdefault(case_id.lower(), set()).add(os.path.abspath(source))
    clashes = {key for key, owners in distinct_sources.items() if len(owners) > 1}
    return [
        f"{case_id}__{short_hash(os.path.abspath(source))}"
        if case_id.lower() in clashes
        else case_id
        for case_id, source in zip(ids, sources)
    ]
