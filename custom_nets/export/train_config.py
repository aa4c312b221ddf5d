"""The train config of an exported bundle: fine-tune its network further with MONAI components only.

The template (``templates/train.yaml``) holds the recipe; this module fills in the same model section as the
inference config (``model_info.json``: labels, modalities, channels, patch size, spacing, preset widths) and the
same preprocessing chain (``inference_config.fill_chain_slot``), so that training patches are preprocessed exactly
as the images the bundle segments.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import yaml

from custom_nets.export.inference_config import check_model_info, fill_chain_slot, network_kwargs

__all__ = ["TRAIN_TEMPLATE", "exported_train_config"]

TRAIN_TEMPLATE = Path(__file__).resolve().parent / "templates" / "train.yaml"


def exported_train_config(info: Mapping, template: str | Path = TRAIN_TEMPLATE) -> dict:
    """The exported bundle's train config as a dict (dump it as YAML and JSON).

    Args:
        info: the run's ``model_info.json`` content.
        template: the train template. Defaults to ``TRAIN_TEMPLATE``.

    Returns:
        The template with the model section filled and the preprocessing chain in ``train#preprocessing``.

    Raises:
        ValueError: ``info`` lacks entries, names an unknown preset or normalisation, or the template has no
            preprocessing chain slot.
    """
    check_model_info(info)
    config = copy.deepcopy(yaml.safe_load(Path(template).read_text(encoding="utf-8")))
    config.update(
        labels={str(k): str(v) for k, v in sorted(info["labels"].items(), key=lambda kv: int(kv[0]))},
        modalities=list(info.get("modalities") or [f"channel_{c}" for c in range(int(info["num_channels"]))]),
        in_channels=int(info["num_channels"]),
        patch_size=[int(s) for s in info["patch_size"]],
        spacing=[float(s) for s in info["spacing"]],
    )
    config["network_def"].update(network_kwargs(info["network_preset"]))
    fill_chain_slot(config, ["train", "preprocessing"], info["normalisation"], template, keys=["image", "label"],
                    mode=["bilinear", "nearest"])
    return config
