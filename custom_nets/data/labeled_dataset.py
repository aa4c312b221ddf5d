"""The labeled-dataset layer over the datalist reader: a class table, modality names, the test list, case problems.

``read_segmentation_dataset`` reads the entries of an MSD-style ``dataset.json`` with the one datalist reader
(``custom_nets.data.datalist.read_entries``: absolute paths, the messages of ``custom_nets.data.dataset_source``)
and adds what a labeled dataset declares beyond its entries.

Accepted layout (Medical Segmentation Decathlon / nnU-Net)::

    {"name": "...",
     "modality": {"0": "t1", "1": "flair"},             # or nnU-Net v2 "channel_names"
     "labels": {"0": "background", "1": "lesion"},      # or nnU-Net v2 {"background": 0, "lesion": 1}
     "training": [{"image": ["imagesTr/a_0000.nii.gz", "imagesTr/a_0001.nii.gz"],
                   "label": "labelsTr/a.nii.gz"}, ...]}

``image`` is one file or a list of co-registered files, one per modality, stacked as channels in
list order; a single 4D file whose fourth axis holds the modalities (MSD brain tumour, prostate)
also works. Paths are relative to the folder of ``dataset.json`` unless absolute (``~`` and a
leading ``$VARIABLE`` are expanded). Class values must be the consecutive integers 0 (background),
1, ..., as nnU-Net requires.

Each case gets a ``case`` id from its label file name (``labelsTr/a.nii.gz`` -> ``a``;
``custom_nets.data.datalist.entry_case_ids``), which names it in every message and in the splits.

Held-out cases (MSD's ``test`` list): labeled entries of ``test`` (``{"image": ..., "label": ...}``)
are read with the training cases, named in ``SegmentationDataset.test_cases`` and become the test
split (``make_splits(..., test_cases=...)``), so a dataset with one training case and a labeled test
list fine-tunes and evaluates without a hand-written split file. Test entries without a label (MSD
ships bare image paths) cannot be scored: they are left out with one warning that names their
count; ``bundles/s3d_finetune/configs/inference.yaml --input_dir <dataset.json>`` segments them.

Problems of a single case (a missing file, a missing modality, no label) are collected per case:
``load_segmentation_datalist`` raises on them, because it is the call that checks a dataset;
``prepare_segmentation_dataset`` skips such cases with a logged reason instead, so one incomplete
case does not block a run. Problems of the whole file (unreadable JSON, no ``labels`` declaration,
no entries) always raise.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from custom_nets.data.datalist import entry_case_ids, entry_images, read_entries, read_entry
from custom_nets.data.dataset_source import entry_list, entry_where, read_json, source_path
from custom_nets.data.paths import input_problem, read_fix
from custom_nets.data.quality import is_nibabel_file

__all__ = ["CaseProblem", "SegmentationDataset", "TEST_KEY", "load_segmentation_datalist", "read_segmentation_dataset"]

logger = logging.getLogger(__name__)

_DATASET_FILE = "dataset.json"

#: The MSD list of held-out cases.
TEST_KEY = "test"

_LABELS_HINT = '"labels": {"0": "background", "1": "<name of class 1>", ...}'

#: What ``read_segmentation_dataset`` reads, for the fixes of its messages.
_ACCEPTED = (
    "the MSD-style dataset.json of a labeled dataset (with 'labels' and a 'training' list of {'image', 'label'} "
    "entries) or the folder that holds it"
)


@dataclass(frozen=True)
class CaseProblem:
    """Why one case cannot be used. ``code`` is ``missing``, ``permission_denied``, ``missing_modality`` or
    ``extra_modality``."""

    case: str
    code: str
    message: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class SegmentationDataset:
    """A parsed labeled dataset.

    Attributes:
        path: the ``dataset.json`` that was read.
        entries: usable cases ``{"case", "image": [absolute paths], "label": absolute path, ...}``
            (extra keys of the JSON entry are kept).
        labels: class value -> name, values 0..K-1.
        modalities: channel names in channel order (``channel_0``... when undeclared).
        problems: cases left out of ``entries``, with the reason.
        test_cases: the ``case`` ids of ``entries`` that come from the labeled ``test`` list.
        unlabeled_test: number of ``test`` entries without a label (left out).
    """

    path: Path
    entries: list[dict]
    labels: dict[int, str]
    modalities: list[str]
    problems: list[CaseProblem] = field(default_factory=list)
    test_cases: list[str] = field(default_factory=list)
    unlabeled_test: int = 0


def _dataset_path(source) -> Path:
    """The ``dataset.json`` that ``source`` (the file or its folder) names."""
    path = source_path(source, _ACCEPTED)
    if path.is_dir():
        return source_path(path / _DATASET_FILE, _ACCEPTED)
    return path


def _int_key(text, what: str, path: Path) -> int:
    try:
        return int(str(text).strip())
    except ValueError as err:
        raise ValueError(
            f"dataset '{path}' {what} key {text!r} is not an integer index: number the keys \"0\", \"1\", ..."
        ) from err


def parse_labels(data: dict, path: Path) -> dict[int, str]:
    """Class table ``{value: name}`` from an MSD (``{"0": "background"}``) or nnU-Net v2
    (``{"background": 0}``) ``labels`` declaration."""
    raw = data.get("labels")
    if not raw:
        raise ValueError(
            f"dataset '{path}' has no 'labels' declaration: add {_LABELS_HINT} listing every value that "
            "occurs in the label files"
        )
    if not isinstance(raw, dict):
        raise ValueError(f"dataset '{path}' 'labels' is a {type(raw).__name__}: use {_LABELS_HINT}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        table = {int(v): str(k) for k, v in raw.items()}  # nnU-Net v2: name -> value
    elif all(str(k).strip().lstrip("-").isdigit() for k in raw):
        table = {_int_key(k, "'labels'", path): str(v) for k, v in raw.items()}
    else:
        raise ValueError(
            f"dataset '{path}' 'labels' {raw!r} is neither value -> name nor name -> value with integer values "
            f"(region-based nnU-Net labels are not supported): use {_LABELS_HINT}"
        )
    values = sorted(table)
    if values != list(range(len(values))) or len(values) < 2:
        raise ValueError(
            f"dataset '{path}' declares label values {values}: they must be the consecutive integers 0 (background), "
            "1, ..., K-1 with at least one foreground class; remap the label files and the declaration"
        )
    return {value: table[value] for value in values}


def parse_modalities(data: dict, path: Path) -> list[str] | None:
    """Channel names from ``modality`` (MSD) or ``channel_names`` (nnU-Net v2), or None if undeclared."""
    raw = data.get("modality", data.get("channel_names"))
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise ValueError(
            f"dataset '{path}' 'modality' is a {type(raw).__name__}: use {{\"0\": \"t1\", \"1\": \"flair\"}}"
        )
    table = {_int_key(k, "'modality'", path): str(v) for k, v in raw.items()}
    if sorted(table) != list(range(len(table))):
        raise ValueError(
            f"dataset '{path}' 'modality' keys {sorted(table)} are not 0, 1, ...: number the channels consecutively"
        )
    return [table[i] for i in range(len(table))]


def file_channels(path: str) -> int:
    """Channels stored in one image file: the 4th axis of a 4D NIfTI, else 1 (header only)."""
    if not is_nibabel_file(path):
        return 1
    dims = list(nib.load(path).shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    return int(dims[3]) if len(dims) == 4 else 1


def _channel_count(images: list[str], expected: int) -> int:
    """Number of channels a case provides: its file count, or the header channels of 4D files."""
    if len(images) == expected or not all(os.path.isfile(p) for p in images):
        return len(images)
    try:
        return sum(file_channels(p) for p in images)
    except Exception:  # noqa: BLE001 - an unreadable header is reported when the case is preprocessed
        return len(images)


def _modality_problem(case: str, count: int, expected: int, names: list[str] | None) -> CaseProblem | None:
    if count == expected:
        return None
    others = f"the dataset declares {expected} modalities ({', '.join(names)})" if names else (
        f"the other cases have {expected}"
    )
    code = "missing_modality" if count < expected else "extra_modality"
    return CaseProblem(case, code, f"case '{case}' has {count} image channel(s) but {others}")


def _file_problem(case: str, images: list[str], label: str | None, names: list[str]) -> CaseProblem | None:
    files = [(names[c] if c < len(names) else f"channel {c}", "image", image) for c, image in enumerate(images)]
    files += [("label", "", label)] if label is not None else []
    for name, kind, file in files:
        what = f"{name} {kind} file".replace("  ", " ")
        problem = input_problem(file)
        if problem and problem.startswith("permission_denied"):
            message = f"case '{case}': {what} '{file}' cannot be read by this user; {read_fix(file)}"
            return CaseProblem(case, "permission_denied", message)
        if problem:
            state = "is a folder, not a file" if "folder" in problem else "does not exist"
            return CaseProblem(case, "missing", f"case '{case}': {what} '{file}' {state}")
    return None


def _labeled_test_entries(data: dict, path: Path) -> tuple[list[dict], int]:
    """The labeled entries of the ``test`` list (read as the ``training`` ones) and the number of unlabeled ones."""
    raw = entry_list(data, TEST_KEY, path) if data.get(TEST_KEY) is not None else []
    labeled = [
        read_entry(item, path.parent, entry_where(path, TEST_KEY, index))
        for index, item in enumerate(raw)
        if isinstance(item, dict) and item.get("label") is not None
    ]
    unlabeled = len(raw) - len(labeled)
    if unlabeled:
        logger.warning(
            "dataset '%s' lists %d '%s' image(s) without a label: they cannot be scored, so fine-tuning and "
            "evaluation leave them out; segment them with bundles/s3d_finetune/configs/inference.yaml "
            "--input_dir %s", path, unlabeled, TEST_KEY, path,
        )
    return labeled, unlabeled


def _check_held_out(training: list[dict], test: list[dict], path: Path) -> None:
    """A labeled test case must not also be a training case."""
    sources = [entry.get("label") or entry_images(entry)[0] for entry in training]
    test_sources = [entry["label"] for entry in test]
    both = sorted(set(sources) & set(test_sources))
    if both:
        raise ValueError(
            f"dataset '{path}' lists '{both[0]}' under both 'training' and '{TEST_KEY}': a held-out case must not "
            f"be trained on; remove it from one of the lists ({len(both)} such case(s))"
        )


def read_segmentation_dataset(source, key: str = "training", include_test: bool = True) -> SegmentationDataset:
    """Parse a labeled dataset, collecting per-case problems instead of raising on them.

    Args:
        source: an MSD-style ``dataset.json`` or the folder that holds it.
        key: the entry list to read (``training``; ``test`` lists may have no labels).
        include_test: also read the labeled entries of the ``test`` list (held-out cases, named in
            ``test_cases``); unlabeled ones are counted in ``unlabeled_test`` with a warning.

    Raises:
        FileNotFoundError: ``source`` or its ``dataset.json`` does not exist.
        PermissionError: this user may not read ``dataset.json``.
        ValueError: invalid JSON, no ``labels`` declaration, no ``key`` list, a malformed entry, a
            case listed under both ``training`` and ``test``.
    """
    path = _dataset_path(source)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"dataset '{path}' holds a JSON {type(data).__name__}: it must be an MSD-style dict with 'labels' and "
            f"a '{key}' list"
        )
    labels = parse_labels(data, path)
    declared = parse_modalities(data, path)
    training = read_entries(data, key, path, path.parent)
    test, unlabeled_test = _labeled_test_entries(data, path) if include_test and key != TEST_KEY else ([], 0)
    _check_held_out(training, test, path)
    ids = entry_case_ids(training, test)  # the one rule of the project, shared with inference and evaluation
    labeled = any(entry.get("label") is not None for entry in training)
    if declared is not None:
        expected = len(declared)
    else:
        counts = Counter(len(entry_images(entry)) for entry in training)
        expected = max(counts, key=lambda n: (counts[n], n))
    names = declared or [f"channel_{i}" for i in range(expected)]

    entries, problems, held_out = [], [], []
    for index, (read, case) in enumerate(zip(training + test, ids)):
        images, label = entry_images(read), read.get("label")
        extra = {k: v for k, v in read.items() if k not in ("image", "label", "case")}
        problem = None
        if labeled and label is None:
            problem = CaseProblem(case, "missing", f"case '{case}' has no 'label': add \"label\": <label file>")
        problem = problem or _file_problem(case, images, label, names)
        problem = problem or _modality_problem(case, _channel_count(images, expected), expected, declared)
        if problem:
            problems.append(problem)
            continue
        entry = {"case": case, "image": images, **extra}
        if label is not None:
            entry["label"] = label
        entries.append(entry)
        if index >= len(training):
            held_out.append(case)
    logger.info(
        "Read %d cases (%d with problems, %d held out in the '%s' list) from %s",
        len(entries), len(problems), len(held_out), TEST_KEY, path,
    )
    return SegmentationDataset(path, entries, labels, names, problems, held_out, unlabeled_test)


def load_segmentation_datalist(
    source, key: str = "training", strict: bool = True, include_test: bool = True
) -> tuple[list[dict], dict[int, str]]:
    """Load and check the cases of a labeled MSD-style dataset.

    Args:
        source: an MSD-style ``dataset.json`` or the folder that holds it (see the module docstring).
        key: the entry list to read.
        strict: raise on the first case with a problem (default); ``False`` leaves such cases
            out with a logged warning, as ``prepare_segmentation_dataset`` does.
        include_test: append the labeled entries of the ``test`` list (held-out cases), so that a
            split's test cases are found among the entries.

    Returns:
        ``(entries, labels)``: entries ``{"case", "image": [absolute paths, one per modality file],
        "label": absolute path}`` in file order (``key`` list, then the labeled ``test`` list), and
        the class table ``{0: "background", ...}``.

    Raises:
        FileNotFoundError: the dataset or a file of some case does not exist (the message names
            the case and the file).
        ValueError: no ``labels`` declaration, a case misses a modality or its label, or the file
            is malformed; the message says what to change.

    Per-case problems raise only with ``strict=True``; problems of the whole file always raise.
    """
    dataset = read_segmentation_dataset(source, key, include_test)
    if dataset.problems and not strict:
        for problem in dataset.problems:
            logger.warning("Leaving out case '%s': %s", problem.case, problem.reason)
    elif dataset.problems:
        first = dataset.problems[0]
        more = len(dataset.problems) - 1
        others = ", ".join(p.case for p in dataset.problems[1:6])
        suffix = f" ({more} other case(s) have problems too: {others})" if more else ""
        error = {"missing": FileNotFoundError, "permission_denied": PermissionError}.get(first.code, ValueError)
        if first.code == "missing" and "does not exist" not in first.message:
            error = ValueError
        raise error(
            f"dataset '{dataset.path}': {first.message}{suffix}; fix the entry in dataset.json or remove the case"
        )
    return dataset.entries, dataset.labels
