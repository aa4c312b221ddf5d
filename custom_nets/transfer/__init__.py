"""Checkpoint formats in and out: read any pre-trained ResEnc checkpoint, load it for fine-tuning, nnssl both ways.

Every pre-trained ResEnc checkpoint this project meets is turned into one thing, a dense ResEnc state dict with
nnU-Net's key names (``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*``). Files are always opened with
``torch.load(weights_only=True)``: a checkpoint is data, never code.

- ``formats/``: one reader per checkpoint format (nnssl, S3D training checkpoint, training checkpoint, MONAI
  bundle, plain state dict) and ``READERS``, the order they are asked in;
- ``reading.py``: ``read_checkpoint`` (load the file, find its reader, strip wrappers, densify S3D, check ResEnc);
- ``layout.py``: where the stem/encoder/input projection sit, and the preset a state dict was built with;
- ``matching.py`` / ``loading.py`` / ``report.py``: ``load_pretrained`` copies the stem and encoder (and
  optionally the decoder) into a network, replicating the stem kernel for multi-channel inputs (method.md
  section 3), refuses to return with an encoder that did not load, and reports every tensor in a ``LoadReport``;
- ``nnssl_export.py`` / ``nnssl_hub.py``: our weights as an nnssl checkpoint (method.md section 6), and nnssl /
  OpenMind checkpoints from the Hugging Face Hub.
"""

from custom_nets.transfer.formats import READERS, Reader
from custom_nets.transfer.layout import (
    DECODER_PREFIXES,
    SEG_HEAD_PREFIX,
    Layout,
    describe_encoder,
    encoder_layout,
    preset_name,
)
from custom_nets.transfer.loading import SCOPES, TransferPlan, load_pretrained, plan_transfer
from custom_nets.transfer.nnssl_export import export_nnssl, nnssl_arch_kwargs, nnssl_checkpoint
from custom_nets.transfer.nnssl_hub import import_nnssl
from custom_nets.transfer.reading import read_checkpoint
from custom_nets.transfer.report import LoadReport

__all__ = [
    "SCOPES",
    "LoadReport",
    "READERS",
    "Reader",
    "Layout",
    "DECODER_PREFIXES",
    "SEG_HEAD_PREFIX",
    "read_checkpoint",
    "load_pretrained",
    "plan_transfer",
    "TransferPlan",
    "encoder_layout",
    "preset_name",
    "describe_encoder",
    "nnssl_checkpoint",
    "nnssl_arch_kwargs",
    "export_nnssl",
    "import_nnssl",
]
