"""The inference config of an exported bundle: MONAI transforms only, the network from the bundle's scripts/.

The template (``templates/inference.yaml``) holds the pipeline; this module fills in what the training run
knows (``model_info.json``: labels, modalities, patch size, spacing, intensity normalisation, network preset)
and turns the project's ``NormaliseIntensityd`` into MONAI transforms with the same result:

* MRI: ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` (z-score of the non-zero voxels, zeros stay 0);
* CT: ``Lambdad`` clipping every channel to its window, then ``NormalizeIntensityd`` with the dataset's
  foreground mean and std per channel (``subtrahend``/``divisor``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import yaml

from custom_nets.nets.resenc import PRESETS

__all__ = ["TEMPLATE", "MIN_STD", "check_model_info", "normalisation_transforms", "exported_inference_config", "network_kwargs",
           "fill_normalisation_slot"]

TEMPLATE = Path(__file__).resolve().parent / "templates" / "inference.yaml"
#: Smallest CT standard deviation divided by (as ``custom_nets.data.ct_normalisation``).
MIN_STD = 1e-8
_NORMALISATION_SLOT = {"_target_": "Compose", "transforms": "@normalisation"}
_INFO_KEYS = ("network_preset", "num_channels", "labels", "spacing", "normalisation", "patch_size")


def normalisation_transforms(normalisation: Mapping, keys: str = "image") -> list[dict]:
    """MONAI transform configs equal to ``custom_nets.data.patches.NormaliseIntensityd(keys, normalisation)``.

    Args:
        normalisation: ``{"modality": "mri"}`` or ``{"modality": "ct", "statistics": {"channels": [{"low",
            "high", "mean", "std"}, ...]}}`` (the ``normalisation`` entry of ``model_info.json``). MRI takes an
            optional ``"nonzero": false`` (z-score over every voxel, nnU-Net's ZScoreNormalization without
            ``use_mask_for_norm``; used by ``nnunet_import``).
        keys: image key.

    Returns:
        A list of ``{"_target_": ..., ...}`` transform configs.
    """
    modality = normalisation.get("modality") if isinstance(normalisation, Mapping) else None
    if modality == "mri":
        nonzero = bool(normalisation.get("nonzero", True))
        return [{"_target_": "NormalizeIntensityd", "keys": keys, "nonzero": nonzero, "channel_wise": True}]
    if modality != "ct":
        raise ValueError(
            f"normalisation must name modality 'mri' or 'ct', got {normalisation!r}; export from a run whose "
            "model_info.json was written by the fine-tuning bundle."
        )
    channels = (normalisation.get("statistics") or {}).get("channels")
    if not channels:
        raise ValueError("CT normalisation needs the dataset statistics ('statistics': {'channels': [...]}).")
    lows = [float(c["low"]) for c in channels]
    highs = [float(c["high"]) for c in channels]
    view = "reshape(-1, *([1] * (x.ndim - 1)))"
    clip = (
        f"$lambda x: torch.clamp(x, torch.tensor({lows}, dtype=x.dtype, device=x.device).{view}, "
        f"torch.tensor({highs}, dtype=x.dtype, device=x.device).{view})"
    )
    return [
        {"_target_": "Lambdad", "keys": keys, "func": clip},
        {
            "_target_": "NormalizeIntensityd",
            "keys": keys,
            "subtrahend": [float(c["mean"]) for c in channels],
            "divisor": [max(float(c["std"]), MIN_STD) for c in channels],
            "channel_wise": True,
        },
    ]


def network_kwargs(preset: str) -> dict:
    """``scripts/resenc.py`` ResEncUNet arguments of a preset (features, strides, blocks, decoder convs)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset '{preset}' in model_info.json; choose one of {sorted(PRESETS)}.")
    p = PRESETS[preset]
    return {
        "features": [int(v) for v in p["features"]],
        "strides": [int(v) for v in p["strides"]],
        "blocks_per_stage": [int(v) for v in p["blocks_per_stage"]],
        "decoder_convs_per_stage": int(p["decoder_convs_per_stage"]),
    }


def check_model_info(info: Mapping, source: str = "model_info.json") -> None:
    """Raise a ValueError naming the missing entries of a fine-tuning run's ``model_info.json``."""
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(
            f"{source} lacks {missing}: export a run of the fine-tuning bundle (it writes model_info.json beside "
            "models/model.pt), or write those entries by hand."
        )


def exported_inference_config(info: Mapping, template: str | Path = TEMPLATE) -> dict:
    """The exported bundle's inference config as a dict (dump it as YAML and JSON).

    Args:
        info: the run's ``model_info.json`` content.
        template: the inference template. Defaults to ``TEMPLATE``.

    Returns:
        The template with the model section filled and the normalisation transforms in the preprocessing.
    """
    check_model_info(info)
    config = copy.deepcopy(yaml.safe_load(Path(template).read_text(encoding="utf-8")))
    labels = {str(k): str(v) for k, v in sorted(info["labels"].items(), key=lambda kv: int(kv[0]))}
    config.update(
        labels=labels,
        modalities=list(info.get("modalities") or [f"channel_{c}" for c in range(int(info["num_channels"]))]),
        in_channels=int(info["num_channels"]),
        patch_size=[int(s) for s in info["patch_size"]],
        spacing=[float(s) for s in info["spacing"]],
    )
    config["network_def"].update(network_kwargs(info["network_preset"]))
    fill_normalisation_slot(config, ["preprocessing"], info["normalisation"], template)
    return config


def fill_normalisation_slot(config: dict, path: list[str], normalisation: Mapping, template: str | Path) -> None:
    """Replace the template's normalisation placeholder in ``config[path[0]][path[1]]...["transforms"]`` with the
    model's transforms (``normalisation_transforms``) and drop the template's ``normalisation`` key; in place."""
    section = config
    for key in path:
        section = section[key]
    transforms = section["transforms"]
    if _NORMALISATION_SLOT not in transforms:
        raise ValueError(f"template {template} has no normalisation slot {_NORMALISATION_SLOT} in {'#'.join(path)}.")
    slot = transforms.index(_NORMALISATION_SLOT)
    transforms[slot : slot + 1] = normalisation_transforms(normalisation)
    del config["normalisation"]
