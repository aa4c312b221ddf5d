"""Freeze the pre-trained encoder of a U-Net for the decoder-only stages of a fine-tuning schedule.

Freezing is done with ``requires_grad`` only; the optimiser keeps every parameter. A frozen parameter gets no
gradient (``grad`` is None), and ``torch.optim`` skips parameters without a gradient entirely: no momentum, no
weight decay, so the encoder stays bit-for-bit unchanged while the decoder trains.
"""

from __future__ import annotations

from torch import nn

from custom_nets.engine.checkpoints import unwrap

__all__ = ["set_trainable", "stem_first_conv"]


def stem_first_conv(encoder: nn.Module) -> nn.Module:
    """The stem's first convolution (``encoder.stem.convs[0].conv``), the only layer that sees the input channels."""
    try:
        return encoder.stem.convs[0].conv
    except (AttributeError, IndexError, TypeError) as err:
        raise ValueError(
            f"{type(encoder).__name__} has no 'stem.convs[0].conv'; stem_first_conv_trainable needs a ResEnc"
            " encoder (custom_nets.nets.ResidualEncoder), or pass stem_first_conv_trainable=False."
        ) from err


def set_trainable(network: nn.Module, trains: str, stem_first_conv_trainable: bool = False) -> None:
    """Make the whole network, or only what is not the encoder, trainable.

    "decoder": every parameter of ``network.encoder`` (stem included) gets ``requires_grad=False`` and its
    ``grad`` is dropped (so a trainer that zeroes gradients in place, or an earlier stage's gradients, cannot
    move it); every other parameter (``decoder.stages``, ``decoder.transpconvs``, ``decoder.seg_layers``)
    gets ``requires_grad=True``. ``network.decoder.encoder`` is the same module as ``network.encoder`` and is
    frozen with it. "all": every parameter trains.

    Args:
        network: a ``ResEncUNet`` (or any module with an ``encoder`` attribute), possibly wrapped in
            DistributedDataParallel, DataParallel or ``torch.compile``.
        trains: "decoder" or "all".
        stem_first_conv_trainable: in "decoder" mode keep the stem's first convolution trainable; used when the
            input has more channels than in pre-training and that convolution was replicated over them.
            Defaults to False.
    """
    if trains not in ("decoder", "all"):
        raise ValueError(f"trains must be 'decoder' or 'all', got {trains!r}.")
    module = unwrap(network)
    if trains == "all":
        for param in module.parameters():
            param.requires_grad_(True)
        return
    encoder = getattr(module, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(
            f"{type(module).__name__} has no 'encoder' module to freeze; decoder-only training needs a U-Net such"
            " as custom_nets.nets.ResEncUNet, or use a schedule whose stages all train 'all'."
        )
    frozen = {id(p) for p in encoder.parameters()}
    if stem_first_conv_trainable:
        frozen -= {id(p) for p in stem_first_conv(encoder).parameters()}
    for param in module.parameters():
        is_frozen = id(param) in frozen
        param.requires_grad_(not is_frozen)
        if is_frozen:
            param.grad = None
