"""What every pre-training run hands to fine-tuning: one converter for S3D and all the baselines.

A pre-training network is either a ``ResEncUNet`` itself (dense MAE, Models Genesis, Volume Fusion) or a wrapper
that keeps its ``ResEncUNet`` as ``backbone`` (``S3D``, the contrastive and multi-task baselines, AMAES). In
both cases fine-tuning wants the same file: the ResEnc state dict with nnU-Net's key names (``encoder.stem.*``,
``encoder.stages.*``, ``decoder.*``) on the CPU, pre-training scaffolding (mask tokens, densification convs,
projection heads) left out. ``ExportWeights`` calls ``pretrained_state_dict`` at the end of every pre-training
run (``convert`` in ``bundles/s3d_pretrain/configs/train.yaml``).
"""

from __future__ import annotations

import torch
from torch import nn

from custom_nets.nets.wrappers import unwrap

__all__ = ["pretrained_state_dict"]

# The stem and encoder stages in nnU-Net's ResEnc key names: what an encoder-only export keeps.
ENCODER_PREFIXES = ("encoder.stem", "encoder.stages")
# Added in front of every key by DistributedDataParallel / DataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def pretrained_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """ResEnc weights with nnU-Net's key names, on the CPU, of any pre-training network.

    - a ``ResEncUNet`` (dense MAE-style reconstruction, Models Genesis, Volume Fusion): its state dict;
    - ``S3D`` or any wrapper that keeps its ``ResEncUNet`` as ``backbone`` (the contrastive and multi-task
      baselines): the backbone's state dict, pre-training heads, mask tokens and densification convs dropped
      (for S3D this equals ``nets.s3d.dense_state_dict``, which reads S3D training checkpoints);
    - when the wrapper declares ``decoder_pretrained = False`` (its U-Net decoder never saw a gradient), only
      the stem and encoder, so that an ``encoder+decoder`` transfer fails clearly instead of loading an
      untrained decoder.

    Args:
        network: the trained network, possibly wrapped by DDP / DataParallel / torch.compile.

    Returns:
        key -> detached CPU tensor, loadable strictly into ``ResEncUNet`` (encoder-only: with ``strict=False``).
    """
    module = unwrap(network)
    backbone = getattr(module, "backbone", module)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"expected a ResEncUNet or a wrapper with a 'backbone' ResEncUNet, got {type(network).__name__}.")
    state = {_strip_wrappers(k): v for k, v in backbone.state_dict().items()}
    if not getattr(module, "decoder_pretrained", True):
        state = {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in ENCODER_PREFIXES)}
    if not state:
        raise ValueError(f"{type(module).__name__} has no ResEnc encoder weights to export.")
    return {k: v.detach().cpu() for k, v in state.items()}


def _strip_wrappers(key: str) -> str:
    """Remove DDP / torch.compile prefixes (in any order, repeated) from one key."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key
