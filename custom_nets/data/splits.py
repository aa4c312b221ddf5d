"""Train/test splits and cross-validation folds, made once from a seed and kept in a JSON file.

The evaluation protocol (method.md section 5) fine-tunes once on an 80/20 train/test split per
dataset, uses 5-fold cross-validation on development sets, and draws low-data curves with 10, 20,
30 and 40 training cases. ``make_splits`` writes the split file on first use and reads it back
afterwards, so every run of a study (and every method compared in it) sees the same cases.

File format (``scheme`` "80/20", any "<train>/<test>" percentages work)::

    {"scheme": "80/20", "seed": 0, "train": [...], "test": [...]}

or (``scheme`` "5fold", any "<k>fold" with k >= 2)::

    {"scheme": "5fold", "seed": 0, "folds": [{"train": [...], "val": [...]}, ...]}

A dataset that names its held-out cases (the labeled ``test`` list of an MSD ``dataset.json``,
passed as ``test_cases``) keeps exactly those as the test set instead of drawing 20 %::

    {"scheme": "dataset.json test list", "seed": 0, "train": [...], "test": [...]}

and with a k-fold scheme the folds are drawn from the other cases, the test list is stored under
``"test"`` and never enters a fold.

Test and validation lists are sorted. Training lists are kept in one seeded random order (the
order of a permutation of all cases, without the held-out ones); the low-data subset of N cases
is the first N of that list. Subsets are therefore nested (the 10-case set lies inside the 20-case
set), which keeps the points of a low-data curve comparable.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text

__all__ = ["held_out_part", "make_splits", "select_split"]

logger = logging.getLogger(__name__)

_HOLDOUT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_KFOLD = re.compile(r"^\s*(\d+)\s*-?\s*folds?\s*$", re.IGNORECASE)

_NOTE = "train lists are in a seeded random order; the low-data subset of N cases is their first N"

#: ``scheme`` of a split whose test set is the dataset's own list of held-out cases.
TEST_LIST_SCHEME = "dataset.json test list"


def _parse_scheme(scheme) -> tuple[str, int]:
    """``"80/20"`` -> ("holdout", 20 % test); ``"5fold"`` -> ("kfold", 5); the test-list scheme -> ("test_list", 0)."""
    text = str(scheme)
    if text == TEST_LIST_SCHEME:
        return "test_list", 0
    holdout = _HOLDOUT.match(text)
    if holdout and int(holdout.group(1)) + int(holdout.group(2)) == 100 and 0 < int(holdout.group(2)) < 100:
        return "holdout", int(holdout.group(2))
    kfold = _KFOLD.match(text)
    if kfold and int(kfold.group(1)) >= 2:
        return "kfold", int(kfold.group(1))
    raise ValueError(f"scheme={scheme!r} is not a split scheme: pass '80/20' (train/test percent) or '5fold'")


def _case_list(case_ids) -> list[str]:
    if isinstance(case_ids, (str, bytes)) or case_ids is None:
        raise ValueError(f"case_ids={case_ids!r} must be a list of case names, e.g. [e['case'] for e in entries]")
    ids = [str(c) for c in case_ids]
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise ValueError(f"case_ids contain duplicates {duplicates[:10]}: every case must appear once")
    return sorted(ids)


def _check_count(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive number of training cases (or None for all)")
    return int(value)


def _build(ids: list[str], kind: str, value: int, scheme: str, seed: int, test: list[str]) -> dict:
    held_out = set(test)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids)) if ids[i] not in held_out]
    if kind == "test_list":
        if not order:
            raise ValueError(
                f"all {len(ids)} cases are in the dataset's test list: keep at least one labeled case under 'training'"
            )
        return {"scheme": scheme, "seed": seed, "note": _NOTE, "train": order, "test": sorted(held_out)}
    ids = sorted(order)  # the k-fold cases: every case but the held-out ones
    if kind == "holdout":
        if len(ids) < 2:
            raise ValueError(
                f"scheme {scheme!r} needs at least 2 labeled cases to hold some out for testing, got {len(ids)}: add "
                "cases, or list held-out labeled cases under 'test' in dataset.json "
                '([{"image": ..., "label": ...}]), which then become the test set'
            )
        n_test = min(len(ids) - 1, max(1, int(round(len(ids) * value / 100.0))))
        test = set(order[:n_test])
        return {"scheme": scheme, "seed": seed, "note": _NOTE,
                "train": [c for c in order if c not in test], "test": sorted(test)}
    if value > len(ids):
        raise ValueError(f"scheme {scheme!r} needs at least {value} cases for {value} folds, got {len(ids)}")
    folds = []
    for part in np.array_split(np.arange(len(ids)), value):
        val = {order[i] for i in part}
        folds.append({"train": [c for c in order if c not in val], "val": sorted(val)})
    splits = {"scheme": scheme, "seed": seed, "note": _NOTE, "folds": folds}
    return {**splits, "test": sorted(held_out)} if held_out else splits


def _cases_in(splits: dict) -> list[str]:
    if "folds" in splits:
        return [c for fold in splits["folds"] for c in fold.get("val", [])] + list(splits.get("test", []))
    return list(splits.get("train", [])) + list(splits.get("test", []))


def _check_partition(splits: dict, path: Path) -> None:
    """Held-out lists must not overlap training lists; folds must cover every case but the test list once."""
    test = set(splits.get("test", []))
    if "folds" in splits:
        parts = splits["folds"]
    else:
        parts = [{"train": splits.get("train", []), "val": splits.get("test", [])}]
    every = set(_cases_in(splits)) - test if "folds" in splits else set(_cases_in(splits))
    for index, part in enumerate(parts):
        train, held = set(part.get("train", [])), set(part.get("val", []))
        if train & held or ("folds" in splits and (train | held != every or (train | held) & test)):
            raise ValueError(
                f"split file '{path}' is inconsistent in part {index} (training and held-out cases overlap or "
                "do not cover the dataset): delete the file to make new splits"
            )


def _read_existing(path: Path, ids: list[str], scheme: str, seed: int, test: list[str]) -> dict:
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"split file '{path}' cannot be read ({err}): delete it to make new splits") from err
    if not isinstance(splits, dict) or not ({"train", "test"} <= set(splits) or "folds" in splits):
        raise ValueError(f"split file '{path}' is not a split file: delete it or pick another path")
    if _parse_scheme(splits.get("scheme")) != _parse_scheme(scheme) or splits.get("seed") != seed:
        raise ValueError(
            f"split file '{path}' holds scheme {splits.get('scheme')!r} with seed {splits.get('seed')!r}, but "
            f"scheme {scheme!r} with seed {seed} was requested: delete the file or pick another path"
        )
    stored = _cases_in(splits)
    extra, missing = sorted(set(stored) - set(ids)), sorted(set(ids) - set(stored))
    if extra or missing or len(stored) != len(set(stored)):
        raise ValueError(
            f"split file '{path}' does not match the dataset: cases in the file but not in the dataset "
            f"{extra[:10]}{'...' if len(extra) > 10 else ''} ({len(extra)}), cases in the dataset but not in the "
            f"file {missing[:10]}{'...' if len(missing) > 10 else ''} ({len(missing)}); delete the file to make "
            "new splits for this dataset, or pick another path"
        )
    _check_partition(splits, path)
    if (test or "folds" in splits) and sorted(splits.get("test", [])) != test:
        raise ValueError(
            f"split file '{path}' holds the test cases {sorted(splits.get('test', []))[:10]}, but the dataset's test "
            f"list is {sorted(test)[:10]}: delete the file to make new splits, or pick another path"
        )
    return splits


def _truncate(splits: dict, low_data: int, where: str) -> dict:
    trains = [f["train"] for f in splits["folds"]] if "folds" in splits else [splits["train"]]
    available = min(len(t) for t in trains)
    if low_data > available:
        raise ValueError(
            f"low_data={low_data} training cases requested but {where} has only {available}: pass at most {available}"
        )
    if "folds" in splits:
        return {**splits, "low_data": low_data,
                "folds": [{**f, "train": f["train"][:low_data]} for f in splits["folds"]]}
    return {**splits, "low_data": low_data, "train": splits["train"][:low_data]}


def _test_list(test_cases, ids: list[str]) -> list[str]:
    if test_cases is None:
        return []
    test = _case_list(test_cases)
    unknown = sorted(set(test) - set(ids))
    if unknown:
        raise ValueError(
            f"test_cases {unknown[:10]} are not among case_ids: pass the held-out cases of the same dataset "
            "(prepare_segmentation_dataset(...)['test_cases'])"
        )
    return test


def make_splits(case_ids, path, seed: int = 0, scheme: str = "80/20", low_data=None, test_cases=None) -> dict:
    """Make (or reuse) the splits of a dataset, deterministically from ``seed``.

    Args:
        case_ids: the dataset's case names (e.g. ``[e["case"] for e in prepared["training"]]``);
            their order does not matter.
        path: JSON file holding the splits; written on first use (atomically) and read back later.
        seed: seed of the permutation that decides the held-out cases and the training order.
        scheme: ``"80/20"`` (train/test percentages) or ``"5fold"`` (``"<k>fold"``).
        low_data: keep only the first N training cases of every training list (nested subsets,
            see the module docstring); the file always holds the full splits.
        test_cases: the dataset's own held-out cases (a subset of ``case_ids``, e.g. the labeled
            ``test`` list of dataset.json). Non-empty, they are the test set: a train/test scheme
            becomes ``"dataset.json test list"``, a k-fold scheme folds the other cases.

    Returns:
        ``{"scheme", "seed", "train", "test"}`` or ``{"scheme", "seed", "folds": [{"train", "val"}]}``
        (plus ``"test"`` with ``test_cases``), plus ``"low_data": N`` when given.

    Raises:
        ValueError: the existing file was made for other cases, another scheme, seed or test list
            (delete it or pick another path), too few cases for the scheme, or ``low_data`` larger
            than the training cases available.
    """
    ids = _case_list(case_ids)
    if not ids:
        raise ValueError("case_ids is empty: pass the names of the dataset's cases")
    kind, value = _parse_scheme(scheme)
    test = _test_list(test_cases, ids)
    if test and kind == "holdout":
        logger.info("Using the dataset's test list (%d cases) as the test set instead of scheme %s", len(test), scheme)
        scheme, kind = TEST_LIST_SCHEME, "test_list"
    if kind == "test_list" and not test:
        raise ValueError(
            f"scheme {scheme!r} needs the dataset's held-out cases: pass test_cases (labeled entries of the 'test' "
            "list in dataset.json), or scheme '80/20' to draw them"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed={seed!r} must be an integer")
    seed, low_data = int(seed), _check_count(low_data, "low_data")
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_file():
        splits = _read_existing(path, ids, scheme, seed, test)
        logger.info("Reusing splits from %s", path)
    else:
        splits = _build(ids, kind, value, scheme=str(scheme), seed=seed, test=test)
        atomic_write_text(path, json.dumps(splits, indent=2) + "\n")
        logger.info("Wrote %s splits of %d cases (seed %d) to %s", scheme, len(ids), seed, path)
    return _truncate(splits, low_data, f"split file '{path}'") if low_data is not None else splits


def held_out_part(fold=None) -> str:
    """The part of a split that a run holds out from training: ``"test"`` of a train/test split (``fold`` None),
    ``"val"`` of fold ``fold`` of a k-fold split. Fine-tuning validates on it, evaluation scores it."""
    return "test" if fold is None else "val"


def select_split(entries: list[dict], splits: dict, part: str = "train", fold=None, low_data=None) -> list[dict]:
    """The entries of one part of a split, in the split's order.

    Args:
        entries: cases with a ``case`` key (from ``prepare_segmentation_dataset`` or
            ``load_segmentation_datalist``).
        splits: the result of ``make_splits``.
        part: ``"train"`` or ``"test"`` (80/20 splits); ``"train"`` or ``"val"`` (k-fold).
        fold: fold index for k-fold splits (0-based); must be None for 80/20 splits.
        low_data: keep the first N training cases (nested subsets); ``part`` must be ``"train"``.

    Raises:
        ValueError: an unknown part or fold, ``low_data`` too large, or split cases that are
            missing from ``entries`` (e.g. skipped during preprocessing).
    """
    kfold = "folds" in splits
    parts = ("train", "val") if kfold else ("train", "test")
    if part not in parts:
        raise ValueError(f"part={part!r} is not a part of this split: pick one of {parts}")
    if kfold:
        if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(splits["folds"]):
            raise ValueError(f"fold={fold!r} is not a fold index: pass 0 ... {len(splits['folds']) - 1}")
        cases = list(splits["folds"][int(fold)][part])
    else:
        if fold is not None:
            raise ValueError(
                f"fold={fold!r} given, but these are {splits.get('scheme')} splits without folds: pass fold=None"
            )
        cases = list(splits[part])
    low_data = _check_count(low_data, "low_data")
    if low_data is not None:
        if part != "train":
            raise ValueError(f"low_data applies to the training part only, not to part={part!r}")
        if low_data > len(cases):
            raise ValueError(f"low_data={low_data} but the training part has only {len(cases)} cases")
        cases = cases[:low_data]
    by_case = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "case" not in entry:
            raise ValueError(
                f"entry {index} has no 'case' key: use entries from prepare_segmentation_dataset or "
                "load_segmentation_datalist"
            )
        by_case[entry["case"]] = entry
    missing = [c for c in cases if c not in by_case]
    if missing:
        raise ValueError(
            f"{len(missing)} cases of the split are not among the entries: {missing[:10]}; they were probably skipped "
            "in preprocessing: fix them, or delete the split file and make new splits"
        )
    return [by_case[c] for c in cases]
