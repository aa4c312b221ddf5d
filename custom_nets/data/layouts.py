"""Readers for the pre-training collection layouts that ``--dataset_dir`` recognises besides plain folders.

Each reader turns one layout into datalist entries: ``image`` (absolute path), ``anonymization_mask``
and ``anatomy_mask`` when the layout pairs them, and the metadata the selection filters read
(``modality``, ``image_quality_score``, ``dataset_id``). ``detect_layout`` decides which reader a path
needs; ``custom_nets.data.datalist.load_datalist`` calls it. Files, paths and errors go through
``custom_nets.data.dataset_source``, so a problem reads the same in every layout.

* **OpenMind** (Wald et al., the 114k-volume OpenNeuro collection): ``openneuro_metadata.csv`` next to
  an ``OpenMind/`` folder; one row per image with ``image_path``, ``anon_mask_path`` and
  ``anat_mask_path`` relative to ``OpenMind/``, ``modality`` (``T1w``, ``T2w``, ``FLAIR``, ``MD``,
  ``FA``, ...), ``image_quality_score`` (1 best ... 5 worst, one score per dataset, modality and
  DWI derivative) and ``dataset_id``.
* **nnssl** ``pretrain_data.json``: ``{"collection_name", "collection_index", "datasets": {id:
  {"dataset_info", "subjects": {id: {"sessions": {id: {"images": [{"name", "image_path", "modality",
  "image_info", "associated_masks": {"anonymization_mask", "anatomy_mask"}}]}}}}}}}``. Paths are
  absolute, or start with ``$<environment variable>`` (nnssl writes ``$nnssl_raw/...``), or are
  relative to the JSON file. An image's quality score is ``image_info["image_quality_score"]`` or,
  as nnssl's OpenMind conversion stores it, the entry of ``dataset_info["image_quality_score"]``
  with the image's ``modality`` and ``image_info["derived_from"]``.
* **BIDS**: ``sub-<label>/[ses-<label>/]anat/*.nii[.gz]`` below a root with
  ``dataset_description.json`` and/or ``sub-*`` folders. The modality is the BIDS suffix (the last
  ``_`` part of the name: ``T1w``, ``T2w``, ``FLAIR``, ...). BIDS has no anonymisation-mask
  convention with this project's meaning, so no mask is paired; ``*mask`` files (e.g.
  ``_defacemask``) are not images and are left out, as is everything outside ``anat/``
  (functional and diffusion series are 4D) and ``derivatives/``/``sourcedata/``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from pathlib import Path

from custom_nets.data.dataset_source import read_json, read_text, resolve_path

__all__ = [
    "BIDS_DESCRIPTION",
    "NNSSL_FILE",
    "OPENMIND_CSV",
    "detect_layout",
    "is_bids_root",
    "read_bids",
    "read_nnssl",
    "read_openmind",
]

logger = logging.getLogger(__name__)

#: OpenMind's metadata table, next to its ``OpenMind/`` image folder.
OPENMIND_CSV = "openneuro_metadata.csv"
#: Sub-folder of an OpenMind download that the csv's paths are relative to.
OPENMIND_FOLDER = "OpenMind"
#: nnssl's description of a pre-training collection.
NNSSL_FILE = "pretrain_data.json"
#: File that marks the root of a BIDS dataset.
BIDS_DESCRIPTION = "dataset_description.json"
#: A folder's own datalist, which takes precedence over every layout.
FOLDER_DATALIST = "datalist.json"

_NIFTI = (".nii", ".nii.gz")


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null"))


def _score(value, where: str) -> float | None:
    """An image quality score as a float, ``None`` when absent; a non-number raises."""
    if _blank(value):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where} has image_quality_score {value!r}, which is not a number: give a number from 1 (best) to 5 "
            "(worst, OpenMind's scale) or leave it empty"
        ) from err
    return None if math.isnan(score) else score


def _entry(image: str, anonymization_mask=None, anatomy_mask=None, **meta) -> dict:
    entry = {"image": image}
    if anonymization_mask:
        entry["anonymization_mask"] = anonymization_mask
    if anatomy_mask:
        entry["anatomy_mask"] = anatomy_mask
    entry.update({k: v for k, v in meta.items() if v is not None})
    return entry


# ---------------- OpenMind ----------------


def read_openmind(csv_path) -> list[dict]:
    """Entries of OpenMind's ``openneuro_metadata.csv`` with their anonymisation and anatomy masks.

    Args:
        csv_path: the csv; its paths are resolved against the ``OpenMind/`` folder beside it (or
            the csv's own folder when there is none).

    Returns:
        ``{"image", "anonymization_mask"?, "anatomy_mask"?, "modality", "image_quality_score"?,
        "dataset_id"}`` per row, in file order.

    Raises:
        PermissionError: this user may not read the csv.
        ValueError: the csv has no ``image_path`` column, or a score is not a number.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent / OPENMIND_FOLDER
    root = root if root.is_dir() else csv_path.parent
    rows = list(csv.DictReader(io.StringIO(read_text(csv_path), newline="")))
    columns = set(rows[0]) if rows else set()
    if "image_path" not in columns:
        raise ValueError(
            f"dataset '{csv_path}' has no image_path column (columns: {sorted(columns)}): pass OpenMind's "
            f"{OPENMIND_CSV}, or a datalist JSON for other collections"
        )

    entries = []
    for line, row in enumerate(rows, start=2):
        if _blank(row.get("image_path")):
            continue
        where = f"line {line} of dataset '{csv_path}'"

        def resolve(column, key):
            return None if _blank(row.get(column)) else resolve_path(row[column].strip(), root, where, key)

        relative = row["image_path"].strip()
        entries.append(_entry(
            resolve("image_path", "image"),
            anonymization_mask=resolve("anon_mask_path", "anonymization_mask"),
            anatomy_mask=resolve("anat_mask_path", "anatomy_mask"),
            modality=None if _blank(row.get("modality")) else row["modality"].strip(),
            image_quality_score=_score(row.get("image_quality_score"), where),
            dataset_id=row["dataset_id"].strip() if not _blank(row.get("dataset_id")) else Path(relative).parts[0],
        ))
    if not entries:
        raise ValueError(f"dataset '{csv_path}' lists no images (every row's image_path is empty): fill image_path")
    masked = sum("anonymization_mask" in e for e in entries)
    logger.info("OpenMind table %s: %d images, %d with an anonymization mask", csv_path, len(entries), masked)
    return entries


# ---------------- nnssl pretrain_data.json ----------------


def _dataset_scores(dataset: dict) -> dict[tuple, float | None]:
    """``(modality, derived_from) -> score`` from nnssl's ``dataset_info["image_quality_score"]`` list."""
    info = dataset.get("dataset_info") or {}
    table = {}
    for item in info.get("image_quality_score") or []:
        if isinstance(item, dict):
            table[(item.get("modality"), item.get("derived_from"))] = item.get("image_quality_score")
    return table


def read_nnssl(json_path, data: dict | None = None) -> list[dict]:
    """Entries of an nnssl ``pretrain_data.json`` (a collection of datasets, subjects, sessions, images).

    Args:
        json_path: the file; relative paths resolve against its folder.
        data: its parsed content, when already read.

    Returns:
        ``{"image", "anonymization_mask"?, "anatomy_mask"?, "modality", "image_quality_score"?,
        "dataset_id"}`` per image, in file order.

    Raises:
        ValueError: the file is not an nnssl collection, or a ``$variable`` path names an unset
            environment variable.
    """
    json_path = Path(json_path)
    if data is None:
        data = read_json(json_path)
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, dict):
        raise ValueError(
            f"dataset '{json_path}' is not an nnssl pretrain_data.json: it needs a 'datasets' dict of "
            "{'subjects': {'sessions': {'images': [...]}}}"
        )
    entries = []
    for dataset_key, dataset in datasets.items():
        scores = _dataset_scores(dataset)
        dataset_id = str(dataset.get("dataset_index", dataset_key))
        for subject_id, subject in (dataset.get("subjects") or {}).items():
            for session_id, session in (subject.get("sessions") or {}).items():
                for index, image in enumerate(session.get("images") or []):
                    where = f"entry {dataset_id}/{subject_id}/{session_id}/images/{index} of dataset '{json_path}'"
                    if not isinstance(image, dict) or _blank(image.get("image_path")):
                        raise ValueError(f"{where} has no image_path: give every image one")
                    info = image.get("image_info") or {}
                    masks = image.get("associated_masks") or {}
                    modality = image.get("modality")
                    score = info.get("image_quality_score")
                    if score is None:
                        score = scores.get((modality, info.get("derived_from")))
                    entries.append(_entry(
                        resolve_path(image["image_path"], json_path.parent, where),
                        anonymization_mask=None if _blank(masks.get("anonymization_mask")) else resolve_path(
                            masks["anonymization_mask"], json_path.parent, where, "anonymization_mask"),
                        anatomy_mask=None if _blank(masks.get("anatomy_mask")) else resolve_path(
                            masks["anatomy_mask"], json_path.parent, where, "anatomy_mask"),
                        modality=modality,
                        image_quality_score=_score(score, where),
                        dataset_id=dataset_id,
                    ))
    if not entries:
        raise ValueError(f"dataset '{json_path}' lists no images: add datasets -> subjects -> sessions -> images")
    logger.info("nnssl collection %s: %d images", json_path, len(entries))
    return entries


# ---------------- BIDS ----------------


def _bids_suffix(name: str) -> str:
    stem = name[: -len(".gz")] if name.lower().endswith(".gz") else name
    stem = os.path.splitext(stem)[0]
    return stem.rsplit("_", 1)[-1]


def is_bids_root(folder) -> bool:
    """True for a folder with ``dataset_description.json``, or with ``sub-*`` folders that hold an
    ``anat`` folder (directly or in a ``ses-*`` folder)."""
    folder = Path(folder)
    if (folder / BIDS_DESCRIPTION).is_file():
        return True
    for subject in folder.glob("sub-*"):
        if (subject / "anat").is_dir() or any((session / "anat").is_dir() for session in subject.glob("ses-*")):
            return True
    return False


def read_bids(root) -> list[dict]:
    """Anatomical NIfTI images of a BIDS dataset: ``sub-*/[ses-*/]anat/*.nii[.gz]``.

    Returns:
        ``{"image", "modality"}`` per image (modality = BIDS suffix), sorted by path. Files outside
        ``anat/`` and ``*mask`` files are left out and counted in a log line.

    Raises:
        ValueError: no anatomical image was found.
    """
    root = Path(root)
    entries, left_out = [], Counter()
    for subject in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        for folder, dirs, files in os.walk(subject):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not name.lower().endswith(_NIFTI):
                    continue
                where = Path(folder).name
                if where != "anat":
                    left_out[f"{where}/"] += 1
                elif _bids_suffix(name).lower().endswith("mask"):
                    left_out["masks"] += 1
                else:
                    entries.append(_entry(str(Path(folder, name)), modality=_bids_suffix(name)))
    if not entries:
        raise ValueError(
            f"dataset '{root}' is a BIDS folder without anatomical images (sub-*/[ses-*/]anat/*.nii.gz): pass a "
            "folder of images or a datalist JSON instead"
        )
    counts = Counter(e["modality"] for e in entries)
    logger.info(
        "BIDS dataset %s: %d anatomical images (%s)%s", root, len(entries),
        ", ".join(f"{m}: {n}" for m, n in sorted(counts.items())),
        f"; left out {sum(left_out.values())} NIfTI files that are not anatomical images "
        f"({', '.join(f'{k} {v}' for k, v in sorted(left_out.items()))})" if left_out else "",
    )
    return entries


# ---------------- detection ----------------


def detect_layout(path) -> tuple[str, Path]:
    """Which reader ``path`` needs, and the file (or folder) to read.

    Returns:
        ``("openmind", csv)``, ``("nnssl", pretrain_data.json)``, ``("bids", root)``, or ``("json",
        file)`` / ``("folder", folder)`` for the plain layouts of ``load_datalist``. A folder's own
        ``datalist.json`` comes first, then ``openneuro_metadata.csv``, ``pretrain_data.json`` and a
        BIDS root; a file ending in ``.csv`` is read as an OpenMind table; a JSON file with a
        ``datasets`` dict is an nnssl collection (decided by the caller after parsing).
    """
    path = Path(path)
    if path.is_file():
        return ("openmind" if path.name.lower().endswith(".csv") else "json"), path
    if (path / FOLDER_DATALIST).is_file():
        return "json", path / FOLDER_DATALIST
    if (path / OPENMIND_CSV).is_file():
        return "openmind", path / OPENMIND_CSV
    if (path / NNSSL_FILE).is_file():
        return "nnssl", path / NNSSL_FILE
    if is_bids_root(path):
        return "bids", path
    return "folder", path
