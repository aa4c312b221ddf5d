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

__all__ = ["SavePredictiond", "evaluation_cases", "inference_inputs"]


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

    entries, _ = load_segmentation_datalist(source, key=key, strict=False)  # cases skipped in training are skipped here too
    if splits is None:
        return entries
    return select_split(entries, splits, part=part, fold=fold)


def inference_inputs(source, key: str = "test") -> list[dict]:
    """Images to segment: a NIfTI file, a folder of NIfTI files (one single-modality case each), or a
    dataset.json whose ``key`` list (else "training") gives the cases, with several modality files each.

    Returns:
        [{"case": name, "image": path or [paths]}], sorted by case name for folders.
    """
    import json

    from custom_nets.data.case_ids import strip_image_extension

    if source is None:
        raise ValueError("input_dir is not set: pass --input_dir with a NIfTI file, a folder of them, or a dataset.json.")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input '{path}' does not exist: pass --input_dir with a NIfTI file, a folder, or a dataset.json.")
    if path.is_file() and path.suffix == ".json":
        data = json.loads(path.read_text())
        entries = data.get(key) or data.get("training") or []
        out = []
        for i, entry in enumerate(entries):
            images = entry["image"] if isinstance(entry, dict) else entry
            images = [images] if isinstance(images, str) else list(images)
            images = [str((path.parent / p).resolve()) for p in images]
            out.append({"case": strip_image_extension(Path(images[0]).name) if len(images) == 1 else f"case_{i:04d}", "image": images})
        if not out:
            raise ValueError(f"'{path}' lists no images under '{key}' or 'training'.")
        return out
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise ValueError(f"no .nii/.nii.gz file in '{path}': pass a folder of NIfTI images or a dataset.json.")
    return [{"case": strip_image_extension(p.name), "image": str(p)} for p in files]
