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

__all__ = ["case_ids_for", "dataset_case_ids", "nnunet_case_source", "strip_image_extension", "short_hash"]

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


def nnunet_case_source(images: Sequence[str]) -> str:
    """The path that names an unlabeled case: its first image with nnU-Net's channel suffix removed.

    nnU-Net names the channels of case ``X`` ``X_0000``, ``X_0001``, ... in channel order; when every
    image of the case follows that pattern (one file ``X_0000`` included) the case is ``X``, as for
    its label ``X.nii.gz``. Otherwise the first image names the case unchanged.

    Args:
        images: the case's image files, in channel order.

    Returns:
        A path in the folder of the first image (it need not exist): ``.../X.nii.gz`` or ``images[0]``.
    """
    first = os.fspath(images[0])
    folder, name = os.path.split(first)
    stems = [strip_image_extension(os.path.basename(os.fspath(p))) for p in images]
    suffixes = [f"_{channel:04d}" for channel in range(len(stems))]
    if not all(s.endswith(x) and len(s) > len(x) for s, x in zip(stems, suffixes)):
        return first
    case = stems[0][: -len(suffixes[0])]
    if any(s[: -len(x)] != case for s, x in zip(stems, suffixes)):
        return first
    return os.path.join(folder, case + name[len(stems[0]):])


def dataset_case_ids(
    training: Sequence[tuple[Sequence[str], str | None]],
    test: Sequence[tuple[Sequence[str], str | None]] = (),
) -> list[str]:
    """Case ids of the ``training`` and ``test`` entries of one ``dataset.json``: training ids, then test ids.

    The rule of training and the splits (``custom_nets.data.labeled_dataset``): the training
    entries are named together by ``case_ids_for`` of their label files; the labeled test entries
    together by ``case_ids_for`` of theirs, a test id that equals a training id (ignoring case)
    getting ``__`` plus ``short_hash`` of its label path. Unlabeled entries (images to segment
    only) are named by their nnU-Net image stem (:func:`nnunet_case_source`): after the labeled
    test entries, in the same way.

    Args:
        training: ``(image paths, label path or None)`` per ``training`` entry, absolute paths.
        test: the same per ``test`` entry.

    Returns:
        ``len(training) + len(test)`` ids; entries listed twice in one group get the same id.
    """
    train_ids = case_ids_for([label if label else nnunet_case_source(images) for images, label in training])
    taken = {case.lower() for case in train_ids}
    test_ids: list[str] = [""] * len(test)
    for labeled in (True, False):
        group = [i for i, (_, label) in enumerate(test) if bool(label) == labeled]
        sources = [test[i][1] if labeled else nnunet_case_source(test[i][0]) for i in group]
        for i, case, source in zip(group, case_ids_for(sources), sources):
            test_ids[i] = f"{case}__{short_hash(source)}" if case.lower() in taken else case
        taken |= {test_ids[i].lower() for i in group}
    return train_ids + test_ids
