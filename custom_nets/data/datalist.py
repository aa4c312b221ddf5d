"""The one datalist reader: any dataset source into entries with absolute paths.

An *entry* is a dict with ``image`` (one path, or a list of paths with one file per modality, stacked as
channels in list order), optionally ``label`` (the segmentation of a labeled case) and the masks
``anonymization_mask`` / ``anatomy_mask``; every key of ``PATH_KEYS`` is made absolute. Extra keys are
kept unchanged (``modality`` and ``image_quality_score`` feed the selection filters of
``custom_nets.data.selection``). ``entry_case_ids`` names entries by the project's one case-id rule
(``custom_nets.data.case_ids``). Accepted sources (``load_datalist``):

* an MSD-style JSON dict ``{"training": [entry, ...], ...}`` (the list is picked with ``key``),
* a plain JSON list of entries; a bare string entry ``"x.nii.gz"`` means ``{"image": "x.nii.gz"}``,
* the collection layouts of ``custom_nets.data.layouts``: OpenMind (``openneuro_metadata.csv`` or
  its folder), an nnssl ``pretrain_data.json`` (or its folder), a BIDS dataset root,
* a folder: if it holds a ``datalist.json`` that file is used, otherwise every image file below it
  (recursively, sorted, hidden files and folders skipped) is one entry. Image files are those the
  preprocessing reads (``IMAGE_SUFFIXES``: NIfTI, NIfTI/Analyze pairs, MGH/MGZ, MetaImage, NRRD);
  the other files are counted by extension in one log line (DICOM with a hint to convert it).

Relative paths resolve against the folder of the JSON file (or ``base_dir``); ``~`` and a leading
``$VARIABLE`` are expanded. Every error names the source, what is wrong and the fix, in the wording of
``custom_nets.data.dataset_source``. The labeled-dataset semantics (class table, modality names, the MSD
``test`` list, per-case problems) are a layer on top: ``custom_nets.data.labeled_dataset``.

Files that entries point to are *not* required to exist here: the quality filter reports missing
files as excluded, so one stale path does not block a run over a large collection.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from custom_nets.data.case_ids import dataset_case_ids
from custom_nets.data.dataset_source import (
    ENTRY_EXAMPLE,
    entry_list,
    entry_where,
    read_json,
    resolve_path,
    source_path,
)
from custom_nets.data.layouts import detect_layout, read_bids, read_nnssl, read_openmind
from custom_nets.data.paths import as_files

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PATH_KEYS",
    "entry_case_ids",
    "entry_images",
    "load_datalist",
    "read_entries",
    "read_entry",
]

logger = logging.getLogger(__name__)

#: File name endings recognised as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: File name endings a folder scan takes as images: what the preprocessing reads (nibabel: NIfTI,
#: NIfTI/Analyze pairs by their .hdr, MGH/MGZ; ITK: MetaImage .mha/.mhd, NRRD .nrrd/.nhdr).
IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, ".hdr", ".mgz", ".mgh", ".mha", ".mhd", ".nrrd", ".nhdr")

#: Data files that belong to a header file (.hdr/.mhd/.nhdr) and are not images of their own.
_COMPANION_SUFFIXES = (".img", ".img.gz", ".raw", ".raw.gz", ".zraw")

#: Entry keys that hold file paths (resolved to absolute paths); only ``image`` may list several files.
PATH_KEYS = ("image", "label", "anonymization_mask", "anatomy_mask")

#: What ``load_datalist`` reads, for the fixes of its messages.
_ACCEPTED = "a folder of images (.nii/.nii.gz, .mgz, .nrrd, .mha, ...) or a datalist JSON file"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _extension(name: str) -> str:
    lower = name.lower()
    ext = os.path.splitext(lower[:-3] if lower.endswith(".gz") else lower)[1]
    return (ext or "(none)") + (".gz" if lower.endswith(".gz") else "")


def _log_skipped(folder: Path, skipped: Counter) -> None:
    """One line naming how many files of which extension a folder scan left out, and why."""
    if not skipped:
        return
    listed = ", ".join(f"{ext}: {n}" for ext, n in skipped.most_common())
    hint = "; DICOM series must be converted first (e.g. dcm2niix -z y)" if ".dcm" in skipped else ""
    logger.warning(
        "Skipped %d files in %s that are not images the preprocessing reads (%s)%s; images are %s",
        sum(skipped.values()), folder, listed, hint, ", ".join(IMAGE_SUFFIXES),
    )


def _scan_folder(folder: Path) -> list[dict]:
    """All image files below ``folder`` as entries, in sorted relative-path order."""
    found, skipped, unlisted = [], Counter(), []
    for root, dirs, files in os.walk(folder, onerror=unlisted.append):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            if _is_image(name):
                found.append(Path(root, name))
            elif not name.lower().endswith(_COMPANION_SUFFIXES):
                skipped[_extension(name)] += 1
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    _log_skipped(folder, skipped)
    if unlisted:  # os.walk drops folders it cannot list; say which
        first = unlisted[0].filename
        logger.warning(
            "Could not list %d folder(s) below %s, their images are left out (first: %s: %s); fix: make them "
            "readable (chmod a+rx '%s') or run as a user who can read them",
            len(unlisted), folder, first, unlisted[0].strerror, first,
        )
    if not found:
        raise ValueError(
            f"dataset '{folder}' contains no image files ({', '.join(IMAGE_SUFFIXES)}): pass a folder of images "
            "(searched recursively), a datalist JSON file, OpenMind's openneuro_metadata.csv, an nnssl "
            "pretrain_data.json or a BIDS dataset"
        )
    counts = Counter(_extension(p.name) for p in found)
    listed = ", ".join(f"{e}: {n}" for e, n in sorted(counts.items()))
    logger.info("Found %d image files in %s (%s)", len(found), folder, listed)
    return [{"image": str(p)} for p in found]


def read_entry(item, base: Path, where: str) -> dict:
    """One entry with absolute paths: a bare path string means ``{"image": path}``; extra keys are kept.

    Args:
        item: a path string or a dict with ``image`` (one path, or a list with one file per modality) and
            optionally ``label`` and the masks of ``PATH_KEYS``.
        base: the folder relative paths are resolved against.
        where: the entry, for messages (``dataset_source.entry_where``).

    Raises:
        ValueError: ``item`` is neither a path nor a dict, has no ``image``, or holds a path that is not one.
    """
    if isinstance(item, (str, os.PathLike)):
        item = {"image": os.fspath(item)}
    if not isinstance(item, dict):
        raise ValueError(
            f"{where} is a {type(item).__name__} ({item!r}): use a path string or an entry like {ENTRY_EXAMPLE}"
        )
    if "image" not in item:
        raise ValueError(
            f"{where} has no 'image' key (keys: {sorted(item)}): add \"image\": <image file, or a list with one file "
            "per modality>"
        )
    entry = dict(item)
    for key in PATH_KEYS:
        if key == "image" or entry.get(key) is not None:
            entry[key] = resolve_path(entry[key], base, where, key, many=key == "image")
    return entry


def read_entries(data, key: str, path: Path, base: Path) -> list[dict]:
    """The entries of parsed JSON (a list, or a dict with a ``key`` list) with absolute paths (``read_entry``).

    Raises:
        ValueError: no ``key`` list (``dataset_source.entry_list``), an empty list, or a malformed entry.
    """
    raw = entry_list(data, key, path)
    if not raw:
        raise ValueError(f"dataset '{path}' has an empty '{key}' list: add entries like {ENTRY_EXAMPLE}")
    listed = key if isinstance(data, dict) else None
    return [read_entry(item, base, entry_where(path, listed, index)) for index, item in enumerate(raw)]


def entry_images(entry: dict) -> list[str]:
    """The image files of an entry as a list (one per modality)."""
    return as_files(entry["image"])


def entry_case_ids(entries, test_entries=()) -> list[str]:
    """The ``case`` ids of ``entries`` then ``test_entries`` by the project's one rule
    (``custom_nets.data.case_ids.dataset_case_ids``: named by the label file, else by the nnU-Net image stem)."""
    return dataset_case_ids(
        [(entry_images(e), e.get("label")) for e in entries], [(entry_images(e), e.get("label")) for e in test_entries]
    )


def _count_missing(entries: list[dict]) -> int:
    return sum(not all(os.path.isfile(p) for p in entry_images(entry)) for entry in entries)


def _read_layout(path: Path, key: str, base_dir) -> list[dict]:
    """Entries of ``path`` by the reader its layout needs (see ``layouts.detect_layout``)."""
    layout, found = detect_layout(path)
    if found != path:
        logger.info("Using %s found in the dataset folder (%s layout)", found, layout)
    if layout == "folder":
        return _scan_folder(found)
    if layout == "openmind":
        return read_openmind(found)
    if layout == "bids":
        return read_bids(found)
    data = read_json(found)
    if layout == "nnssl" or (isinstance(data, dict) and isinstance(data.get("datasets"), dict) and key not in data):
        return read_nnssl(found, data)
    base = Path(os.path.expanduser(os.fspath(base_dir))).absolute() if base_dir is not None else found.parent
    return read_entries(data, key, found, base)


def load_datalist(source, key: str = "training", base_dir=None) -> list[dict]:
    """Load the entries of a datalist JSON file, a collection layout or a folder of images.

    Args:
        source: a datalist JSON file, OpenMind's ``openneuro_metadata.csv``, an nnssl
            ``pretrain_data.json``, or a folder (see the module docstring).
        key: name of the entry list inside an MSD-style JSON dict.
        base_dir: folder that relative paths of a datalist JSON are resolved against; defaults to
            the folder of the JSON file.

    Returns:
        Entries with absolute paths in ``image`` (and ``label`` / ``anonymization_mask`` /
        ``anatomy_mask`` when present), in file order (JSON, csv) or sorted relative-path order
        (folder scan, BIDS).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        PermissionError: this user may not read the JSON or csv.
        ValueError: the JSON or csv is malformed, ``key`` is missing, the list or folder is empty,
            or an entry has no ``image``.
    """
    path = source_path(source, _ACCEPTED)
    entries = _read_layout(path, key, base_dir)
    missing = _count_missing(entries)
    if missing:
        logger.warning(
            "%d of %d entries in %s point to image files that do not exist; they will be excluded",
            missing, len(entries), path,
        )
    logger.info("Loaded %d entries from %s", len(entries), path)
    return entries
