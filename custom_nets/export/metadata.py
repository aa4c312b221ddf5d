"""Model-zoo ``metadata.json`` of an exported bundle: built from the bundle's own metadata and the run, checked
against MONAI's model-zoo metadata schema committed in ``schema/`` (no download).

``schema/meta_schema_20240725.json`` is an unchanged copy of MONAI's ``meta_schema_20240725.json`` (Apache-2.0,
Project-MONAI; the file the model zoo's ``schema`` URL points at). ``monai.bundle verify_metadata`` uses it when
given ``--filepath`` to that copy: the schema is downloaded only when the file is missing.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Mapping

__all__ = [
    "SCHEMA_FILE",
    "SCHEMA_URL",
    "VERSION_PATTERN",
    "check_version",
    "zoo_metadata",
    "validate_metadata",
]

SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "meta_schema_20240725.json"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: Model-zoo bundle versions are MAJOR.MINOR.PATCH.
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
#: What an exported bundle needs besides monai and torch (distribution name -> import name is not needed here).
REQUIRED_PACKAGES = ("nibabel", "pytorch-ignite", "pyyaml", "fire")


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


def zoo_metadata(
    source: Mapping,
    info: Mapping,
    version: str,
    changelog: str,
    name: str | None = None,
) -> dict:
    """The exported bundle's metadata.

    Args:
        source: the training bundle's ``configs/metadata.json`` (descriptions, references, licence text).
        info: the run's ``model_info.json`` (channels, modalities, labels, patch size).
        version: the release version, MAJOR.MINOR.PATCH.
        changelog: one line describing this version (added in front of the source's changelog).
        name: human-readable bundle name. Defaults to the source's.

    Returns:
        A metadata dict: versions of the packages installed now, the network's input (``in_channels`` x patch)
        and output (one logit channel per label) described in ``network_data_format``.
    """
    import monai
    import numpy
    import torch

    check_version(version)
    meta = copy.deepcopy(dict(source))
    meta["schema"] = SCHEMA_URL
    meta["version"] = version
    history = {k: v for k, v in (meta.get("changelog") or {}).items() if k != version}
    meta["changelog"] = {version: changelog, **history}
    meta["monai_version"] = monai.__version__.split("+")[0]
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    meta["required_packages_version"] = {p: _installed(p) for p in REQUIRED_PACKAGES}
    meta.pop("optional_packages_version", None)
    if name:
        meta["name"] = name
    labels = {str(k): str(v) for k, v in sorted(info["labels"].items(), key=lambda kv: int(kv[0]))}
    modalities = list(info.get("modalities") or [f"channel_{c}" for c in range(int(info["num_channels"]))])
    patch = [int(s) for s in info["patch_size"]]
    meta["label_classes"] = ", ".join(f"{k} = {v}" for k, v in labels.items())
    meta["pred_classes"] = meta["label_classes"]
    meta["image_classes"] = (
        ", ".join(f"{c} = {m}" for c, m in enumerate(modalities))
        + f" (one channel per modality, intensity-normalised as in training, {info['spacing']} mm)"
    )
    meta["network_data_format"] = {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": str((info.get("normalisation") or {}).get("modality", "mri")).upper().replace("MRI", "MR"),
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
    return meta


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
