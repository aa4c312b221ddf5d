"""Evaluate NIfTI predictions against reference labels: one case, or a whole folder.

Predictions and labels are matched by *case id*, derived the same way on both sides
(``custom_nets.data.case_ids``):

* references given as datalist entries with a ``case`` (``evaluation_cases``, the fine-tuning bundle's
  evaluation): that id, which is also the name of the prediction file the bundle wrote;
* references given as label paths or a folder of labels (searched recursively): ``case_ids_for`` of the label
  files, i.e. the path below their common folder with ``/`` replaced by ``__`` (``labelsTr/a.nii.gz`` and
  ``labelsTs/b.nii.gz`` -> ``labelsTr__a`` and ``labelsTs__b``; ``case1/seg.nii.gz`` and ``case2/seg.nii.gz``
  -> ``case1__seg`` and ``case2__seg``; a flat folder: file names without extension);
* predictions (the prediction folder, searched recursively): ``case_ids_for`` of the prediction files. This
  project writes ``<case id>.nii.gz`` into one folder, so the file name is the id. A file saved by MONAI's
  ``SaveImage`` carries a postfix (``case_003_seg.nii.gz``, possibly inside a ``case_003/`` sub-folder): pass
  ``prediction_postfix="_seg"``.

Classes are given as ``labels = {value: name}`` (``{1: "liver", 2: "tumour"}``). The nnU-Net
``dataset.json`` form ``{"background": 0, "liver": 1}`` and JSON's string keys
(``{"1": "liver"}``) are accepted too. Value 0 is the background and is never scored.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from custom_nets.data.case_ids import case_ids_for, strip_image_extension
from custom_nets.evaluation.label_io import check_same_geometry, read_label_map, voxel_spacing_mm
from custom_nets.evaluation.metrics import METRICS
from custom_nets.evaluation.summary import summarise, write_reports

__all__ = ["case_id_of", "evaluate_case", "evaluate_folder", "normalise_labels", "resolve_tolerances"]

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_LISTED = 20


def case_id_of(path: str | os.PathLike, postfix: str = "") -> str:
    """Case id of a file: its name without the image extension and without ``postfix``."""
    name = strip_image_extension(os.path.basename(os.fspath(path)))
    if postfix and name.endswith(postfix) and len(name) > len(postfix):
        name = name[: -len(postfix)]
    return name


def _label_value(key) -> int | None:
    """``key`` as a non-negative label value, or None when it is not one."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, float):
        return int(key) if key.is_integer() and key >= 0 else None
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return None


def normalise_labels(labels: Mapping) -> dict[int, str]:
    """Scored classes as ``{value: name}`` in increasing value order, background (0) left out.

    Args:
        labels: ``{value: name}``; ``{"value": name}`` (JSON keys); or nnU-Net's ``{name: value}``.

    Raises:
        ValueError: a value is not a non-negative integer, values or names repeat, or no class
            remains.
    """
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"labels must be a non-empty dict like {{1: 'liver'}}, got {labels!r}")
    pairs = []
    for key, name in labels.items():
        if _label_value(key) is None and _label_value(name) is not None:
            key, name = name, key  # nnU-Net dataset.json: {"liver": 1}
        value = _label_value(key)
        if value is None:
            raise ValueError(
                f"labels entry {key!r}: {name!r} has no label value: use {{value: name}}, e.g. {{1: 'liver'}}"
            )
        pairs.append((value, str(name)))
    values = [value for value, _ in pairs]
    if len(set(values)) != len(values):
        raise ValueError(f"labels {labels!r} give the same value twice")
    scored = {value: name for value, name in sorted(pairs) if value != 0}
    if not scored:
        raise ValueError(f"labels {labels!r} hold only the background (0): add the classes to score")
    names = list(scored.values())
    if len(set(names)) != len(names):
        raise ValueError(f"labels {labels!r} give the same class name twice: class names must be unique")
    if len(scored) < len(pairs):
        logger.debug("Label value 0 (background) is not scored")
    return scored


def resolve_tolerances(tolerance_mm, labels: dict[int, str]) -> dict[str, float]:
    """NSD tolerance in mm per class name.

    Args:
        tolerance_mm: one number for all classes; a dict keyed by class name or label value; or a
            sequence with one value per class in increasing label-value order.
        labels: scored classes, ``{value: name}`` (see :func:`normalise_labels`).
    """
    names = list(labels.values())
    if isinstance(tolerance_mm, Mapping):
        by_name = {}
        for key, value in tolerance_mm.items():
            if key in names:
                by_name[key] = value
            elif str(key).isdigit() and int(key) in labels:
                by_name[labels[int(key)]] = value
            else:
                raise ValueError(
                    f"tolerance_mm has an entry for {key!r}, which is not a scored class: use class names {names} "
                    f"or label values {list(labels)}"
                )
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(
                f"tolerance_mm has no value for classes {missing}: add them (mm), e.g. {{'{missing[0]}': 2.0}}"
            )
        raw = by_name
    elif isinstance(tolerance_mm, Sequence) and not isinstance(tolerance_mm, str):
        if len(tolerance_mm) != len(names):
            raise ValueError(f"tolerance_mm has {len(tolerance_mm)} values for {len(names)} classes {names}")
        raw = dict(zip(names, tolerance_mm))
    else:
        raw = {name: tolerance_mm for name in names}
    result = {}
    for name, value in raw.items():
        try:
            tolerance = float(value)
        except (TypeError, ValueError):
            tolerance = math.nan
        if not math.isfinite(tolerance) or tolerance < 0:
            raise ValueError(f"tolerance_mm for class '{name}' must be a non-negative distance in mm, got {value!r}")
        result[name] = tolerance
    return result


def evaluate_case(
    pred_path: str | os.PathLike,
    label_path: str | os.PathLike,
    labels: Mapping,
    tolerance_mm=2.0,
    case: str | None = None,
) -> dict:
    """Every registered metric (DSC, NSD, ...) of one predicted label map against its reference.

    Args:
        pred_path: predicted label map (NIfTI), on the label's grid.
        label_path: reference label map (NIfTI); its header gives the voxel spacing (mm).
        labels: scored classes, ``{value: name}`` (see :func:`normalise_labels`).
        tolerance_mm: NSD tolerance in mm: one number, or per class (see
            :func:`resolve_tolerances`). Default 2.0.
        case: case id to report; default: the label file name without extension.

    Returns:
        ``{"case": id, "dsc": {name: value}, "nsd": {name: value}}`` (one entry per metric of
        ``custom_nets.evaluation.metrics.METRICS``) with NaN for a class absent from both maps.

    Raises:
        ValueError: the files are on different grids (the message names both) or are not
            integer label maps.
    """
    classes = normalise_labels(labels)
    tolerances = resolve_tolerances(tolerance_mm, classes)
    pred, pred_image = read_label_map(pred_path)
    reference, label_image = read_label_map(label_path)
    check_same_geometry(pred_image, pred.shape, label_image, reference.shape, pred_path, label_path)
    spacing = voxel_spacing_mm(label_image)
    result = {"case": case if case is not None else case_id_of(label_path)}
    result.update({metric.name: {} for metric in METRICS})
    for value, name in classes.items():
        pred_mask, reference_mask = pred == value, reference == value
        for metric in METRICS:
            result[metric.name][name] = metric.compute(pred_mask, reference_mask, spacing, tolerances[name])
    return result


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _index(paths: list[tuple[str, str]], what: str) -> dict[str, str]:
    """``{case id: path}``; a clear error when two files share an id."""
    index: dict[str, str] = {}
    for case, path in paths:
        if case in index:
            raise ValueError(
                f"two {what} files have case id '{case}': '{index[case]}' and '{path}'; "
                "every case needs its own id (give each datalist entry its own 'case')"
            )
        index[case] = path
    return index


def _reference_paths(references) -> dict[str, str]:
    """Label paths by case id, from datalist entries (dicts with ``label`` and ``case``), paths, or a folder."""
    if isinstance(references, (str, os.PathLike)):
        folder = Path(references)
        if not folder.is_dir():
            raise ValueError(
                f"label source '{folder}' is not a folder: pass a folder of label NIfTI files or the list of "
                "datalist entries (dicts with a 'label' path)"
            )
        paths = [str(p) for p in _scan_nifti(folder)]
        if not paths:
            raise FileNotFoundError(f"no reference label maps (*.nii, *.nii.gz) in '{folder}'")
        return _index(list(zip(case_ids_for(paths), paths)), "label")
    if not isinstance(references, Sequence) or not references:
        raise ValueError("references must be a folder of labels or a non-empty list of datalist entries")
    paths, given = [], []
    for position, entry in enumerate(references):
        path = entry.get("label") if isinstance(entry, Mapping) else entry
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValueError(
                f"datalist entry {position} has no 'label' path ({entry!r}): every evaluated case needs one"
            )
        paths.append(os.fspath(path))
        given.append(entry.get("case") if isinstance(entry, Mapping) else None)
    ids = given if all(given) else case_ids_for(paths)
    return _index(list(zip(ids, paths)), "label")


def _scan_nifti(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in files if f.lower().endswith(_NIFTI_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def _prediction_paths(pred_dir: Path, postfix: str) -> dict[str, str]:
    """Prediction paths by case id: ``case_ids_for`` of the files with ``postfix`` taken off their names, and
    MONAI's separate-folder layout ``x/x<postfix>.nii.gz`` read as ``x<postfix>.nii.gz``."""
    files = _scan_nifti(pred_dir)
    named = []
    for path in files:
        stem = strip_image_extension(path.name)
        extension = path.name[len(stem):]
        if postfix and stem.endswith(postfix) and len(stem) > len(postfix):
            stem = stem[: -len(postfix)]
        folder = path.parent
        if folder != pred_dir and folder.name == stem:
            folder = folder.parent
        named.append(str(folder / f"{stem}{extension}"))
    return _index(list(zip(case_ids_for(named), map(str, files))), "prediction")


def evaluate_folder(
    pred_dir: str | os.PathLike,
    references,
    labels: Mapping,
    tolerance_mm=2.0,
    output_dir: str | os.PathLike | None = None,
    *,
    allow_missing: bool = False,
    prediction_postfix: str = "",
    cases: Collection[str] | None = None,
) -> dict:
    """Evaluate every reference case against its prediction and write the reports.

    Args:
        pred_dir: folder of predicted label maps (searched recursively).
        references: the reference labels: a list of datalist entries (dicts with a ``label``
            path and, from ``evaluation_cases``, a ``case`` id), a list of label paths, or a folder
            of label NIfTI files (searched recursively). See the module docstring for the case ids.
        labels: scored classes, ``{value: name}`` (see :func:`normalise_labels`).
        tolerance_mm: NSD tolerance in mm, one number or per class (dict keyed by class name or
            value). Default 2.0.
        output_dir: folder for ``metrics_per_case.csv``, ``summary.json`` and ``summary.csv``;
            default: ``pred_dir``.
        allow_missing: score a case without prediction as the worst value of every metric (0 for
            DSC and NSD) for every class (and list it in the summary) instead of raising. Default False.
        prediction_postfix: text between case id and extension in prediction file names, e.g.
            ``"_seg"`` for MONAI's ``SaveImage``. Default "".
        cases: score only these case ids (e.g. a split's test cases); None scores every reference.

    Returns:
        The summary dict (see :func:`custom_nets.evaluation.summary.summarise`).

    Raises:
        FileNotFoundError: predictions are missing (the message lists the cases) and
            ``allow_missing`` is False, ``pred_dir`` does not exist, or no reference is left.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder '{pred_dir}' does not exist: run inference first")
    classes = normalise_labels(labels)
    tolerances = resolve_tolerances(tolerance_mm, classes)
    reference_paths = _reference_paths(references)
    if cases is not None:
        wanted = set(cases)
        reference_paths = {case: path for case, path in reference_paths.items() if case in wanted}
        if not reference_paths:
            raise FileNotFoundError(
                f"no reference label maps for the requested cases ({_listing(sorted(wanted))}); the labels have case "
                f"ids {_listing(sorted(_reference_paths(references)))}"
            )
    pred_paths = _prediction_paths(pred_dir, prediction_postfix)
    missing = [case for case in reference_paths if case not in pred_paths]
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(reference_paths)} cases have no prediction in '{pred_dir}': {_listing(missing)}. "
            f"Expected files named <case id>{prediction_postfix}.nii.gz (predictions found for: "
            f"{_listing(sorted(pred_paths)) or 'none'}); run inference for them, fix prediction_postfix, or pass "
            "allow_missing=True to score them as 0"
        )
    extra = sorted(set(pred_paths) - set(reference_paths))
    if extra:
        logger.warning("%d predictions have no reference label and are ignored: %s", len(extra), _listing(extra))
    results = []
    for number, (case, label_path) in enumerate(reference_paths.items(), start=1):
        if case in pred_paths:
            results.append(evaluate_case(pred_paths[case], label_path, classes, tolerances, case=case))
            logger.info("Evaluated case %s (%d/%d)", case, number, len(reference_paths))
        else:
            logger.warning("Case %s has no prediction: scored worst for every class", case)
            worst = {metric.name: {name: metric.worst for name in classes.values()} for metric in METRICS}
            results.append({"case": case, **worst})
    summary = summarise(results, list(classes.values()), tolerances, missing_cases=missing)
    paths = write_reports(results, summary, output_dir if output_dir is not None else pred_dir)
    scores = ", ".join(f"mean {metric.display_name} {summary[f'mean_{metric.name}']:.4f}" for metric in METRICS)
    logger.info(
        "%s over %d cases (%d missing); reports in %s",
        scores[0].upper() + scores[1:], summary["n_cases"], summary["n_missing"], paths["summary_json"].parent,
    )
    return summary
