"""Pair every tensor of a network with its tensor in a read checkpoint, and explain an encoder that does not fit.

Nothing is copied here: ``match`` returns the pairs, the ``LoadReport`` and the stem/encoder tensors that cannot
load, so that ``loading.plan_transfer`` can refuse a checkpoint before the network changes.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch

from custom_nets.transfer.layout import (
    DECODER_PREFIXES,
    SEG_HEAD_PREFIX,
    Layout,
    describe_encoder,
    encoder_layout,
    preset_name,
)
from custom_nets.transfer.reading import Checkpoint
from custom_nets.transfer.report import (
    MISSING_REASON,
    OUT_OF_SCOPE_REASON,
    SEG_HEAD_REASON,
    UNKNOWN_KEY_REASON,
    LoadReport,
)

__all__ = ["Failure", "Match", "match", "replicate_stem", "failure_message"]


class Failure(NamedTuple):
    """A stem/encoder tensor of the network that cannot be loaded."""

    key: str
    reason: str
    shapes: tuple[torch.Size, torch.Size] | None = None  # (checkpoint, network) when both exist


class Match(NamedTuple):
    """``copies``: [(network tensor, value)]; ``report``; ``failures`` of stem/encoder tensors; ``n_encoder``: how
    many stem/encoder tensors the network has."""

    copies: list[tuple[torch.Tensor, torch.Tensor]]
    report: LoadReport
    failures: list[Failure]
    n_encoder: int


def _tensor_groups(targets: Mapping[str, torch.Tensor]) -> list[tuple[list[str], torch.Tensor]]:
    """Group the names under which one tensor appears (nnU-Net registers modules twice), first name first."""
    groups: dict[int, tuple[list[str], torch.Tensor]] = {}
    for name, tensor in targets.items():
        groups.setdefault(id(tensor), ([], tensor))[0].append(name)
    return list(groups.values())


def _in_scope(names: Sequence[str], layout: Layout, scope: str) -> bool:
    if any(layout.in_encoder(n) for n in names):
        return True
    return scope == "encoder+decoder" and any(n.startswith(DECODER_PREFIXES) for n in names)


def match(targets: Mapping[str, torch.Tensor], checkpoint: Checkpoint, scope: str) -> Match:
    """Pair every network tensor (``state_dict(keep_vars=True)``) with its checkpoint tensor; nothing is copied.

    The segmentation head is skipped, tensors outside ``scope`` are skipped, and the input projection is
    replicated over the network's input channels when only those differ (``replicate_stem``).
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
                failures.append(Failure(key, MISSING_REASON))
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
                value, report.replicated_stem = replicate_stem(value, target.shape[1]), True
            else:
                report.skipped[key] = f"shape {tuple(value.shape)} != {tuple(target.shape)}"
                if is_encoder:
                    failures.append(Failure(key, report.skipped[key], (value.shape, target.shape)))
                continue
        copies.append((target, value))
        report.loaded.append(key)
    for key in state:
        if key not in consumed:
            report.skipped[key] = UNKNOWN_KEY_REASON
    return Match(copies, report, failures, n_encoder)


def _replicable(source: torch.Size, target: torch.Size) -> bool:
    """Conv weights (O, C_p, *k) and (O, C, *k) that differ only in their input channels."""
    return len(source) == len(target) >= 3 and source[0] == target[0] and source[2:] == target[2:]


def replicate_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, C_p, *k) -> (O, C, *k): the kernel summed over C_p, repeated C times and divided by C.

    With C_p = 1 this is the pretrained kernel / C on every channel (method.md section 3).
    """
    kernel = weight.sum(dim=1, keepdim=True)
    return kernel.repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels


def failure_message(
    failures: Sequence[Failure],
    n_encoder: int,
    targets: Mapping[str, torch.Tensor],
    checkpoint: Checkpoint,
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


def _failure_cause(failures: Sequence[Failure], targets: Mapping[str, torch.Tensor], checkpoint: Checkpoint) -> str:
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
            f"Checkpoint and network have the same encoder ({describe_encoder(*ours)}), so the checkpoint is "
            "incomplete or was edited; re-export it from the training run."
        )
    name = preset_name(*theirs)
    build = f"resenc_unet('{name}', ...)" if name else f"features={theirs[0]}, blocks_per_stage={theirs[1]}"
    return (
        f"The checkpoint is {describe_encoder(*theirs)}, the network is {describe_encoder(*ours)}: build the "
        f"network with {build}, or use a checkpoint of the network's architecture."
    )
