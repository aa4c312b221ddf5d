"""This project's split file in nnU-Net's format, so that "No (Dyn.)" trains and tests on the same cases.

nnU-Net v2 reads ``<nnUNet_preprocessed>/<Dataset>/splits_final.json``: a list of folds, each
``{"train": [case ids], "val": [case ids]}``, and validates fold k on its "val" cases. An 80/20 split becomes one
fold whose "val" cases are our test cases, so nnU-Net's fold-0 validation predictions are predictions of exactly
our test set (score them with ``custom_nets.evaluation.evaluate_folder`` for identical metrics); a k-fold split
becomes k folds. A low-data subset keeps the first N training cases of every fold, as ``make_splits`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.splits import _truncate

__all__ = ["nnunet_splits", "write_nnunet_splits"]


def nnunet_splits(splits: dict, low_data: int | None = None) -> list[dict]:
    """nnU-Net's list of folds for a split made by ``make_splits``.

    Args:
        splits: ``{"train", "test"}`` (80/20) or ``{"folds": [{"train", "val"}]}`` (k-fold).
        low_data: keep only the first N training cases of every fold (nested low-data subsets).
    """
    if low_data is not None:
        splits = _truncate(splits, int(low_data), "the split")
    if "folds" in splits:
        return [{"train": list(f["train"]), "val": list(f["val"])} for f in splits["folds"]]
    if "train" in splits and "test" in splits:
        return [{"train": list(splits["train"]), "val": list(splits["test"])}]
    raise ValueError(
        f"not a split of this project (keys {sorted(splits)}): pass the splits.json written by the fine-tuning bundle."
    )


def write_nnunet_splits(splits_file: str | os.PathLike, output: str | os.PathLike, low_data: int | None = None) -> str:
    """Convert ``splits_file`` (our ``splits.json``) to nnU-Net's ``splits_final.json`` at ``output``."""
    path = Path(splits_file)
    if not path.is_file():
        raise FileNotFoundError(f"split file '{path}' does not exist: run the fine-tuning bundle once (it writes splits.json).")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"split file '{path}' is not valid JSON ({err}); delete it and let the bundle rewrite it.") from err
    folds = nnunet_splits(splits, low_data)
    atomic_write_text(Path(output), json.dumps(folds, indent=2) + "\n")
    return str(output)
