"""``Reader``: how one checkpoint format is recognised in a loaded file and where its state dict sits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from custom_nets.transfer.layout import Layout

__all__ = ["Reader"]


@dataclass(frozen=True)
class Reader:
    """One checkpoint format.

    ``read_checkpoint`` loads a file with ``torch.load(weights_only=True)`` and asks the readers of
    ``custom_nets.transfer.formats.READERS`` in order; the first whose ``detect`` accepts the top-level dict
    unpacks it. Afterwards, the same for every format: DDP / torch.compile prefixes are removed, S3D weights
    (``backbone.*``) become dense ResEnc weights, entries that are not tensors are dropped, and a state dict
    without a ResEnc encoder is refused.

    Args:
        name: the format's name, returned by ``read_checkpoint`` and shown in ``LoadReport.source_format``.
        holds: what a file of this format holds at the top level, for the error about a file no reader
            accepts, e.g. "'network_weights' (nnssl)".
        detect: the loaded top-level dict -> True when this reader reads it.
        unpack: the loaded top-level dict -> (the state dict inside it, as saved; the ``Layout`` of its keys).
    """

    name: str
    holds: str
    detect: Callable[[Mapping], bool]
    unpack: Callable[[Mapping], tuple[Any, Layout]]
