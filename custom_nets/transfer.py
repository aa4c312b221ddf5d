"""Checkpoint formats in one place: read, load for fine-tuning, export for nnssl.

Every pre-trained ResEnc checkpoint this project meets is read here and turned into one thing, a dense ResEnc
state dict with nnU-Net's key names (``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*``):

=========================== =================================================================================
format                      what the file holds
=========================== =================================================================================
``s3d_training_checkpoint`` our ``ResumableCheckpoint``: {"network": S3D state dict ("backbone.*"), ...}
``training_checkpoint``     {"network": dense ResEnc state dict, "optimizer": ..., ...}
``nnssl``                   nnssl's ``checkpoint_final.pth``: {"network_weights", "nnssl_adaptation_plan", ...}
``monai_bundle``            MONAI ``CheckpointSaver`` / bundle files: {"model": ...} or {"state_dict": ...}
``state_dict``              a plain state dict, e.g. our final ``models/model.pt``
=========================== =================================================================================

Files are always opened with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
``load_pretrained`` then copies the stem and encoder (and optionally the decoder) into a network, replicating
the stem kernel for multi-channel inputs (method.md section 3), and refuses to return with an encoder that did
not load. ``nnssl_checkpoint`` / ``export_nnssl`` write our weights in nnssl's format (method.md section 6).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from custom_nets.data.atomic import atomic_torch_save
from custom_nets.nets.resenc import PRESETS, dna_kwargs
from custom_nets.nets.s3d import BACKBONE_PREFIX, dense_state_dict
from custom_nets.nets.wrappers import unwrap

__all__ = [
    "SCOPES",
    "LoadReport",
    "read_checkpoint",
    "load_pretrained",
    "encoder_layout",
    "nnssl_checkpoint",
    "export_nnssl",
    "pretrained_state_dict",
]

logger = logging.getLogger(__name__)

SCOPES = ("encoder", "encoder+decoder")
# Added in front of every key by DistributedDataParallel / DataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SEG_HEAD_PREFIX = "decoder.seg_layers."
DECODER_PREFIXES = ("decoder.stages.", "decoder.transpconvs.")
NNSSL_ARCHITECTURE = "ResidualEncoderUNet"
SEG_HEAD_REASON = "segmentation head is trained anew"
OUT_OF_SCOPE_REASON = "not in transfer scope"
UNKNOWN_KEY_REASON = "not in the network"
MISSING_REASON = "missing from the checkpoint"
# torch's weights-only unpickler names refused Python objects with these words.
PICKLE_MARKERS = ("Unsupported global", "Unsupported class", "unrecognized function")
SUPPORTED = "only ResEnc U-Net checkpoints from this project, nnU-Net or nnssl are supported"


@dataclass(frozen=True)
class _Layout:
    """Where the stem, the encoder stages and the input projection sit in a state dict.

    The names are those of nnssl's adaptation plan (``key_to_stem``, ``key_to_encoder``, ``keys_to_in_proj``);
    the defaults are nnU-Net's ResEnc, and an nnssl checkpoint's own plan overrides them.
    """

    stem: str = "encoder.stem"
    encoder: str = "encoder.stages"
    in_proj: tuple[str, ...] = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")

    @classmethod
    def from_plan(cls, plan: Any) -> "_Layout":
        """The layout named by an nnssl adaptation plan; missing entries keep the ResEnc defaults."""
        if not isinstance(plan, Mapping):
            return cls()
        default = cls()
        in_proj = plan.get("keys_to_in_proj", default.in_proj)
        return cls(
            stem=str(plan.get("key_to_stem") or default.stem),
            encoder=str(plan.get("key_to_encoder") or default.encoder),
            in_proj=tuple(str(k) for k in (in_proj if in_proj is not None else default.in_proj)),
        )

    def in_encoder(self, key: str) -> bool:
        """True for keys of the stem or the encoder stages."""
        return any(key == p or key.startswith(p + ".") for p in (self.stem, self.encoder))

    def is_in_proj(self, key: str) -> bool:
        """True for the weight of the input projection (the stem conv that sees the input channels)."""
        return key in {p + ".weight" for p in self.in_proj}


class _Checkpoint(NamedTuple):
    state: dict[str, torch.Tensor]
    format: str
    layout: _Layout
    source: str


@dataclass
class LoadReport:
    """What ``load_pretrained`` did, tensor by tensor.

    Names of one tensor that nnU-Net stores twice (``conv`` / ``all_modules.0``, ``encoder.*`` /
    ``decoder.encoder.*``) are counted once, under the network's first name.

    Args:
        loaded: network keys whose tensor was copied from the checkpoint.
        skipped: checkpoint key -> reason it was not copied: "not in transfer scope", "segmentation head is
            trained anew", "shape (checkpoint) != (network)" or "not in the network".
        missing: network keys with no tensor in the checkpoint.
        replicated_stem: the stem conv was replicated over the network's input channels.
        source_format: the checkpoint format (see the module docstring).
        source: the file (or "<state dict>") the weights came from.
        scope: "encoder" or "encoder+decoder".
    """

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    replicated_stem: bool = False
    source_format: str = ""
    source: str = ""
    scope: str = "encoder"

    def summary(self, examples: int = 3) -> str:
        """One readable paragraph: counts, and the first ``examples`` keys of every skip reason."""
        parts = [
            f"Loaded {len(self.loaded)} tensors ({self.scope}) from {self.source or 'a state dict'} "
            f"({self.source_format or 'unknown format'}; duplicate nnU-Net names counted once)."
        ]
        if self.replicated_stem:
            parts.append("The pretrained stem conv was replicated over the input channels and divided by their number.")
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.skipped.items():
            # Shape reasons differ tensor by tensor; one group with the shapes in its examples reads better.
            if reason.startswith("shape "):
                by_reason.setdefault("with another shape", []).append(f"{key} {reason}")
            else:
                by_reason.setdefault(reason, []).append(key)
        if by_reason:
            groups = [f"{len(keys)} {reason} ({_examples(keys, examples)})" for reason, keys in by_reason.items()]
            parts.append(f"Skipped {len(self.skipped)} checkpoint tensors: " + "; ".join(groups) + ".")
        else:
            parts.append("Skipped no checkpoint tensor.")
        if self.missing:
            parts.append(
                f"{len(self.missing)} network tensors are not in the checkpoint and keep their initial values "
                f"({_examples(self.missing, examples)})."
            )
        return " ".join(parts)


def _examples(keys: Sequence[str], n: int) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... {len(keys) - n} more" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read any supported checkpoint file as a dense ResEnc state dict.

    The file is opened with ``torch.load(map_location="cpu", weights_only=True)``; DDP ("module.") and
    torch.compile ("_orig_mod.") prefixes are removed, and S3D scaffolding (mask tokens, densify convs) is dropped.

    Args:
        path: a checkpoint file of one of the formats in the module docstring.

    Returns:
        (state dict with nnU-Net key names, format name).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a torch file, needs ``weights_only=False``, or holds no ResEnc weights; the
            message names the file and the fix.
    """
    checkpoint = _read(path)
    return checkpoint.state, checkpoint.format


def _read(path_or_state: str | os.PathLike | Mapping) -> _Checkpoint:
    """A file or an in-memory checkpoint/state dict -> unpacked, checked ``_Checkpoint``."""
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
    return _Checkpoint(state, fmt, layout, source)


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


def _strip_wrappers(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove DDP / torch.compile prefixes (in any order, repeated) from every key."""
    out = {}
    for key, value in state.items():
        key = str(key)
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _unpack(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], str, _Layout]:
    """Detect the format of a loaded checkpoint and return (dense state dict, format, layout)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {source} holds a {type(obj).__name__}, not a dict of tensors; {SUPPORTED}.")
    layout = _Layout()
    if "network_weights" in obj:
        fmt, state = "nnssl", obj["network_weights"]
        layout = _Layout.from_plan(obj.get("nnssl_adaptation_plan"))
    elif isinstance(obj.get("network"), Mapping):
        state = _strip_wrappers(obj["network"])
        is_s3d = any(k.startswith(BACKBONE_PREFIX) for k in state)
        fmt = "s3d_training_checkpoint" if is_s3d else "training_checkpoint"
    elif isinstance(obj.get("model"), Mapping) or isinstance(obj.get("state_dict"), Mapping):
        fmt = "monai_bundle"
        state = obj["model"] if isinstance(obj.get("model"), Mapping) else obj["state_dict"]
    elif any(isinstance(v, torch.Tensor) for v in obj.values()):
        fmt, state = "state_dict", obj
    else:
        raise ValueError(
            f"checkpoint {source} holds no state dict: its top-level keys are {_examples(sorted(map(str, obj)), 8)}; "
            f"expected 'network_weights' (nnssl), 'network' (training checkpoint), 'model'/'state_dict' (MONAI) or "
            f"a plain state dict. {SUPPORTED}."
        )
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {source} ({fmt}) holds a {type(state).__name__} where a state dict belongs.")
    state = _strip_wrappers(state)
    if any(k.startswith(BACKBONE_PREFIX) for k in state):  # S3D weights, wherever they were saved
        state = dense_state_dict(state)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, fmt, layout


def _check_resenc(state: Mapping[str, torch.Tensor], layout: _Layout, source: str, obj: Any) -> None:
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
        f"weights. Its {len(state)} tensors belong to {_examples(modules, 8)} (e.g. "
        f"{_examples(sorted(state), 3)}). It is probably another architecture (SegResNet, SwinUNETR, "
        f"PlainConvUNet, Primus); {SUPPORTED}."
    )


_STAGE_KEY = re.compile(r"^(\d+)\.blocks\.(\d+)\.")


def encoder_layout(
    state: Mapping[str, torch.Tensor], encoder_key: str = "encoder.stages"
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Encoder feature channels and residual blocks per stage, read from conv weight shapes.

    Every conv of a ResEnc stage outputs the stage's channels, so dim 0 of any conv weight
    ``encoder.stages.<i>.blocks.<j>.*`` gives ``features[i]``. Used to name the preset a checkpoint was built with.

    Args:
        state: a dense ResEnc state dict.
        encoder_key: where the stages sit (nnssl's ``key_to_encoder``). Defaults to nnU-Net's "encoder.stages".

    Returns:
        (features, blocks_per_stage), both empty when no ResEnc stage is found.
    """
    prefix = encoder_key + "."
    features: dict[int, int] = {}
    blocks: dict[int, set[int]] = {}
    for key, value in state.items():
        match = _STAGE_KEY.match(key[len(prefix):]) if key.startswith(prefix) else None
        if match is None or value.ndim < 3:
            continue
        stage = int(match.group(1))
        features.setdefault(stage, int(value.shape[0]))
        blocks.setdefault(stage, set()).add(int(match.group(2)))
    stages = sorted(features)
    return tuple(features[s] for s in stages), tuple(len(blocks[s]) for s in stages)


def _describe(features: tuple[int, ...], blocks: tuple[int, ...]) -> str:
    """"preset 'tiny' (features ..., blocks ...)" or "features ..., blocks ..., which is no preset in PRESETS"."""
    shape = f"features {features}, blocks {blocks}"
    name = _preset_name(features, blocks)
    return f"preset '{name}' ({shape})" if name else f"{shape}, which is no preset in PRESETS"


def _preset_name(features: tuple[int, ...], blocks: tuple[int, ...]) -> str | None:
    """The name of the preset with these encoder features and blocks per stage, or None."""
    for name, preset in PRESETS.items():
        if tuple(preset["features"]) == features and tuple(preset["blocks_per_stage"]) == blocks:
            return name
    return None


# --------------------------------------------------------------------------------------------- loading


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
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    module = unwrap(network)
    if not isinstance(module, nn.Module):
        raise ValueError(f"network must be a torch module (a ResEncUNet), got {type(network).__name__}.")
    checkpoint = _read(path_or_state)
    targets = module.state_dict(keep_vars=True)
    if scope == "encoder+decoder" and not any(k.startswith(DECODER_PREFIXES) for k in checkpoint.state):
        raise ValueError(
            f"{checkpoint.source} has no pre-trained decoder (methods such as SimCLR, VoCo and AMAES train only "
            "the encoder): fine-tune it with transfer_scope 'encoder'."
        )
    copies, report, failures, n_encoder = _match(targets, checkpoint, scope)
    if n_encoder == 0:
        raise ValueError(
            f"the network ({type(module).__name__}) has no tensor under '{checkpoint.layout.stem}' or "
            f"'{checkpoint.layout.encoder}' (the stem/encoder keys of {checkpoint.source}); pass a ResEncUNet."
        )
    if failures and (strict_encoder or len(failures) == n_encoder):
        raise ValueError(_failure_message(failures, n_encoder, targets, checkpoint, strict_encoder))
    if failures:
        logger.warning(_failure_message(failures, n_encoder, targets, checkpoint, strict_encoder))
    with torch.no_grad():
        for target, value in copies:
            target.copy_(value)
    logger.info(report.summary())
    return report


def _tensor_groups(targets: Mapping[str, torch.Tensor]) -> list[tuple[list[str], torch.Tensor]]:
    """Group the names under which one tensor appears (nnU-Net registers modules twice), first name first."""
    groups: dict[int, tuple[list[str], torch.Tensor]] = {}
    for name, tensor in targets.items():
        groups.setdefault(id(tensor), ([], tensor))[0].append(name)
    return list(groups.values())


def _in_scope(names: Sequence[str], layout: _Layout, scope: str) -> bool:
    if any(layout.in_encoder(n) for n in names):
        return True
    return scope == "encoder+decoder" and any(n.startswith(DECODER_PREFIXES) for n in names)


class _Failure(NamedTuple):
    """A stem/encoder tensor of the network that cannot be loaded."""

    key: str
    reason: str
    shapes: tuple[torch.Size, torch.Size] | None = None  # (checkpoint, network) when both exist


def _match(
    targets: Mapping[str, torch.Tensor], checkpoint: _Checkpoint, scope: str
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], LoadReport, list[_Failure], int]:
    """Pair every network tensor with its checkpoint tensor; nothing is copied here.

    Returns:
        (copies [(network tensor, value)], report, stem/encoder failures, number of stem/encoder tensors).
    """
    state, layout = checkpoint.state, checkpoint.layout
    report = LoadReport(source_format=checkpoint.format, source=checkpoint.source, scope=scope)
    copies, failures, consumed, n_encoder = [], [], set(), 0
    for names, target in _tensor_groups(targets):
        key, is_encoder = names[0], any(layout.in_encoder(n) for n in names)
        n_encoder += is_encoder
        present = [n for n in names if n in state]
        consumed.update(present)
        if not present:
            report.missing.append(key)
            if is_encoder:
                failures.append(_Failure(key, MISSING_REASON))
            continue
        value = state[present[0]]
        if any(n.startswith(SEG_HEAD_PREFIX) for n in names):
            report.skipped[key] = SEG_HEAD_REASON
            continue
        if not _in_scope(names, layout, scope):
            report.skipped[key] = OUT_OF_SCOPE_REASON
            continue
        if value.shape != target.shape:
            if any(layout.is_in_proj(n) for n in names) and _replicable(value.shape, target.shape):
                value, report.replicated_stem = _replicate_stem(value, target.shape[1]), True
            else:
                report.skipped[key] = f"shape {tuple(value.shape)} != {tuple(target.shape)}"
                if is_encoder:
                    failures.append(_Failure(key, report.skipped[key], (value.shape, target.shape)))
                continue
        copies.append((target, value))
        report.loaded.append(key)
    for key in state:
        if key not in consumed:
            report.skipped[key] = UNKNOWN_KEY_REASON
    return copies, report, failures, n_encoder


def _replicable(source: torch.Size, target: torch.Size) -> bool:
    """Conv weights (O, C_p, *k) and (O, C, *k) that differ only in their input channels."""
    return len(source) == len(target) >= 3 and source[0] == target[0] and source[2:] == target[2:]


def _replicate_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, C_p, *k) -> (O, C, *k): the kernel summed over C_p, repeated C times and divided by C.

    With C_p = 1 this is the pretrained kernel / C on every channel (method.md section 3).
    """
    kernel = weight.sum(dim=1, keepdim=True)
    return kernel.repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels


def _failure_message(
    failures: Sequence[_Failure],
    n_encoder: int,
    targets: Mapping[str, torch.Tensor],
    checkpoint: _Checkpoint,
    strict: bool,
) -> str:
    """Say how many encoder tensors failed, show a few of each kind, and name the likely cause."""
    shape_failures = [f for f in failures if f.shapes is not None]
    missing = [f for f in failures if f.shapes is None]
    shown = "; ".join(f"{f.key}: {f.reason}" for f in shape_failures[:2] + missing[:2])
    action = "" if strict else " (strict_encoder=False: these tensors keep their initial values)"
    if len(failures) == n_encoder:
        action = " (no encoder tensor would load, so this raises even with strict_encoder=False)"
    return (
        f"{len(failures)} of {n_encoder} stem/encoder tensors of the network did not load from "
        f"{checkpoint.source}{action}: {len(shape_failures)} with another shape, {len(missing)} missing from "
        f"the checkpoint; e.g. {shown}. {_failure_cause(failures, targets, checkpoint)}"
    )


def _failure_cause(failures: Sequence[_Failure], targets: Mapping[str, torch.Tensor], checkpoint: _Checkpoint) -> str:
    """The likely cause of an encoder that does not fit: input channels, another preset, or a damaged file."""
    shapes = [f.shapes for f in failures if f.shapes is not None]
    if len(shapes) == len(failures) and all(_replicable(a, b) for a, b in shapes):
        theirs_in, ours_in = shapes[0][0][1], shapes[0][1][1]
        return (
            f"Only the input channels differ (checkpoint {theirs_in}, network {ours_in}), and the checkpoint names "
            f"no such input projection to replicate (keys_to_in_proj {list(checkpoint.layout.in_proj)}). Build the "
            f"network with in_channels={theirs_in}, or fix keys_to_in_proj in the adaptation plan."
        )
    ours = encoder_layout(targets, checkpoint.layout.encoder)
    theirs = encoder_layout(checkpoint.state, checkpoint.layout.encoder)
    if ours == theirs:
        return (
            f"Checkpoint and network have the same encoder ({_describe(*ours)}), so the checkpoint is incomplete "
            "or was edited; re-export it from the training run."
        )
    name = _preset_name(*theirs)
    build = f"resenc_unet('{name}', ...)" if name else f"features={theirs[0]}, blocks_per_stage={theirs[1]}"
    return (
        f"The checkpoint is {_describe(*theirs)}, the network is {_describe(*ours)}: build the network with "
        f"{build}, or use a checkpoint of the network's architecture."
    )


# --------------------------------------------------------------------------------------------- nnssl export


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
            f"the weights are {_describe(*found) if found[0] else 'not a ResEnc'}, not preset '{preset}' "
            f"({_describe(*expected)}); pass the preset they were built with."
        )
    layout = _Layout()
    in_channels = int(state[layout.in_proj[0] + ".weight"].shape[1])
    plan = {
        "architecture_plans": {
            "arch_class_name": NNSSL_ARCHITECTURE,
            "arch_kwargs": _nnssl_arch_kwargs(preset),
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
    state = _strip_wrappers(state)
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = dense_state_dict(state)
    return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}


def pretrained_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """What a pre-training run hands to fine-tuning: ResEnc weights with nnU-Net's key names, on the CPU.

    - a ``ResEncUNet`` (dense MAE-style reconstruction, Models Genesis, Volume Fusion): its state dict;
    - ``S3D`` or any wrapper that keeps its ``ResEncUNet`` as ``backbone`` (the contrastive and multi-task
      baselines): the backbone's state dict, pre-training heads dropped;
    - when the wrapper declares ``decoder_pretrained = False`` (its U-Net decoder never saw a gradient), only
      the stem and encoder, so that an ``encoder+decoder`` transfer fails clearly instead of loading an
      untrained decoder.

    Args:
        network: the trained network, possibly wrapped by DDP / DataParallel / torch.compile.
    """
    module = unwrap(network)
    backbone = getattr(module, "backbone", module)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"expected a ResEncUNet or a wrapper with a 'backbone' ResEncUNet, got {type(network).__name__}.")
    state = _strip_wrappers(backbone.state_dict())
    if not getattr(module, "decoder_pretrained", True):
        layout = _Layout()
        state = {k: v for k, v in state.items() if layout.in_encoder(k)}
    if not state:
        raise ValueError(f"{type(module).__name__} has no ResEnc encoder weights to export.")
    return {k: v.detach().cpu() for k, v in state.items()}


def _nnssl_arch_kwargs(preset: str) -> dict:
    """``dna_kwargs(preset)`` in the JSON-friendly form of nnssl's ``DynamicArchitecturePlans``."""
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
        preset = _preset_name(*encoder_layout(state))
        if preset is None:
            raise ValueError(
                f"checkpoint {path_in} is {_describe(*encoder_layout(state))}; add it to PRESETS or pass preset=."
            )
    checkpoint = nnssl_checkpoint(state, preset=preset, patch_size=patch_size)
    path_out = Path(path_out)
    atomic_torch_save(checkpoint, path_out)
    logger.info("wrote nnssl checkpoint %s (preset '%s') from %s", path_out, preset, path_in)
    return path_out
