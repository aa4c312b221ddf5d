"""The inference config of an exported bundle: MONAI transforms only, the network from the bundle's scripts/.

The template (``templates/inference.yaml``) holds the pipeline; this module fills in what the training run
knows (``model_info.json``: labels, modalities, patch size, spacing, intensity normalisation, network preset)
and writes the preprocessing chain into the template's slot: ``custom_nets.data.preprocessing.chain_config`` in
its portable form (MONAI transforms and ``$`` expressions of torch only), the chain the training cache was built
with, so the exported bundle preprocesses exactly as the project does. The normalisation in it:

* MRI: ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` (z-score of the non-zero voxels, zeros stay 0);
* CT: ``Lambdad`` clipping every channel to its window, then ``NormalizeIntensityd`` with the dataset's
  foreground mean and std per channel (``subtrahend``/``divisor``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import yaml

from custom_nets.data.preprocessing import chain_config, normalisation_config
from custom_nets.nets.resenc import PRESETS

__all__ = ["TEMPLATE", "check_model_info", "normalisation_transforms", "exported_inference_config", "network_kwargs",
           "fill_chain_slot"]

TEMPLATE = Path(__file__).resolve().parent / "templates" / "inference.yaml"
#: The template's placeholder for the preprocessing chain (and the key it refers to, dropped when filled).
_CHAIN_SLOT = {"_target_": "Compose", "transforms": "@preprocessing_chain"}
_INFO_KEYS = ("network_preset", "num_channels", "labels", "spacing", "normalisation", "patch_size")


def normalisation_transforms(normalisation: Mapping, keys: str = "image") -> list[dict]:
    """MONAI-only transform configs of the intensity normalisation (``normalisation_config``, portable form).

    Args:
        normalisation: the ``normalisation`` entry of ``model_info.json`` (see
            ``custom_nets.data.preprocessing.normalisation_config``).
        keys: image key.
    """
    return normalisation_config(normalisation, keys, portable=True)


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
    fill_chain_slot(config, ["preprocessing"], info["normalisation"], template)
    return config


def fill_chain_slot(config: dict, path: list[str], normalisation: Mapping, template: str | Path, keys="image",
                    mode="bilinear") -> None:
    """Replace the template's chain placeholder in ``config[path[0]][path[1]]...["transforms"]`` with the
    preprocessing chain (``chain_config``, portable, spacing ``@spacing``) and drop the template's
    ``preprocessing_chain`` key; in place.

    Args:
        keys, mode: the chain's keys (image first) and ``Spacingd`` modes, e.g. ``["image", "label"]`` and
            ``["bilinear", "nearest"]`` for training.
    """
    section = config
    for key in path:
        section = section[key]
    transforms = section["transforms"]
    if _CHAIN_SLOT not in transforms:
        raise ValueError(f"template {template} has no preprocessing chain slot {_CHAIN_SLOT} in {'#'.join(path)}.")
    slot = transforms.index(_CHAIN_SLOT)
    transforms[slot : slot + 1] = chain_config(keys, "@spacing", normalisation, mode=mode, portable=True)
    del config["preprocessing_chain"]
