"""This project's weights as an nnssl ``checkpoint_final.pth`` (method.md section 6), for nnssl and OpenMind users.

``nnssl_checkpoint`` builds the dict (``network_weights`` + ``nnssl_adaptation_plan``); ``export_nnssl`` converts
any file ``read_checkpoint`` reads and writes it (``python -m custom_nets export_nnssl``). ``nnssl_arch_kwargs``
is the preset in the JSON form of nnssl's architecture plans, which nnU-Net's plans use too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from custom_nets.data.atomic import atomic_torch_save
from custom_nets.nets.resenc import PRESETS, dna_kwargs
from custom_nets.nets.s3d import BACKBONE_PREFIX, dense_state_dict
from custom_nets.nets.wrappers import unwrap
from custom_nets.transfer.layout import Layout, describe_encoder, encoder_layout, preset_name, strip_wrappers
from custom_nets.transfer.reading import read_checkpoint

__all__ = ["NNSSL_ARCHITECTURE", "nnssl_checkpoint", "export_nnssl", "nnssl_arch_kwargs"]

logger = logging.getLogger(__name__)

NNSSL_ARCHITECTURE = "ResidualEncoderUNet"


def nnssl_checkpoint(
    network_or_state: nn.Module | Mapping[str, torch.Tensor],
    preset: str = "resenc_l",
    patch_size: Sequence[int] = (160, 160, 160),
    pretrain_plan: Mapping | None = None,
) -> dict:
    """Our weights as an nnssl checkpoint (``network_weights`` + ``nnssl_adaptation_plan``), loadable with
    ``weights_only=True`` by nnssl and OpenMind users.

    The adaptation plan follows nnssl's ``AdaptationPlan.serialize()``: architecture "ResidualEncoderUNet" with
    ``arch_kwargs`` from ``dna_kwargs(preset)`` made JSON-friendly (classes as dotted names, per-stage kernel
    sizes and strides; input/output channels are not architecture kwargs in nnssl and are left out),
    ``pretrain_num_input_channels`` read from the stem conv, and nnU-Net's stem/encoder keys.

    Args:
        network_or_state: a ``ResEncUNet`` or ``S3D`` (possibly wrapped), or a dense or S3D state dict.
        preset: the preset the weights were built with; checked against the weight shapes. Defaults to "resenc_l".
        patch_size: ``recommended_downstream_patchsize``. Defaults to (160, 160, 160).
        pretrain_plan: nnssl's pre-training plan, if there is one; this project has none, so None by default.

    Returns:
        {"network_weights": state dict, "nnssl_adaptation_plan": plan dict}.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset '{preset}'; choose one of {sorted(PRESETS)}.")
    state = _dense_state(network_or_state)
    found = encoder_layout(state)
    expected = (tuple(PRESETS[preset]["features"]), tuple(PRESETS[preset]["blocks_per_stage"]))
    if found != expected:
        raise ValueError(
            f"the weights are {describe_encoder(*found) if found[0] else 'not a ResEnc'}, not preset '{preset}' "
            f"({describe_encoder(*expected)}); pass the preset they were built with."
        )
    layout = Layout()
    in_channels = int(state[layout.in_proj[0] + ".weight"].shape[1])
    plan = {
        "architecture_plans": {
            "arch_class_name": NNSSL_ARCHITECTURE,
            "arch_kwargs": nnssl_arch_kwargs(preset),
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"],
        },
        "pretrain_plan": dict(pretrain_plan) if pretrain_plan is not None else None,
        "pretrain_num_input_channels": in_channels,
        "recommended_downstream_patchsize": [int(s) for s in patch_size],
        "key_to_encoder": layout.encoder,
        "key_to_stem": layout.stem,
        "keys_to_in_proj": list(layout.in_proj),
        "key_to_lpe": None,
    }
    return {"network_weights": state, "nnssl_adaptation_plan": plan}


def _dense_state(network_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Dense ResEnc state dict (CPU) of a network, an S3D model or a state dict."""
    module = unwrap(network_or_state)
    if isinstance(module, nn.Module):
        state = module.state_dict()
    elif isinstance(module, Mapping):
        state = module
    else:
        raise ValueError(f"expected a network or a state dict, got {type(network_or_state).__name__}.")
    state = strip_wrappers(state)
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = dense_state_dict(state)
    return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}


def nnssl_arch_kwargs(preset: str) -> dict:
    """``dna_kwargs(preset)`` in the JSON-friendly form of nnssl's ``DynamicArchitecturePlans``.

    Classes become dotted names (``torch.nn.modules.conv.Conv3d``), kernel sizes and strides one list per stage
    (``[[3, 3, 3], ...]``); input and output channels are left out, as nnssl and nnU-Net plans do.
    """
    kw = dna_kwargs(preset)
    n, dims = kw["n_stages"], 3 if kw["conv_op"] is nn.Conv3d else 2
    kernel = kw["kernel_sizes"]
    kernels = [[int(kernel)] * dims for _ in range(n)] if isinstance(kernel, int) else [list(k) for k in kernel]
    return {
        "n_stages": n,
        "features_per_stage": [int(f) for f in kw["features_per_stage"]],
        "conv_op": _dotted(kw["conv_op"]),
        "kernel_sizes": kernels,
        "strides": [[int(s)] * dims for s in kw["strides"]],
        "n_blocks_per_stage": [int(b) for b in kw["n_blocks_per_stage"]],
        "n_conv_per_stage_decoder": [int(c) for c in kw["n_conv_per_stage_decoder"]],
        "conv_bias": bool(kw["conv_bias"]),
        "norm_op": _dotted(kw["norm_op"]),
        "norm_op_kwargs": dict(kw["norm_op_kwargs"]),
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": _dotted(kw["nonlin"]),
        "nonlin_kwargs": dict(kw["nonlin_kwargs"]),
    }


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def export_nnssl(
    path_in: str | os.PathLike,
    path_out: str | os.PathLike,
    preset: str | None = None,
    patch_size: Sequence[int] = (160, 160, 160),
) -> Path:
    """Convert any checkpoint ``read_checkpoint`` reads into an nnssl ``checkpoint_final.pth``-style file.

    Args:
        path_in: our ``models/model.pt``, a training checkpoint, or another supported file.
        path_out: the nnssl checkpoint to write (atomically: temporary file, then rename).
        preset: the preset of the weights. Defaults to None: recognised from the weight shapes.
        patch_size: ``recommended_downstream_patchsize``. Defaults to (160, 160, 160).

    Returns:
        ``path_out`` as a Path.
    """
    state, _ = read_checkpoint(path_in)
    if preset is None:
        preset = preset_name(*encoder_layout(state))
        if preset is None:
            described = describe_encoder(*encoder_layout(state))
            raise ValueError(f"checkpoint {path_in} is {described}; add it to PRESETS or pass preset=.")
    checkpoint = nnssl_checkpoint(state, preset=preset, patch_size=patch_size)
    path_out = Path(path_out)
    atomic_torch_save(checkpoint, path_out)
    logger.info("wrote nnssl checkpoint %s (preset '%s') from %s", path_out, preset, path_in)
    return path_out
