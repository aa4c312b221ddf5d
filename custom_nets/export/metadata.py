"""Model-zoo ``metadata.json`` of an exported bundle: built from the bundle's own metadata and the run, checked
against MONAI's model-zoo metadata schema committed in ``schema/`` (no download).

What the run knows replaces the training bundle's generic text: ``name``, ``task`` and ``description`` name the
exported network (preset, widths, patch size) and its classes, and ``eval_metrics`` holds the scores the run's
evaluation measured (``evaluation/summary.json``, written by ``bundles/s3d_finetune/configs/evaluate.yaml``) as
numbers, as the model zoo stores them: ``{"mean_dice": 0.81, "mean_nsd": 0.9, "dice_lesion": 0.7, ...}``. A run
without an evaluation summary gets an empty ``eval_metrics`` and a description that says it was not evaluated.

``schema/meta_schema_20240725.json`` is an unchanged copy of MONAI's ``meta_schema_20240725.json`` (Apache-2.0,
Project-MONAI; the file the model zoo's ``schema`` URL points at). ``monai.bundle verify_metadata`` uses it when
given ``--filepath`` to that copy: the schema is downloaded only when the file is missing.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Mapping

from custom_nets.evaluation.metrics import METRICS

__all__ = [
    "SCHEMA_FILE",
    "SCHEMA_URL",
    "SUPPORTED_APPS",
    "VERSION_PATTERN",
    "check_version",
    "eval_metrics_from_summary",
    "network_title",
    "zoo_metadata",
    "validate_metadata",
]

SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "meta_schema_20240725.json"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: Model-zoo bundle versions are MAJOR.MINOR.PATCH.
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
#: What an exported bundle needs besides monai and torch (distribution name -> import name is not needed here).
REQUIRED_PACKAGES = ("nibabel", "pytorch-ignite", "pyyaml", "fire")
#: Applications the exported bundle is tested with (name -> version), the model zoo's ``supported_apps``.
#: MONAI Label serves it through ``BundleInferTask`` (tests/export/test_monailabel_serving.py, monailabel 0.8.5).
SUPPORTED_APPS = {"monai-label": "0.8.5"}
#: Display names of the presets that are nnU-Net's (the others are this project's small test networks).
_PRESET_TITLES = {"resenc_m": "ResEnc-M", "resenc_l": "ResEnc-L", "resenc_xl": "ResEnc-XL"}
_DIGITS = 4
#: The model zoo's key and text for a registered metric whose own name differs (``mean_dice``, ``dice_<class>``,
#: "mean Dice"); every other metric of ``METRICS`` keeps its name and display name.
_ZOO_NAMES = {"dsc": ("dice", "Dice")}


def check_version(version: str, what: str = "version") -> str:
    """Return ``version`` if it is MAJOR.MINOR.PATCH (the model zoo's form), else raise a ValueError saying so."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ValueError(f"{what} must look like MAJOR.MINOR.PATCH (e.g. '0.1.0'), got {version!r}.")
    return version


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _metric_key(metric: str, class_name: str) -> str:
    return f"{metric}_{'_'.join(str(class_name).split())}"


def _zoo_names() -> list[tuple[str, str, str, str]]:
    """``(metric name, zoo key, zoo text, aggregation)`` of every registered metric: ``("dsc", "dice", "Dice",
    "mean")``, ``("nsd", "nsd", "NSD", "mean")``."""
    return [(m.name, *_ZOO_NAMES.get(m.name, (m.name, m.display_name)), m.aggregation) for m in METRICS]


def eval_metrics_from_summary(summary: Mapping, labels: Mapping, source: str = "summary.json") -> dict:
    """The model zoo's ``eval_metrics`` (numbers only) from an evaluation ``summary.json``.

    Args:
        summary: the dict ``custom_nets.evaluation.evaluate_folder`` writes as ``summary.json``: ``mean_dsc``,
            ``mean_nsd``, ``classes`` and ``per_class[name]["dsc" | "nsd"]["mean"]`` (null where undefined); one
            ``mean_<metric>`` per metric of ``custom_nets.evaluation.metrics.METRICS``.
        labels: the exported model's ``{value: name}`` (background included).
        source: the file the summary came from, for messages.

    Returns:
        ``{"mean_dice", "mean_nsd", "dice_<class>", "nsd_<class>"}`` (``mean_<metric>`` and ``<metric>_<class>``
        of every registered metric) rounded to 4 digits, in label order; a score that is undefined (a class absent
        from every reference and prediction) is left out, not set to 0.

    Raises:
        ValueError: the file is not such a summary, or it scores classes the model does not predict (it
            evaluates another model).
    """
    required = [f"mean_{name}" for name, _, _, _ in _zoo_names()] + ["classes", "per_class"]
    missing = [k for k in required if k not in summary]
    if missing:
        raise ValueError(
            f"{source} lacks {missing}: it is not an evaluation summary of custom_nets.evaluation (written by "
            "bundles/s3d_finetune/configs/evaluate.yaml). Pass the right file as evaluation_summary, or "
            "evaluation_summary=False to export without scores."
        )
    names = [str(v) for _, v in sorted(labels.items(), key=lambda kv: int(kv[0])) if int(_) != 0]
    foreign = [c for c in summary["classes"] if c not in names]
    if foreign:
        raise ValueError(
            f"{source} scores classes {foreign} that the exported model does not predict ({names}): it evaluates "
            "another model. Pass the summary of this run's evaluation as evaluation_summary, or "
            "evaluation_summary=False to export without scores."
        )
    metrics = {}
    for field, key, _, _ in _zoo_names():
        value = summary[f"mean_{field}"]
        if value is not None and value == value:
            metrics[f"mean_{key}"] = round(float(value), _DIGITS)
    for field, metric, _, aggregation in _zoo_names():
        for name in names:
            value = ((summary["per_class"].get(name) or {}).get(field) or {}).get(aggregation)
            if value is not None and value == value:
                metrics[_metric_key(metric, name)] = round(float(value), _DIGITS)
    return metrics


def network_title(info: Mapping) -> str:
    """``"ResEnc-L U-Net"`` for nnU-Net's presets, ``"ResEnc U-Net (preset 'demo')"`` for the others."""
    preset = str(info["network_preset"])
    return f"{_PRESET_TITLES[preset]} U-Net" if preset in _PRESET_TITLES else f"ResEnc U-Net (preset '{preset}')"


def _evaluation_sentence(summary: Mapping | None, metrics: Mapping) -> str:
    if summary is None:
        return "No evaluation scores were given at export, so eval_metrics is empty."
    tolerances = sorted({float(t) for t in (summary.get("tolerance_mm") or {}).values()})
    tolerance = f"{tolerances[0]:g} mm" if len(tolerances) == 1 else "per-class tolerances"
    scores = ", ".join(
        f"mean {text} {metrics[f'mean_{key}']:.4f}" for _, key, text, _ in _zoo_names() if f"mean_{key}" in metrics
    )
    missing = int(summary.get("n_missing") or 0)
    unscored = f"; {missing} case(s) without prediction scored 0" if missing else ""
    return (
        f"Evaluated on {summary.get('n_cases')} held-out case(s): {scores or 'no defined score'} "
        f"(NSD tolerance {tolerance}{unscored})."
    )


def zoo_metadata(
    source: Mapping,
    info: Mapping,
    version: str,
    changelog: str,
    name: str | None = None,
    summary: Mapping | None = None,
    summary_source: str = "summary.json",
) -> dict:
    """The exported bundle's metadata.

    Args:
        source: the training bundle's ``configs/metadata.json`` (authors, references, intended use).
        info: the run's ``model_info.json`` (preset, channels, modalities, labels, patch size, spacing, schedule).
        version: the release version, MAJOR.MINOR.PATCH.
        changelog: one line describing this version (added in front of the source's changelog).
        name: human-readable bundle name. Defaults to ``"<network> segmentation of <classes> (<patch>^3 patches)"``.
        summary: the run's evaluation ``summary.json`` (see ``eval_metrics_from_summary``); None: not evaluated,
            ``eval_metrics`` is empty and the description says so.
        summary_source: the file ``summary`` came from, for messages.

    Returns:
        A metadata dict: versions of the packages installed now, name/task/description of the exported network,
        the measured ``eval_metrics``, ``supported_apps`` (MONAI Label), the network's input (``in_channels`` x
        patch) and output (one logit channel per label) described in ``network_data_format``.
    """
    check_version(version)
    meta = copy.deepcopy(dict(source))
    _set_release(meta, version, changelog)
    _set_environment(meta)
    labels, modalities, patch = _run_io(info)
    _describe(meta, info, labels, modalities, patch, name, summary, summary_source)
    _set_classes(meta, info, labels, modalities)
    meta["network_data_format"] = _network_data_format(info, labels, modalities, patch)
    return meta


def _set_release(meta: dict, version: str, changelog: str) -> None:
    """Point ``schema`` at the model-zoo schema, set ``version`` and put it first in ``changelog`` (in place).

    An entry the source already has for ``version`` is replaced, so exporting the same version again lists it
    once.
    """
    meta["schema"] = SCHEMA_URL
    meta["version"] = version
    history = {k: v for k, v in (meta.get("changelog") or {}).items() if k != version}
    meta["changelog"] = {version: changelog, **history}


def _set_environment(meta: dict) -> None:
    """Record the versions of monai, torch, numpy and ``REQUIRED_PACKAGES`` installed now and ``supported_apps``
    (in place), and drop the source's ``optional_packages_version``: the export needs no optional package."""
    import monai
    import numpy
    import torch

    meta["monai_version"] = monai.__version__.split("+")[0]
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    meta["required_packages_version"] = {p: _installed(p) for p in REQUIRED_PACKAGES}
    meta.pop("optional_packages_version", None)
    meta["supported_apps"] = dict(SUPPORTED_APPS)


def _run_io(info: Mapping) -> tuple[dict[str, str], list[str], list[int]]:
    """``(labels, modalities, patch)`` of the run: ``{"0": "background", ...}`` in label order, one modality name
    per input channel (``channel_<c>`` when ``model_info.json`` names none), the patch size in voxels."""
    labels = {str(k): str(v) for k, v in sorted(info["labels"].items(), key=lambda kv: int(kv[0]))}
    modalities = list(info.get("modalities") or [f"channel_{c}" for c in range(int(info["num_channels"]))])
    patch = [int(s) for s in info["patch_size"]]
    return labels, modalities, patch


def _imaging_modality(info: Mapping) -> str:
    """The run's imaging modality in capitals (``"MRI"``, ``"CT"``), read from its intensity normalisation."""
    return str((info.get("normalisation") or {}).get("modality", "mri")).upper()


def _set_classes(meta: dict, info: Mapping, labels: Mapping, modalities: list[str]) -> None:
    """Fill ``label_classes``, ``pred_classes`` (``"0 = background, 1 = lesion"``) and ``image_classes`` (in place)."""
    meta["label_classes"] = ", ".join(f"{k} = {v}" for k, v in labels.items())
    meta["pred_classes"] = meta["label_classes"]
    meta["image_classes"] = (
        ", ".join(f"{c} = {m}" for c, m in enumerate(modalities))
        + f" (one channel per modality, intensity-normalised as in training, {info['spacing']} mm)"
    )


def _network_data_format(info: Mapping, labels: Mapping, modalities: list[str], patch: list[int]) -> dict:
    """``network_data_format``: the input patch (one channel per modality) and the output (one logit channel per
    label, same patch), as the model zoo describes a network; the modality "MRI" is written "MR"."""
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": _imaging_modality(info).replace("MRI", "MR"),
                "num_channels": int(info["num_channels"]),
                "spatial_shape": patch,
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": True,
                "channel_def": {str(c): m for c, m in enumerate(modalities)},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": len(labels),
                "spatial_shape": patch,
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": True,
                "channel_def": labels,
            }
        },
    }


def _describe(meta, info, labels, modalities, patch, name, summary, summary_source) -> None:
    """Fill ``name``, ``task``, ``description`` and ``eval_metrics`` from the run (in place)."""
    from custom_nets.nets.resenc import PRESETS

    network = network_title(info)
    foreground = ", ".join(v for k, v in labels.items() if int(k) != 0)
    patch_text = f"{patch[0]}^{len(patch)}" if len(set(patch)) == 1 else "x".join(map(str, patch))
    modality = _imaging_modality(info)
    spacing = "x".join(f"{float(s):g}" for s in info["spacing"])
    preset = PRESETS.get(str(info["network_preset"]))
    layout = f" with {len(preset['features'])} stages of {list(preset['features'])} features" if preset else ""
    pretrained = info.get("pretrained_checkpoint")
    origin = (
        f"fine-tuned from pre-trained weights ({os.path.basename(str(pretrained))})" if pretrained
        else "trained from scratch"
    )
    schedule = f" with the '{info['schedule']}' schedule" if info.get("schedule") else ""
    metrics = eval_metrics_from_summary(summary, labels, summary_source) if summary is not None else {}
    meta["name"] = name or f"{network} segmentation of {foreground} ({patch_text} patches)"
    meta["task"] = f"3D segmentation of {foreground} in {modality} ({', '.join(modalities)})"
    meta["description"] = (
        f"{network}: nnU-Net's Residual-Encoder U-Net{layout}, {origin}{schedule}. It segments {foreground} "
        f"from {len(modalities)} channel(s) ({', '.join(modalities)}) resampled to {spacing} mm, with Gaussian "
        f"sliding windows of {patch_text} voxels and test-time mirroring (by default on a GPU only). "
        + _evaluation_sentence(summary, metrics)
    )
    meta["eval_metrics"] = metrics


def validate_metadata(meta: Mapping, source: str = "metadata.json", version: str | None = None) -> None:
    """Check metadata against the committed model-zoo schema and, optionally, an expected version.

    Args:
        meta: the metadata dict.
        source: the file it came from, for messages.
        version: the version it must carry (e.g. the one in the zip name or the one asked for).

    Raises:
        ValueError: a schema violation (the message names the entry and the rule) or a version that is not
            MAJOR.MINOR.PATCH, not ``version``, or missing from the changelog.
    """
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(dict(meta)), key=lambda e: list(e.path))
    if errors:
        shown = "; ".join(f"{'/'.join(map(str, e.path)) or '<top level>'}: {e.message}" for e in errors[:5])
        raise ValueError(
            f"{source} does not follow the model-zoo metadata schema ({SCHEMA_FILE.name}): {shown}. Fix these "
            "entries (or export the bundle again)."
        )
    found = meta["version"]
    check_version(found, f"{source} 'version'")
    if version is not None and found != version:
        raise ValueError(
            f"{source} says version {found!r} but {version!r} was expected (zip name / requested version): the "
            "file belongs to another release. Download the release you want again, or export with the right "
            "--version."
        )
    if found not in (meta.get("changelog") or {}):
        raise ValueError(f"{source} version {found!r} has no changelog entry; add one ('changelog': {{{found!r}: ...}}).")
