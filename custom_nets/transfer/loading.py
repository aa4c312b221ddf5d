"""Copy pre-trained weights into a ResEnc U-Net for fine-tuning: check everything first, then copy.

``plan_transfer`` reads the checkpoint, matches every tensor and refuses an encoder that does not fit, all
without touching the network; ``TransferPlan.apply`` then copies and logs the ``LoadReport``.
``load_pretrained`` does both at once. The split lets the fine-tuning bundle check a checkpoint (and learn whether
the stem will be replicated) when the config is read, and copy the weights when training starts
(``custom_nets.engine.weight_transfer.WeightTransfer``).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import torch
from torch import nn

from custom_nets.nets.wrappers import unwrap
from custom_nets.transfer.layout import DECODER_PREFIXES
from custom_nets.transfer.matching import Match, failure_message, match
from custom_nets.transfer.reading import read
from custom_nets.transfer.report import LoadReport

__all__ = ["SCOPES", "TransferPlan", "plan_transfer", "load_pretrained"]

logger = logging.getLogger(__name__)

SCOPES = ("encoder", "encoder+decoder")


class TransferPlan:
    """A checked transfer that has not copied anything yet.

    Args:
        matched: the ``Match`` of a network and a checkpoint (from ``plan_transfer``).
    """

    def __init__(self, matched: Match) -> None:
        self._copies = matched.copies
        self.report: LoadReport = matched.report
        self.pending = True  # False once applied or discarded

    def apply(self) -> LoadReport:
        """Copy the matched tensors into the network and log the report's summary at INFO; once applied or
        discarded, only return the report."""
        if not self.pending:
            return self.report
        with torch.no_grad():
            for target, value in self._copies:
                target.copy_(value)
        self._copies, self.pending = [], False  # the checkpoint's tensors are not needed any more
        logger.info(self.report.summary())
        return self.report

    def discard(self) -> None:
        """Drop the checkpoint's tensors without copying them (the report stays); ``apply`` then copies nothing."""
        self._copies, self.pending = [], False


def plan_transfer(
    network: nn.Module,
    path_or_state: str | os.PathLike | Mapping,
    scope: str = "encoder",
    strict_encoder: bool = True,
) -> TransferPlan:
    """Read a checkpoint and match it to ``network``; raise if it does not fit. The network is not changed.

    Same arguments and errors as ``load_pretrained``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    module = unwrap(network)
    if not isinstance(module, nn.Module):
        raise ValueError(f"network must be a torch module (a ResEncUNet), got {type(network).__name__}.")
    checkpoint = read(path_or_state)
    targets = module.state_dict(keep_vars=True)
    if scope == "encoder+decoder" and not any(k.startswith(DECODER_PREFIXES) for k in checkpoint.state):
        raise ValueError(
            f"{checkpoint.source} has no pre-trained decoder (methods such as SimCLR, VoCo and AMAES train only "
            "the encoder): fine-tune it with transfer_scope 'encoder'."
        )
    matched = match(targets, checkpoint, scope)
    if matched.n_encoder == 0:
        raise ValueError(
            f"the network ({type(module).__name__}) has no tensor under '{checkpoint.layout.stem}' or "
            f"'{checkpoint.layout.encoder}' (the stem/encoder keys of {checkpoint.source}); pass a ResEncUNet."
        )
    failures = matched.failures
    if failures and (strict_encoder or len(failures) == matched.n_encoder):
        raise ValueError(failure_message(failures, matched.n_encoder, targets, checkpoint, strict_encoder))
    if failures:
        logger.warning(failure_message(failures, matched.n_encoder, targets, checkpoint, strict_encoder))
    return TransferPlan(matched)


def load_pretrained(
    network: nn.Module,
    path_or_state: str | os.PathLike | Mapping,
    scope: str = "encoder",
    strict_encoder: bool = True,
) -> LoadReport:
    """Copy pre-trained weights into a ResEnc U-Net for fine-tuning.

    The stem and the encoder stages are always loaded; ``scope="encoder+decoder"`` adds the decoder stages and
    transposed convs. The segmentation head (``decoder.seg_layers``) is never loaded: it is trained anew, and
    the class count differs anyway. When the network has C input channels and the checkpoint's stem conv C_p,
    the pretrained kernel is summed over its C_p channels, replicated over the C channels and divided by C, so
    C copies of one image give exactly the response of the pretrained network to (C_p copies of) that image.
    Nothing is copied until every stem/encoder tensor has been matched, so a failed load leaves the network as
    it was.

    Args:
        network: a ``ResEncUNet`` (or any module with nnU-Net's ResEnc key names), possibly wrapped by DDP,
            DataParallel or torch.compile.
        path_or_state: a checkpoint file of any format ``read_checkpoint`` reads, or such a dict in memory.
        scope: "encoder" (the reference) or "encoder+decoder". Defaults to "encoder".
        strict_encoder: raise when a stem/encoder tensor of the network is missing from the checkpoint or has
            another shape. With False those tensors keep their initial values and a warning is logged; a
            checkpoint from which no encoder tensor loads still raises. Defaults to True.

    Returns:
        A ``LoadReport`` (its ``summary()`` is logged at INFO).

    Raises:
        ValueError: unknown scope, unreadable checkpoint, or an encoder that does not fit; the message names the
            tensors, the file and the likely cause (the preset the checkpoint was built with).
    """
    return plan_transfer(network, path_or_state, scope=scope, strict_encoder=strict_encoder).apply()
