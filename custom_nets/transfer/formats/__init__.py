"""The checkpoint formats ``read_checkpoint`` reads: one module per format, each with a ``READER``.

=========================== =================================================================================
format (module)             what the file holds
=========================== =================================================================================
``nnssl``                   nnssl's ``checkpoint_final.pth``: {"network_weights", "nnssl_adaptation_plan", ...}
``s3d_training_checkpoint`` our ``ResumableCheckpoint``: {"network": S3D state dict ("backbone.*"), ...}
``training_checkpoint``     {"network": dense ResEnc state dict, "optimizer": ..., ...}
``monai_bundle``            MONAI ``CheckpointSaver`` / bundle files: {"model": ...} or {"state_dict": ...}
``state_dict``              a plain state dict, e.g. our final ``models/model.pt``
=========================== =================================================================================

A new format is a module here with a ``READER`` (see ``reader.Reader``) and one line in ``READERS``.
"""

from custom_nets.transfer.formats import monai_bundle, nnssl, s3d_training_checkpoint, state_dict, training_checkpoint
from custom_nets.transfer.formats.reader import Reader

__all__ = ["READERS", "Reader"]

# Asked in this order; the first whose detect() accepts a file reads it: specific signatures first, S3D before
# the dense training checkpoint (same "network" key), a plain state dict (any top-level tensor) last.
READERS: tuple[Reader, ...] = (
    nnssl.READER,
    s3d_training_checkpoint.READER,
    training_checkpoint.READER,
    monai_bundle.READER,
    state_dict.READER,
)
