"""Writing segmentation predictions, choosing the cases to predict, and reading what the model is.

Every prediction is ``<prediction folder>/<case id>.nii.gz`` (case ids: ``custom_nets.data.case_ids``; the
inputs and their ids: ``custom_nets.export.bundle_scripts.cases``, shared with exported bundles). What the
network is (preset, input channels, classes, patch size, spacing, intensity normalisation) is read from the
``model_info.json`` that the fine-tuning run writes beside ``models/model.pt``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Transform

from custom_nets.data.atomic import atomic_save_nifti
from custom_nets.export.bundle_scripts.cases import (
    as_flag,
    check_predictions_free,
    file_channels,
    inference_cases,
    prediction_path,
    refuse_or_log_replacement,
)

__all__ = [
    "SavePredictiond",
    "check_predictions_free",
    "check_settings_match",
    "default_inference_dir",
    "evaluation_cases",
    "evaluation_root",
    "inference_inputs",
    "load_model_info",
    "same_dataset",
]

logger = logging.getLogger(__name__)


class SavePredictiond(Transform):
    """Save a label map as ``<output_dir>/<case>.nii.gz`` in the geometry carried by the prediction.

    Used after ``Invertd``, so the affine and shape are those of the original image and the file lines up
    with the original label (what ``evaluate_folder`` compares against). Class probabilities (C, *spatial)
    are reduced with argmax; a (1, *spatial) label map is saved as is. The file is written atomically.

    Args:
        keys: prediction key. Defaults to "pred".
        output_dir: folder for the NIfTI files.
        name_key: data key holding the case id. Defaults to "case".
        overwrite: replace an existing file (with a logged warning) instead of raising FileExistsError.
            Defaults to False.
    """

    def __init__(self, keys: str = "pred", output_dir: str | os.PathLike = "predictions", name_key: str = "case",
                 overwrite: bool = False):
        self.key, self.output_dir, self.name_key = keys, Path(output_dir), name_key
        self.overwrite = as_flag(overwrite)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        pred = d[self.key]
        case = d.get(self.name_key)
        if case is None:
            raise KeyError(f"SavePredictiond needs a '{self.name_key}' entry to name the file; got keys {sorted(d)}.")
        path = prediction_path(self.output_dir, str(case))
        refuse_or_log_replacement(path, self.overwrite)
        affine = np.asarray(pred.affine.double().cpu()) if hasattr(pred, "affine") else np.eye(4)
        values = torch.as_tensor(pred).detach().cpu()
        label = values.argmax(0) if values.shape[0] > 1 else values[0].round()
        label = label.numpy().astype(np.uint8 if int(label.max()) < 256 else np.uint16)
        image = nib.Nifti1Image(label, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        atomic_save_nifti(image, path)
        d["prediction_path"] = path
        return d


def inference_inputs(source, key: str = "test", in_channels: int | None = None, modalities=None) -> list[dict]:
    """Images to segment with their case ids: a NIfTI file, a folder of NIfTI files (one case each), or a
    dataset.json whose ``key`` list (else "training") gives the cases, with one file per modality.

    See ``custom_nets.export.bundle_scripts.cases.inference_cases`` (the same code runs in exported bundles).

    Returns:
        ``[{"case": case id, "image": [files]}]``.
    """
    return inference_cases(source, in_channels=in_channels, modalities=modalities, key=key)


def default_inference_dir(checkpoint: str | os.PathLike) -> str:
    """Where inference writes by default: ``<run>/inference`` for a run's ``<run>/models/model.pt``, else an
    ``inference`` folder beside the checkpoint (never inside the repository's bundle folder by accident)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
    run = os.path.dirname(folder) if os.path.basename(folder) == "models" else folder
    return os.path.join(run, "inference")


def load_model_info(path: str | os.PathLike) -> dict:
    """Read the ``model_info.json`` of a fine-tuned network and check that it says what the network is.

    Args:
        path: ``model_info.json``, written by the fine-tuning bundle beside ``models/model.pt``.

    Returns:
        Its content, with ``labels`` as ``{int value: name}`` in value order.

    Raises:
        FileNotFoundError: the file does not exist (the message says where it comes from).
        ValueError: it is not JSON or lacks an entry (network_preset, num_channels, labels, spacing,
            normalisation, patch_size).
    """
    from custom_nets.export.inference_config import check_model_info

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"model_info.json not found at '{path}': it says which network the weights beside it belong to (preset, "
            "channels, classes, patch size) and is written next to models/model.pt when a fine-tuning run finishes. "
            "Pass --checkpoint <run>/models/model.pt of a finished fine-tuning run."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is not valid JSON ({err}); re-run the fine-tuning to rewrite it") from err
    check_model_info(info, path)
    info["labels"] = {int(k): str(v) for k, v in sorted(info["labels"].items(), key=lambda kv: int(kv[0]))}
    logger.info(
        "Model from %s: preset %s, %d input channel(s), classes %s, sliding windows of %s voxels at %s mm",
        path, info["network_preset"], int(info["num_channels"]), list(info["labels"].values()),
        "x".join(str(int(p)) for p in info["patch_size"]), info["spacing"],
    )
    return info


def check_settings_match(model_info: Mapping, model_info_path: str | os.PathLike, **settings) -> None:
    """Raise ValueError when a setting given on the command line contradicts the model's ``model_info.json``.

    Args:
        model_info: the content returned by :func:`load_model_info`.
        model_info_path: its file, for the message.
        settings: ``name=value`` pairs, each the value in use for a ``model_info`` entry of the same name
            (``network_preset``, ``num_channels``, ``patch_size``).
    """
    def same(a, b) -> bool:
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            return [int(x) for x in a] == [int(x) for x in b]
        return a == b

    wrong = [f"{name}={value!r} (the model: {model_info[name]!r})" for name, value in settings.items()
             if not same(value, model_info[name])]
    if wrong:
        raise ValueError(
            f"settings {', '.join(wrong)} contradict '{os.fspath(model_info_path)}', which describes the network whose "
            "weights are evaluated: drop these overrides (the evaluation reads them from model_info.json)."
        )


def same_dataset(a, b) -> bool:
    """Whether two dataset sources (a ``dataset.json`` or its folder) are the same file."""
    def json_path(source) -> str:
        path = os.path.abspath(os.path.expanduser(os.fspath(source)))
        return os.path.normpath(os.path.join(path, "dataset.json") if os.path.isdir(path) else path)

    return a is not None and b is not None and json_path(a) == json_path(b)


def evaluation_root(output_dir: str | os.PathLike, eval_dataset_dir, dataset_source) -> str:
    """Folder for the ``predictions/`` and ``evaluation/`` of one evaluation of a run: the run's ``output_dir`` for
    its own test split, ``<output_dir>/cross_dataset/<dataset folder name>`` for another dataset, so that one
    evaluation never replaces another's files."""
    if same_dataset(eval_dataset_dir, dataset_source):
        return os.fspath(output_dir)
    path = os.path.abspath(os.path.expanduser(os.fspath(eval_dataset_dir)))
    name = os.path.basename(path) if os.path.isdir(path) else os.path.basename(os.path.dirname(path))
    return os.path.join(os.fspath(output_dir), "cross_dataset", name)


def _check_fits_model(entries: list[dict], labels: Mapping, source, model_info: Mapping) -> None:
    """The dataset's label table and every case's channel count must be the model's."""
    dataset_labels = {int(k): str(v) for k, v in labels.items()}
    model_labels = {int(k): str(v) for k, v in model_info["labels"].items()}
    if dataset_labels != model_labels:
        raise ValueError(
            f"dataset '{source}' declares labels {dataset_labels}, but the model predicts {model_labels} "
            "(model_info.json): evaluate on a dataset with the same label table."
        )
    channels = int(model_info["num_channels"])
    for entry in entries:
        counts = [file_channels(p) for p in entry["image"]]
        if None not in counts and sum(counts) != channels:
            raise ValueError(
                f"case '{entry['case']}' of dataset '{source}' has {sum(counts)} image channel(s), but the model takes "
                f"{channels} ({', '.join(model_info.get('modalities') or [])}): evaluate on a dataset with the "
                "same modalities, in the same order."
            )


def evaluation_cases(source, splits: dict | None = None, part: str = "test", fold=None, key: str = "training",
                     model_info: Mapping | None = None) -> list[dict]:
    """Raw (not preprocessed) cases to predict and score: the ``part`` of ``splits``, or every case.

    Args:
        source: MSD-style dataset.json (or its folder). For cross-dataset evaluation, another dataset's.
        splits: the result of ``make_splits`` for the same dataset; None evaluates every case of ``source``.
        part: "test" (80/20) or "val" (k-fold, with ``fold``).
        fold: k-fold index.
        key: the entry list of dataset.json.
        model_info: the evaluated model's ``model_info.json`` content; when given, the dataset's label table and
            every case's channel count must be the model's (ValueError otherwise).

    Returns:
        [{"case", "image": [modality files], "label"}], original files, in split order. ``case`` is the dataset's
        case id (the one the splits use), which also names the prediction file.
    """
    from custom_nets.data import load_segmentation_datalist, select_split

    entries, labels = load_segmentation_datalist(source, key=key, strict=False)  # cases skipped in training are skipped here too
    if splits is not None:
        entries = select_split(entries, splits, part=part, fold=fold)
    if model_info is not None:
        _check_fits_model(entries, labels, source, model_info)
    return entries
