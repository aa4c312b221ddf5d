"""Read any supported checkpoint file as a dense ResEnc state dict with nnU-Net's key names.

The file is opened with ``torch.load(map_location="cpu", weights_only=True)`` (a checkpoint is data, never code),
its format is recognised by the readers of ``custom_nets.transfer.formats.READERS``, and what every format
shares is done here once: DDP ("module.") and torch.compile ("_orig_mod.") prefixes are removed, S3D weights
become dense ResEnc weights (mask tokens and densify convs dropped), and a file without a ResEnc encoder is
refused with a message that names the file and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from custom_nets.nets.s3d import BACKBONE_PREFIX, dense_state_dict
from custom_nets.transfer.formats import READERS
from custom_nets.transfer.layout import Layout, encoder_layout, strip_wrappers
from custom_nets.transfer.report import first_keys

__all__ = ["Checkpoint", "SUPPORTED", "read_checkpoint", "read"]

# torch's weights-only unpickler names refused Python objects with these words.
PICKLE_MARKERS = ("Unsupported global", "Unsupported class", "unrecognized function")
SUPPORTED = "only ResEnc U-Net checkpoints from this project, nnU-Net or nnssl are supported"


class Checkpoint(NamedTuple):
    """A read checkpoint: dense ResEnc ``state`` (nnU-Net key names), its ``format`` (reader name), the key
    ``layout`` and the ``source`` file (or "<state dict>")."""

    state: dict[str, torch.Tensor]
    format: str
    layout: Layout
    source: str


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read any supported checkpoint file as a dense ResEnc state dict.

    The file is opened with ``torch.load(map_location="cpu", weights_only=True)``; DDP ("module.") and
    torch.compile ("_orig_mod.") prefixes are removed, and S3D scaffolding (mask tokens, densify convs) is dropped.

    Args:
        path: a checkpoint file of one of the formats of ``custom_nets.transfer.formats`` (or such a dict).

    Returns:
        (state dict with nnU-Net key names, format name).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a torch file, needs ``weights_only=False``, or holds no ResEnc weights; the
            message names the file and the fix.
    """
    checkpoint = read(path)
    return checkpoint.state, checkpoint.format


def read(path_or_state: str | os.PathLike | Mapping) -> Checkpoint:
    """A file or an in-memory checkpoint/state dict -> unpacked, checked ``Checkpoint``."""
    if isinstance(path_or_state, Mapping):
        obj, source = path_or_state, "<state dict>"
    elif isinstance(path_or_state, (str, os.PathLike)):
        obj, source = _load_file(Path(path_or_state)), str(path_or_state)
    else:
        raise ValueError(
            f"expected a checkpoint path or a state dict, got {type(path_or_state).__name__}; pass the file name."
        )
    state, fmt, layout = _unpack(obj, source)
    _check_resenc(state, layout, source, obj)
    return Checkpoint(state, fmt, layout, source)


def _load_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and say what to do."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path (pretrained weights setting).")
    if path.is_dir():
        raise ValueError(
            f"checkpoint {path} is a folder; pass the file inside it (e.g. checkpoint_final.pth or models/model.pt)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files (EOFError, KeyError, RuntimeError...)
        message = str(error)
        # A valid pickle of non-tensor objects is refused by name; random bytes fail as "Unsupported operand" etc.
        if any(marker in message for marker in PICKLE_MARKERS):
            raise ValueError(_needs_pickle_message(path, message)) from error
        raise ValueError(
            f"checkpoint {path} is not a readable torch file ({type(error).__name__}: {_first_line(message)}); it "
            "is corrupt, truncated or of another kind. Copy it again or point to the right file."
        ) from error


def _needs_pickle_message(path: Path, message: str) -> str:
    found = re.search(r"GLOBAL (\S+)", message)
    reason = f" (e.g. {found.group(1)})" if found else ""
    return (
        f"checkpoint {path} is not a plain tensor checkpoint: it pickles Python objects{reason}, so it cannot be "
        "read with weights_only=True. If you trust its source, convert it once: "
        f"c = torch.load('{path}', map_location='cpu', weights_only=False); then torch.save the state dict inside "
        "it (c['network_weights'], c['network'], c['model'] or model.state_dict()) to a new file and use that."
    )


def _first_line(message: str) -> str:
    """The informative part of a torch.load error: the unpickler's own reason, else the first line (shortened)."""
    after = message.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in message else message
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    return lines[0][:120] if lines else "no message"


def _unpack(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], str, Layout]:
    """Find the reader of a loaded checkpoint and return (dense state dict, format, layout)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {source} holds a {type(obj).__name__}, not a dict of tensors; {SUPPORTED}.")
    reader = next((r for r in READERS if r.detect(obj)), None)
    if reader is None:
        holds = list(dict.fromkeys(r.holds for r in READERS))  # in order, each once
        raise ValueError(
            f"checkpoint {source} holds no state dict: its top-level keys are {first_keys(sorted(map(str, obj)), 8)}; "
            f"expected {', '.join(holds[:-1])} or {holds[-1]}. {SUPPORTED}."
        )
    state, layout = reader.unpack(obj)
    if not isinstance(state, Mapping):
        raise ValueError(
            f"checkpoint {source} ({reader.name}) holds a {type(state).__name__} where a state dict belongs."
        )
    state = strip_wrappers(state)
    if any(k.startswith(BACKBONE_PREFIX) for k in state):  # S3D weights, wherever they were saved
        state = dense_state_dict(state)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, reader.name, layout


def _check_resenc(state: Mapping[str, torch.Tensor], layout: Layout, source: str, obj: Any) -> None:
    """Raise if no tensor looks like a ResEnc encoder (e.g. a SegResNet or SwinUNETR checkpoint)."""
    if encoder_layout(state, layout.encoder)[0]:
        return
    modules = sorted({k.split(".")[0] for k in state})
    arch = ""
    plan = obj.get("nnssl_adaptation_plan") if isinstance(obj, Mapping) else None
    if isinstance(plan, Mapping) and isinstance(plan.get("architecture_plans"), Mapping):
        arch = f" (nnssl architecture '{plan['architecture_plans'].get('arch_class_name')}')"
    raise ValueError(
        f"checkpoint {source}{arch} has no ResEnc encoder: no '{layout.encoder}.<stage>.blocks.<block>' conv "
        f"weights. Its {len(state)} tensors belong to {first_keys(modules, 8)} (e.g. "
        f"{first_keys(sorted(state), 3)}). It is probably another architecture (SegResNet, SwinUNETR, "
        f"PlainConvUNet, Primus); {SUPPORTED}."
    )
