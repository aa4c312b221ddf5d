"""Images to segment, named by case id, and prediction files that never replace one another.

One implementation for the project's inference config (``bundles/s3d_finetune/configs/inference.yaml``) and for
exported model-zoo bundles, where this file is ``scripts/cases.py`` beside ``scripts/case_ids.py`` (a copy of
``custom_nets/data/case_ids.py``); it needs only the standard library, nibabel and MONAI.

Case ids (``custom_nets.data.case_ids``):

* a ``dataset.json`` (or another JSON datalist): the dataset's case ids, ``dataset_case_ids`` of the list that is
  segmented (``"test"``, else ``"training"``): a labeled case is named after its label file, as in training and
  the splits; an unlabeled one after its nnU-Net image stem (``imagesTs/case_008_0000.nii.gz`` and
  ``case_008_0001.nii.gz`` -> ``case_008``);
* a folder: ``case_ids_for`` of its NIfTI files, searched recursively (``siteA/scan.nii.gz`` and
  ``siteB/scan.nii.gz`` -> ``siteA__scan`` and ``siteB__scan``);
* one file: its name without the extension.

The prediction of case ``c`` is ``<output_dir>/c.nii.gz``. An existing file is never replaced unless
``overwrite`` is set: ``check_predictions_free`` refuses before anything is segmented, and the writers refuse
again at write time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

from monai.transforms import SaveImaged

try:  # in an exported bundle: scripts/case_ids.py
    from .case_ids import case_ids_for, dataset_case_ids
except ImportError:  # in the project
    from custom_nets.data.case_ids import case_ids_for, dataset_case_ids

__all__ = [
    "PREDICTION_SUFFIX",
    "SavePredictiond",
    "as_flag",
    "check_predictions_free",
    "file_channels",
    "inference_cases",
    "prediction_path",
    "refuse_or_log_replacement",
]

logger = logging.getLogger(__name__)

#: Extension of every prediction file: ``<case id>.nii.gz``.
PREDICTION_SUFFIX = ".nii.gz"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_LISTED = 10


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def as_flag(value, name: str = "overwrite") -> bool:
    """A yes/no setting as bool: ``True``/``False``, or the text ``true``/``false`` (any case) that
    ``python -m monai.bundle run --overwrite true`` passes (``bool("false")`` would be True)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "none", ""):
        return False
    raise ValueError(f"{name}={value!r} is not a yes/no setting: pass --{name} true or --{name} false")


def prediction_path(output_dir: str | os.PathLike, case: str) -> str:
    """``<output_dir>/<case>.nii.gz``, the one file that holds the prediction of ``case``."""
    return os.path.join(os.fspath(output_dir), f"{case}{PREDICTION_SUFFIX}")


def file_channels(path: str) -> int | None:
    """Channels of one NIfTI image from its header: the 4th axis of a 4D file, else 1; None for other formats."""
    if not path.lower().endswith(_NIFTI_SUFFIXES):
        return None
    import nibabel as nib

    dims = list(nib.load(path).shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    return int(dims[3]) if len(dims) == 4 else 1


def _channel_names(in_channels: int, modalities) -> str:
    names = [str(m) for m in (modalities or [])]
    return ", ".join(names) if len(names) == in_channels else ", ".join(f"channel {c}" for c in range(in_channels))


def _example_datalist(in_channels: int) -> str:
    files = ", ".join(f'"case_000_{c:04d}.nii.gz"' for c in range(in_channels))
    return '{"test": [{"image": [' + files + "]}, ...]}"


def _scan_nifti(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files if f.lower().endswith(_NIFTI_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def _folder_cases(path: str, in_channels: int | None, modalities) -> list[dict]:
    files = [path] if os.path.isfile(path) else _scan_nifti(path)
    if not files:
        raise ValueError(
            f"no .nii/.nii.gz file in '{path}': pass a folder of NIfTI images (one per case) or a dataset.json."
        )
    if in_channels is not None:
        wrong = [(f, file_channels(f)) for f in files]
        wrong = [(f, n) for f, n in wrong if n is not None and n != in_channels]
        if wrong:
            names = _channel_names(in_channels, modalities)
            what = (
                f"input_dir '{path}' is a folder of images, one per case, but the model takes {in_channels} channels "
                f"({names}) and '{wrong[0][0]}' has {wrong[0][1]} ({len(wrong)} of {len(files)} files do not fit)"
                if os.path.isdir(path) else
                f"input_dir '{path}' has {wrong[0][1]} channel(s), but the model takes {in_channels} ({names})"
            )
            raise ValueError(
                f"{what}. To segment cases with several modality files, list each case's files in a dataset.json "
                f"and pass it as --input_dir:\n  {_example_datalist(in_channels)}\n(paths relative to the JSON "
                f"file, one file per channel in the model's order: {names}); a 4D image with the channels on its "
                "last axis also works."
            )
    ids = case_ids_for(files)
    return [{"case": case, "image": [file]} for case, file in zip(ids, files)]


def _datalist_cases(path: str, key: str, in_channels: int | None, modalities) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, list):
        entries, used, training = data, "the list", []
    elif isinstance(data, Mapping):
        used = key if data.get(key) else "training"
        entries = data.get(used) or []
        training = (data.get("training") or []) if used != "training" else []
    else:
        entries, used, training = [], key, []
    if not entries:
        raise ValueError(
            f"'{path}' lists no images under '{key}' or 'training': use {_example_datalist(in_channels or 1)}."
        )
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p) -> str:
        p = os.path.expanduser(os.fspath(p))
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))

    def parse(items: list, name: str) -> list[tuple[list[str], str | None]]:
        parsed = []
        for index, entry in enumerate(items):
            images = entry.get("image") if isinstance(entry, Mapping) else entry
            images = [images] if isinstance(images, (str, os.PathLike)) else list(images or [])
            if not images:
                raise ValueError(
                    f"entry {index} of '{path}' ({name}) has no image: use {_example_datalist(in_channels or 1)}."
                )
            label = entry.get("label") if isinstance(entry, Mapping) else None
            parsed.append(([resolve(p) for p in images], resolve(label) if label else None))
        return parsed

    # the ids of the dataset: a test list is named after the training list, as training names it
    context = parse(training, "training")
    raw = parse(entries, used)
    ids = dataset_case_ids(context, raw)[len(context):] if context else dataset_case_ids(raw)
    first_entry: dict[str, int] = {}
    for index, case in enumerate(ids):
        if case in first_entry:
            raise ValueError(
                f"entries {first_entry[case]} and {index} of '{path}' ({used}) are the same case '{case}' (the same "
                "label or image files): remove one of them, so that each case has one prediction file."
            )
        first_entry[case] = index
    cases = []
    for case, (images, _) in zip(ids, raw):
        missing = [p for p in images if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"case '{case}' of '{path}': image file '{missing[0]}' does not exist.")
        if in_channels is not None:
            counts = [file_channels(p) for p in images]
            if None not in counts and sum(counts) != in_channels:
                raise ValueError(
                    f"case '{case}' of '{path}' has {sum(counts)} image channel(s) ({_listing(images)}), but the model "
                    f"takes {in_channels} ({_channel_names(in_channels, modalities)}): list one file per channel, in "
                    "that order."
                )
        cases.append({"case": case, "image": images})
    return cases


def inference_cases(source, in_channels: int | None = None, modalities: Sequence[str] | None = None,
                    key: str = "test") -> list[dict]:
    """The cases to segment, each with its case id, checked against the model's input channels.

    Args:
        source: a NIfTI file, a folder of NIfTI files (one case each, searched recursively), or a JSON datalist
            (a ``dataset.json``) whose ``key`` list (else ``"training"``) gives the cases.
        in_channels: input channels of the model; None skips the check. A file's channels are read from its
            header (3D: 1, 4D: the last axis).
        modalities: channel names for messages (``["t1", "flair"]``).
        key: the list of a JSON datalist to segment. Default "test".

    Returns:
        ``[{"case": case id, "image": [files in channel order]}]``: folders in sorted path order, datalists in
        list order.

    Raises:
        ValueError: nothing to segment; a folder or file whose images have another channel count than the model
            (the message shows the dataset.json form for several modalities); two entries of a datalist that are
            the same case.
        FileNotFoundError: ``source`` or an image of a datalist does not exist.
    """
    if source is None or not os.fspath(source):
        raise ValueError(
            "input_dir is not set: pass --input_dir with a NIfTI file, a folder of them, or a dataset.json."
        )
    path = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(source))))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"input '{path}' does not exist: pass --input_dir with a NIfTI file, a folder, or a dataset.json."
        )
    if os.path.isfile(path) and path.lower().endswith(".json"):
        cases = _datalist_cases(path, key, in_channels, modalities)
    else:
        cases = _folder_cases(path, in_channels, modalities)
    logger.info("%d case(s) to segment from %s", len(cases), path)
    return cases


def check_predictions_free(cases: Sequence[Mapping], output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse, before anything is segmented, to replace existing prediction files.

    Args:
        cases: the cases to segment (``{"case": id, ...}``).
        output_dir: the prediction folder.
        overwrite: replace existing predictions (each is logged). Default False.

    Raises:
        FileExistsError: some ``<output_dir>/<case>.nii.gz`` exist and ``overwrite`` is False; the message names
            them and the two ways out.
    """
    existing = [prediction_path(output_dir, c["case"]) for c in cases]
    existing = [p for p in existing if os.path.exists(p)]
    if not existing:
        return
    if not as_flag(overwrite):
        raise FileExistsError(
            f"{len(existing)} of {len(cases)} predictions already exist in '{os.fspath(output_dir)}': "
            f"{_listing(existing)}. Existing predictions are never replaced: pass another --output_dir, or "
            "--overwrite true to replace them."
        )
    logger.warning("Replacing %d existing prediction(s) in %s (overwrite is set)", len(existing), os.fspath(output_dir))


def refuse_or_log_replacement(path: str, overwrite: bool) -> None:
    """At write time: raise FileExistsError for an existing ``path`` unless ``overwrite``; log a replacement."""
    if not os.path.exists(path):
        return
    if not as_flag(overwrite):
        raise FileExistsError(
            f"prediction '{path}' already exists and is not replaced: pass another --output_dir, or --overwrite true "
            "to replace it."
        )
    logger.warning("Replacing prediction %s", path)


class SavePredictiond(SaveImaged):
    """MONAI's ``SaveImaged`` writing ``<output_dir>/<case id>.nii.gz``, refusing to replace a file.

    The file name comes from the case id in ``data[name_key]`` (see ``inference_cases``), not from the image
    file name, so same-named images in different folders get different files. MONAI Label drops ``SaveImaged``
    (and so this subclass) from a bundle's post-transforms and returns the label map itself.

    Args:
        keys: prediction key, e.g. "pred".
        output_dir: prediction folder.
        name_key: data key holding the case id. Defaults to "case".
        overwrite: replace an existing file (logged) instead of raising FileExistsError. Defaults to False.
        kwargs: other ``SaveImaged`` arguments (``output_dtype``, ``resample``, ...).
    """

    def __init__(self, keys, output_dir: str | os.PathLike = "./", name_key: str = "case", overwrite: bool = False,
                 **kwargs) -> None:
        kwargs.update(output_ext=PREDICTION_SUFFIX, output_postfix="", separate_folder=False)
        super().__init__(keys, output_dir=output_dir, **kwargs)
        self.prediction_dir, self.name_key, self.overwrite = os.fspath(output_dir), name_key, as_flag(overwrite)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        case = d.get(self.name_key)
        if case is None:
            raise KeyError(f"SavePredictiond needs a '{self.name_key}' entry to name the file; got keys {sorted(d)}.")
        path = prediction_path(self.prediction_dir, str(case))
        refuse_or_log_replacement(path, self.overwrite)
        os.makedirs(self.prediction_dir, exist_ok=True)
        for key in self.key_iterator(d):
            self.saver(d[key], filename=path[: -len(PREDICTION_SUFFIX)])
        return d
