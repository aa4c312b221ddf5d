"""Writing segmentation predictions and choosing the cases to evaluate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Transform

from custom_nets.data.atomic import atomic_save_nifti

__all__ = ["SavePredictiond", "evaluation_cases"]


class SavePredictiond(Transform):
    """Save a label map as ``<output_dir>/<case>.nii.gz`` in the geometry carried by the prediction.

    Used after ``Invertd``, so the affine and shape are those of the original image and the file lines up
    with the original label (what ``evaluate_folder`` compares against). Class probabilities (C, *spatial)
    are reduced with argmax; a (1, *spatial) label map is saved as is.

    Args:
        keys: prediction key. Defaults to "pred".
        output_dir: folder for the NIfTI files.
        name_key: data key holding the case name. Defaults to "case".
    """

    def __init__(self, keys: str = "pred", output_dir: str | os.PathLike = "predictions", name_key: str = "case"):
        self.key, self.output_dir, self.name_key = keys, Path(output_dir), name_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        pred = d[self.key]
        case = d.get(self.name_key)
        if case is None:
            raise KeyError(f"SavePredictiond needs a '{self.name_key}' entry to name the file; got keys {sorted(d)}.")
        affine = np.asarray(pred.affine.double().cpu()) if hasattr(pred, "affine") else np.eye(4)
        values = torch.as_tensor(pred).detach().cpu()
        label = values.argmax(0) if values.shape[0] > 1 else values[0].round()
        label = label.numpy().astype(np.uint8 if int(label.max()) < 256 else np.uint16)
        image = nib.Nifti1Image(label, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        path = self.output_dir / f"{case}.nii.gz"
        atomic_save_nifti(image, path)
        d["prediction_path"] = str(path)
        return d


def evaluation_cases(source, splits: dict | None = None, part: str = "test", fold=None, key: str = "training") -> list[dict]:
    """Raw (not preprocessed) cases to predict and score: the ``part`` of ``splits``, or every case.

    Args:
        source: MSD-style dataset.json (or its folder). For cross-dataset evaluation, another dataset's.
        splits: the result of ``make_splits`` for the same dataset; None evaluates every case of ``source``.
        part: "test" (80/20) or "val" (k-fold, with ``fold``).
        fold: k-fold index.
        key: the entry list of dataset.json.

    Returns:
        [{"case", "image": [modality files], "label"}], original files, in split order.
    """
    from custom_nets.data import load_segmentation_datalist, select_split

    entries, _ = load_segmentation_datalist(source, key=key)
    if splits is None:
        return entries
    return select_split(entries, splits, part=part, fold=fold)
