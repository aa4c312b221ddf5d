"""Fine-tune this project's pre-trained weights inside nnU-Net v2: a plans configuration and a weights file.

nnU-Net's ``nnUNetv2_train ... -pretrained_weights <file>`` (``nnunetv2/run/load_pretrained_weights.py``) copies
``torch.load(file)["network_weights"]`` into the network built from the plans, and asserts first that *every*
tensor of that network except the segmentation heads (keys containing ``.seg_layers.``) is in the file with the
same shape. A dataset's own plans (``nnUNetPlans.json``, ``nnUNetResEncUNetLPlans.json``) rarely describe our
network: another number of stages, anisotropic kernels or strides, another input channel count. So

* ``s3d_plans`` adds one configuration (default ``3d_fullres_s3d``) to a copy of the dataset's plans: our
  network's ``ResidualEncoderUNet`` (features, blocks, kernel 3, isotropic strides of the preset the weights were
  built with), 1 mm isotropic spacing and 160^3 patches (the pre-training layout), batch size 2. It inherits
  everything else from ``3d_fullres`` (``inherits_from``), in particular the dataset's intensity normalisation,
  and gets its own ``data_identifier`` (the spacing changes, so nnU-Net preprocesses it anew). nnU-Net's own
  pre-training guide transfers plans between datasets for the same reason: weights load only into the network
  they were trained with.
* ``nnunet_weights`` writes ``{"network_weights": state dict}`` for the dataset's channel count. The stem conv is
  replicated over the C input channels exactly as ``custom_nets.transfer.load_pretrained`` does for our own
  fine-tuning (kernel summed over its channels, repeated C times, divided by C: C copies of one image give the
  pre-trained response). The segmentation heads are left out (nnU-Net skips them). A checkpoint without a
  pre-trained decoder (SimCLR, VoCo, AMAES) gets nnU-Net's He initialisation there, because nnU-Net's loader
  insists on every decoder tensor.

``write_nnunet_plans`` does both and returns the commands to run next (docs/nnunet.md).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from custom_nets.data.atomic import atomic_torch_save, atomic_write_text
from custom_nets.nets.initialization import he_init
from custom_nets.nets.resenc import PRESETS, resenc_unet
from custom_nets.transfer import (
    DECODER_PREFIXES,
    SEG_HEAD_PREFIX,
    describe_encoder as _describe,
    encoder_layout,
    load_pretrained,
    nnssl_arch_kwargs as _nnssl_arch_kwargs,
    preset_name as _preset_name,
    read_checkpoint,
)

__all__ = [
    "S3D_CONFIGURATION",
    "RESENC_CLASS",
    "BASE_CONFIGURATION",
    "architecture_plans",
    "resolve_configuration",
    "s3d_plans",
    "nnunet_weights",
    "write_nnunet_plans",
]

logger = logging.getLogger(__name__)

#: Name of the configuration added to the plans.
S3D_CONFIGURATION = "3d_fullres_s3d"
#: The configuration it inherits from (normalisation, resampling, batch Dice ...).
BASE_CONFIGURATION = "3d_fullres"
#: nnU-Net's class of our network (dynamic_network_architectures).
RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
#: Plans arguments that are dotted names of classes (nnU-Net's ``_kw_requires_import``).
KW_REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")
#: nnU-Net's smallest batch size, also what its nnssl fine-tuning plans use.
DEFAULT_BATCH_SIZE = 2
_PLAN_HINT = (
    "pass the plans file that nnUNetv2_plan_and_preprocess wrote, e.g. "
    "$nnUNet_preprocessed/Dataset001_Name/nnUNetPlans.json (dataset.json is copied beside it)."
)


def architecture_plans(preset: str) -> dict:
    """The ``architecture`` entry of an nnU-Net v2 configuration that builds our network of ``preset``.

    nnU-Net builds ``network_class_name(input_channels=C, num_classes=K, **arch_kwargs)`` after importing the
    classes named in ``_kw_requires_import``; the arguments are those of ``custom_nets.nets.dna_kwargs``, with
    per-stage kernel sizes and strides as lists, like nnU-Net's ResEnc planners write them.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset '{preset}'; choose one of {sorted(PRESETS)}.")
    return {
        "network_class_name": RESENC_CLASS,
        "arch_kwargs": _nnssl_arch_kwargs(preset),
        "_kw_requires_import": list(KW_REQUIRES_IMPORT),
    }


def resolve_configuration(plans: Mapping, name: str, source: str = "plans") -> dict:
    """A configuration of an nnU-Net plans dict with ``inherits_from`` resolved (parent first, child wins).

    Args:
        plans: the plans dict.
        name: configuration name, e.g. "3d_fullres".
        source: the file, for messages.

    Raises:
        ValueError: the configuration (or a parent) does not exist, or inheritance is circular.
    """
    configurations = plans.get("configurations") or {}
    chain: list[str] = []
    while True:
        if name not in configurations:
            raise ValueError(
                f"{source} has no configuration '{name}'"
                + (f" (inherited by '{chain[-1]}')" if chain else "")
                + f"; its configurations are {sorted(configurations)}."
            )
        if name in chain:
            raise ValueError(f"{source}: circular 'inherits_from' between configurations {chain + [name]}.")
        chain.append(name)
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    resolved: dict = {}
    for link in reversed(chain):
        resolved.update(copy.deepcopy(configurations[link]))
    return resolved


def _per_axis(value: float | Sequence[float], what: str, cast: type) -> list:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3 or any(cast(v) <= 0 for v in values):
        raise ValueError(f"{what} needs 3 positive values (or one for all axes), got {value!r}.")
    return [cast(v) for v in values]


def s3d_plans(
    plans: Mapping,
    preset: str,
    plans_name: str,
    configuration: str = S3D_CONFIGURATION,
    spacing: float | Sequence[float] = 1.0,
    patch_size: int | Sequence[int] = 160,
    batch_size: int = DEFAULT_BATCH_SIZE,
    source: str = "plans",
) -> dict:
    """A copy of ``plans`` named ``plans_name`` with the configuration ``configuration`` added.

    Args:
        plans: the dataset's plans dict (written by ``nnUNetv2_plan_and_preprocess``); it must have "3d_fullres".
        preset: our network preset (see ``custom_nets.nets.PRESETS``).
        plans_name: the new plans identifier (``-p`` of nnUNetv2_train, the file name without .json).
        configuration: name of the added configuration. Defaults to "3d_fullres_s3d".
        spacing: target spacing in mm, one value or one per axis. Defaults to 1.0 (pre-training).
        patch_size: patch edge in voxels, one value or one per axis; a multiple of the network's total
            downsampling. Defaults to 160 (pre-training).
        batch_size: patches per iteration. Defaults to 2.
        source: the plans file, for messages.

    Returns:
        The new plans dict; every other configuration is kept unchanged.
    """
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or BASE_CONFIGURATION not in configurations:
        found = sorted(configurations) if isinstance(configurations, Mapping) else "none"
        raise ValueError(
            f"{source} has no '{BASE_CONFIGURATION}' configuration (configurations: {found}): the pre-trained network "
            "is 3D. Plan the dataset with nnUNetv2_plan_and_preprocess (3D images), then run this again."
        )
    if configuration in configurations:
        raise ValueError(
            f"{source} already has a configuration '{configuration}'; pass the dataset's own plans (e.g. "
            "nnUNetPlans.json) or choose another --configuration."
        )
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset '{preset}'; choose one of {sorted(PRESETS)}.")
    spacing = _per_axis(spacing, "spacing", float)
    patch = _per_axis(patch_size, "patch_size", int)
    divisor = math.prod(PRESETS[preset]["strides"])
    if any(p % divisor for p in patch):
        raise ValueError(
            f"patch_size {patch} is not a multiple of {divisor}, the total downsampling of preset '{preset}'; "
            f"use e.g. {[divisor * max(1, round(p / divisor)) for p in patch]}."
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    base = resolve_configuration(plans, BASE_CONFIGURATION, source)
    entry: dict[str, Any] = {
        "inherits_from": BASE_CONFIGURATION,
        # the spacing differs from 3d_fullres, so the data must be preprocessed into a folder of its own
        "data_identifier": f"{plans_name}_{configuration}",
        "spacing": spacing,
        "patch_size": patch,
        "batch_size": int(batch_size),
        "architecture": architecture_plans(preset),
    }
    median = base.get("median_image_size_in_voxels")
    old_spacing = base.get("spacing")
    if median is not None and old_spacing is not None and len(median) == len(old_spacing) == 3:
        # informational in nnU-Net; kept meaningful at the new spacing
        entry["median_image_size_in_voxels"] = [
            round(float(m) * float(s) / t, 1) for m, s, t in zip(median, old_spacing, spacing)
        ]
    new = copy.deepcopy(dict(plans))
    new["plans_name"] = plans_name
    new["configurations"][configuration] = entry
    return new


def nnunet_weights(checkpoint: str | os.PathLike, in_channels: int, seed: int = 0) -> tuple[dict, str, list[str]]:
    """Pre-trained weights as a file nnU-Net's ``load_pretrained_weights`` loads for ``in_channels`` channels.

    Args:
        checkpoint: any checkpoint file ``custom_nets.transfer.read_checkpoint`` reads (our ``models/model.pt``,
            a training checkpoint, an nnssl checkpoint).
        in_channels: the dataset's input channels (``channel_names`` of its dataset.json).
        seed: seed of nnU-Net's He initialisation for tensors the checkpoint does not have (the decoder of
            encoder-only checkpoints). Defaults to 0.

    Returns:
        ({"network_weights": state dict without segmentation heads}, the preset, notes for the user).

    Raises:
        ValueError: not a ResEnc checkpoint of a preset, or a pre-trained decoder that does not fit.
    """
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
    state, _ = read_checkpoint(checkpoint)
    layout = encoder_layout(state)
    preset = _preset_name(*layout)
    if preset is None:
        raise ValueError(
            f"checkpoint {checkpoint} is {_describe(*layout)}; nnU-Net plans can be written only for the presets "
            f"{sorted(PRESETS)}."
        )
    has_decoder = any(k.startswith(DECODER_PREFIXES) for k in state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = he_init(resenc_unet(preset, in_channels=int(in_channels), num_classes=1))
    report = load_pretrained(network, state, scope="encoder+decoder" if has_decoder else "encoder")
    decoder_failures = [
        k for k in report.missing if k.startswith(DECODER_PREFIXES)
    ] + [k for k, why in report.skipped.items() if k.startswith(DECODER_PREFIXES) and why.startswith("shape ")]
    if has_decoder and decoder_failures:
        raise ValueError(
            f"the decoder of the checkpoint does not fit preset '{preset}' ({len(decoder_failures)} tensors, e.g. "
            f"{decoder_failures[:2]}); nnU-Net's loader needs every decoder tensor. Re-export the weights from the "
            "pre-training run."
        )
    # nnU-Net's duplicate names (all_modules.N, decoder.encoder.*) stay views of one tensor: saved once
    weights = {k: v for k, v in network.state_dict().items() if not k.startswith(SEG_HEAD_PREFIX)}
    notes = [f"preset '{preset}', {len(weights)} tensors ({len(report.loaded)} distinct ones pre-trained)"]
    if report.replicated_stem:
        notes.append(f"stem conv replicated over {in_channels} input channels and divided by {in_channels}")
    if not has_decoder:
        notes.append("the checkpoint has no pre-trained decoder: the decoder starts from nnU-Net's He initialisation")
    return {"network_weights": weights}, preset, notes


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {_PLAN_HINT}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); plan the dataset again.") from err



def write_nnunet_plans(
    plans_file: str | os.PathLike,
    checkpoint: str | os.PathLike,
    weights_output: str | os.PathLike | None = None,
    plans_name: str | None = None,
    configuration: str = S3D_CONFIGURATION,
    spacing: float | Sequence[float] = 1.0,
    patch_size: int | Sequence[int] = 160,
    batch_size: int = DEFAULT_BATCH_SIZE,
    in_channels: int | None = None,
) -> dict:
    """Write ``<plans folder>/<plans_name>.json`` and the weights file for ``nnUNetv2_train -pretrained_weights``.

    The dataset's plans file is never changed: the new configuration goes into a copy named ``plans_name``.

    Args:
        plans_file: the dataset's plans, ``$nnUNet_preprocessed/DatasetXXX_Name/<plans>.json``.
        checkpoint: our pre-trained weights (``models/model.pt`` or any file ``read_checkpoint`` reads).
        weights_output: the weights file to write. Defaults to ``<plans folder>/<plans_name>__<configuration>.pth``.
        plans_name: identifier of the new plans. Defaults to ``<plans file name>_s3d``.
        configuration: the added configuration. Defaults to "3d_fullres_s3d".
        spacing: target spacing (mm). Defaults to 1.0.
        patch_size: patch edge (voxels). Defaults to 160.
        batch_size: Defaults to 2.
        in_channels: input channels. Defaults to the number of ``channel_names`` in dataset.json beside the plans.

    Returns:
        {"plans": path, "weights": path, "plans_name", "configuration", "dataset", "commands": [next commands],
        "notes": [...]}.
    """
    plans_file = Path(plans_file)
    if plans_file.is_dir():
        found = sorted(p.name for p in plans_file.glob("*.json"))
        raise ValueError(f"{plans_file} is a folder; pass one of its plans files ({found}). {_PLAN_HINT}")
    plans = _read_json(plans_file, "plans file")
    if "configurations" not in plans:
        raise ValueError(f"{plans_file} is not an nnU-Net v2 plans file (no 'configurations'); {_PLAN_HINT}")
    plans_name = plans_name or f"{plans_file.stem}_s3d"
    target = plans_file.with_name(f"{plans_name}.json")
    if target.resolve() == plans_file.resolve():
        raise ValueError(f"plans_name '{plans_name}' would overwrite {plans_file}; choose another --plans_name.")
    if in_channels is None:
        dataset = _read_json(plans_file.with_name("dataset.json"), "dataset.json")
        names = dataset.get("channel_names") or dataset.get("modality")
        if not isinstance(names, Mapping) or not names:
            raise ValueError(f"{plans_file.with_name('dataset.json')} has no 'channel_names'; pass --in_channels.")
        in_channels = len(names)
    weights, preset, notes = nnunet_weights(checkpoint, int(in_channels))
    new_plans = s3d_plans(plans, preset, plans_name, configuration, spacing, patch_size, batch_size, str(plans_file))
    weights_output = Path(weights_output) if weights_output else plans_file.with_name(f"{plans_name}__{configuration}.pth")
    weights_output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(new_plans, indent=4) + "\n")
    atomic_torch_save(weights, weights_output)
    dataset_name = str(plans.get("dataset_name") or plans_file.parent.name)
    # nnUNetv2_preprocess takes the dataset's number only (-d is an int); nnUNetv2_train takes either
    number = re.match(r"Dataset(\d+)_", dataset_name)
    dataset_id = str(int(number.group(1))) if number else "<dataset id>"
    commands = [
        f"nnUNetv2_preprocess -d {dataset_id} -plans_name {plans_name} -c {configuration}",
        f"nnUNetv2_train {dataset_id} {configuration} 0 -p {plans_name} -pretrained_weights {weights_output}",
    ]
    logger.info("wrote %s (configuration '%s') and %s: %s", target, configuration, weights_output, "; ".join(notes))
    return {
        "plans": str(target),
        "weights": str(weights_output),
        "plans_name": plans_name,
        "configuration": configuration,
        "dataset": dataset_name,
        "commands": commands,
        "notes": notes,
    }
