"""Seeing through the wrappers that training puts around a network."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["unwrap"]


def unwrap(network: Any) -> Any:
    """The module inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers.

    Checkpoints store the unwrapped module's state dict (no ``module.`` prefixes), so they load on 1 or 8 GPUs,
    compiled or not. Anything that is not an ``nn.Module`` (an optimiser, an engine) is returned unchanged.
    """
    while isinstance(network, nn.Module):
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            break
    return network
