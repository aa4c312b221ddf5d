"""Turn a datalist JSON file or a folder of NIfTI files into a list of entries with absolute paths.

An *entry* is a dict with an ``image`` path (a string, or a list of strings for a multi-modal
case whose files are stacked as channels) and optionally an ``anonymization_mask`` path. Extra
keys are kept unchanged. Accepted sources:

* an MSD-style JSON dict ``{"training": [entry, ...], ...}`` (the list is picked with ``key``),
* a plain JSON list of entries; a bare string entry ``"x.nii.gz"`` means ``{"image": "x.nii.gz"}``,
* a folder: if it holds a ``datalist.json`` that file is used, otherwise every ``.nii`` /
  ``.nii.gz`` file below it (recursively, sorted, hidden files and folders skipped) is one entry.

Files that entries point to are *not* required to exist here: the quality filter reports missing
files as excluded, so one stale path does not block a run over a large collection.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

__all__ = ["load_datalist", "NIFTI_SUFFIXES", "PATH_KEYS"]

logger = logging.getLogger(__name__)

#: File name endings recognised as NIfTI when a folder is scanned.
NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: Entry keys that hold file paths (resolved to absolute paths).
PATH_KEYS = ("image", "anonymization_mask")

_FOLDER_DATALIST = "datalist.json"


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def _scan_folder(folder: Path) -> list[dict]:
    """All NIfTI files below ``folder`` as entries, in sorted relative-path order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if _is_nifti(name) and not name.startswith("."):
                found.append(Path(root, name))
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    if not found:
        raise ValueError(
            f"folder '{folder}' contains no .nii or .nii.gz files: pass a folder of NIfTI images "
            "(searched recursively) or a datalist JSON file"
        )
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


def load_datalist(source, key: str = "training", base_dir=None) -> list[dict]:
    """Load the entries of a datalist JSON file or a folder of NIfTI files.

    Args:
        source: path of a datalist JSON file, or of a folder (see the module docstring).
        key: name of the entry list inside an MSD-style JSON dict.
        base_dir: folder that relative paths are resolved against; defaults to the folder of
            the JSON file.

    Returns:
        Entries with absolute paths in ``image`` (and ``anonymization_mask`` when present),
        in file order (JSON) or sorted relative-path order (folder scan).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the JSON is unreadable, ``key`` is missing, the list or folder is empty, or
            an entry has no ``image``.
    """
    if source is None or not os.fspath(source):
        raise ValueError("datalist source is empty: pass a datalist JSON file or a folder of .nii/.nii.gz files")
    path = Path(os.path.normpath(Path(os.path.expanduser(os.fspath(source))).absolute()))
    if not path.exists():
        raise FileNotFoundError(
            f"dataset '{path}' does not exist: pass a folder of .nii/.nii.gz files or a datalist JSON file"
        )
    if path.is_dir() and not (path / _FOLDER_DATALIST).is_file():
        entries = _scan_folder(path)
        logger.info("Found %d NIfTI files in %s", len(entries), path)
        return entries
    if path.is_dir():
        path = path / _FOLDER_DATALIST
        logger.info("Using %s found in the dataset folder", path)
    base = Path(os.path.expanduser(os.fspath(base_dir))).absolute() if base_dir is not None else path.parent
    entries = _normalise_entries(_select_list(_read_json(path), key, path), base, path, key)
    missing = _count_missing(entries)
    if missing:
        logger.warning(
            "%d of %d entries in %s point to image files that do not exist; they will be excluded",
            missing, len(entries), path,
        )
    logger.info("Loaded %d entries from %s", len(entries), path)
    return entries
