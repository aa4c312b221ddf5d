"""Turn a datalist JSON file, a collection layout or a folder of images into entries with absolute paths.

An *entry* is a dict with an ``image`` path (a string, or a list of strings for a multi-modal
case whose files are stacked as channels) and optionally an ``anonymization_mask`` path. Extra
keys are kept unchanged (``modality`` and ``image_quality_score`` feed the selection filters of
``custom_nets.data.selection``). Accepted sources:

* an MSD-style JSON dict ``{"training": [entry, ...], ...}`` (the list is picked with ``key``),
* a plain JSON list of entries; a bare string entry ``"x.nii.gz"`` means ``{"image": "x.nii.gz"}``,
* the collection layouts of ``custom_nets.data.layouts``: OpenMind (``openneuro_metadata.csv`` or
  its folder), an nnssl ``pretrain_data.json`` (or its folder), a BIDS dataset root,
* a folder: if it holds a ``datalist.json`` that file is used, otherwise every image file below it
  (recursively, sorted, hidden files and folders skipped) is one entry. Image files are those the
  preprocessing reads (``IMAGE_SUFFIXES``: NIfTI, NIfTI/Analyze pairs, MGH/MGZ, MetaImage, NRRD);
  the other files are counted by extension in one log line (DICOM with a hint to convert it).

Files that entries point to are *not* required to exist here: the quality filter reports missing
files as excluded, so one stale path does not block a run over a large collection.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from custom_nets.data.layouts import detect_layout, read_bids, read_nnssl, read_openmind

__all__ = ["load_datalist", "IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "PATH_KEYS"]

logger = logging.getLogger(__name__)

#: File name endings recognised as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: File name endings a folder scan takes as images: what the preprocessing reads (nibabel: NIfTI,
#: NIfTI/Analyze pairs by their .hdr, MGH/MGZ; ITK: MetaImage .mha/.mhd, NRRD .nrrd/.nhdr).
IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, ".hdr", ".mgz", ".mgh", ".mha", ".mhd", ".nrrd", ".nhdr")

#: Data files that belong to a header file (.hdr/.mhd/.nhdr) and are not images of their own.
_COMPANION_SUFFIXES = (".img", ".img.gz", ".raw", ".raw.gz", ".zraw")

#: Entry keys that hold file paths (resolved to absolute paths).
PATH_KEYS = ("image", "anonymization_mask", "anatomy_mask")


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
            f"folder '{folder}' contains no image files ({', '.join(IMAGE_SUFFIXES)}): pass a folder of images "
            "(searched recursively), a datalist JSON file, OpenMind's openneuro_metadata.csv, an nnssl "
            "pretrain_data.json or a BIDS dataset"
        )
    counts = Counter(_extension(p.name) for p in found)
    logger.info("Found %d image files in %s (%s)", len(found), folder, ", ".join(f"{e}: {n}" for e, n in sorted(counts.items())))
    return [{"image": str(p)} for p in found]


def _read_json(path: Path):
    """Parse a JSON file, turning syntax errors into a message with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read datalist '{path}': {err}; check the file permissions") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"datalist '{path}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): "
            "fix the file, e.g. check for a trailing comma or a missing quote"
        ) from err


def _select_list(data, key: str, path: Path) -> list:
    """Pick the entry list from a parsed datalist (a dict with ``key`` or a plain list)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise ValueError(
            f"datalist '{path}' holds a JSON {type(data).__name__}: it must be a list of entries "
            f"or a dict with a '{key}' list"
        )
    if key not in data:
        raise ValueError(
            f"datalist '{path}' has no key '{key}' (available keys: {sorted(data)}): "
            "pass key=<one of them>, or add the list of entries under that key"
        )
    entries = data[key]
    if not isinstance(entries, list):
        raise ValueError(f"datalist '{path}' key '{key}' holds a {type(entries).__name__}, not a list of entries")
    return entries


def _resolve(value, base: Path, where: str):
    """Make a path (or list of paths) absolute against ``base``."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{where} has an empty list of image files: give at least one path")
        return [_resolve(v, base, where) for v in value]
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"{where} has a path that is not a non-empty string: {value!r}")
    path = Path(os.path.expanduser(os.fspath(value)))
    return os.path.normpath(path if path.is_absolute() else base / path)


def _normalise_entries(raw: list, base: Path, source: Path, key: str) -> list[dict]:
    """Validate entries, expand bare strings and resolve path keys against ``base``."""
    if not raw:
        raise ValueError(
            f"datalist '{source}' has an empty '{key}' list: add entries like "
            '{"image": "imagesTr/case_000.nii.gz"}'
        )
    entries = []
    for index, item in enumerate(raw):
        where = f"entry {index} of datalist '{source}'"
        if isinstance(item, (str, os.PathLike)):
            item = {"image": os.fspath(item)}
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a {type(item).__name__}: use a path string or a dict with an 'image' key")
        if "image" not in item:
            raise ValueError(f"{where} has no 'image' key (keys: {sorted(item)}): add 'image': <path of the image>")
        entry = dict(item)
        for path_key in PATH_KEYS:
            if entry.get(path_key) is not None:
                entry[path_key] = _resolve(entry[path_key], base, where)
        entries.append(entry)
    return entries


def _count_missing(entries: list[dict]) -> int:
    count = 0
    for entry in entries:
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        if not all(os.path.isfile(p) for p in images):
            count += 1
    return count


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
    data = _read_json(found)
    if layout == "nnssl" or (isinstance(data, dict) and isinstance(data.get("datasets"), dict) and key not in data):
        return read_nnssl(found, data)
    base = Path(os.path.expanduser(os.fspath(base_dir))).absolute() if base_dir is not None else found.parent
    return _normalise_entries(_select_list(data, key, found), base, found, key)


def load_datalist(source, key: str = "training", base_dir=None) -> list[dict]:
    """Load the entries of a datalist JSON file, a collection layout or a folder of images.

    Args:
        source: a datalist JSON file, OpenMind's ``openneuro_metadata.csv``, an nnssl
            ``pretrain_data.json``, or a folder (see the module docstring).
        key: name of the entry list inside an MSD-style JSON dict.
        base_dir: folder that relative paths of a datalist JSON are resolved against; defaults to
            the folder of the JSON file.

    Returns:
        Entries with absolute paths in ``image`` (and ``anonymization_mask`` / ``anatomy_mask``
        when present), in file order (JSON, csv) or sorted relative-path order (folder scan, BIDS).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the JSON or csv is unreadable, ``key`` is missing, the list or folder is empty,
            or an entry has no ``image``.
    """
    if source is None or not os.fspath(source):
        raise ValueError("datalist source is empty: pass a datalist JSON file or a folder of images")
    path = Path(os.path.normpath(Path(os.path.expanduser(os.fspath(source))).absolute()))
    if not path.exists():
        raise FileNotFoundError(
            f"dataset '{path}' does not exist: pass a folder of images (.nii/.nii.gz, .mgz, .nrrd, .mha, ...) or a "
            "datalist JSON file"
        )
    entries = _read_layout(path, key, base_dir)
    missing = _count_missing(entries)
    if missing:
        logger.warning(
            "%d of %d entries in %s point to image files that do not exist; they will be excluded",
            missing, len(entries), path,
        )
    logger.info("Loaded %d entries from %s", len(entries), path)
    return entries
