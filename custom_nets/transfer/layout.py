"""Where a ResEnc state dict keeps its stem, encoder stages and input projection, and which preset it is.

Key names are nnU-Net's ResEnc names (``encoder.stem.*``, ``encoder.stages.<i>.blocks.<j>.*``, ``decoder.*``);
nnssl checkpoints may name other places in their adaptation plan (``key_to_stem``, ``key_to_encoder``,
``keys_to_in_proj``). ``encoder_layout`` reads the encoder's widths and depths from the weight shapes, and
``preset_name`` / ``describe_encoder`` turn them into the words error messages use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from custom_nets.nets.resenc import PRESETS

__all__ = [
    "Layout",
    "WRAPPER_PREFIXES",
    "SEG_HEAD_PREFIX",
    "DECODER_PREFIXES",
    "strip_wrappers",
    "encoder_layout",
    "preset_name",
    "describe_encoder",
]

# Added in front of every key by DistributedDataParallel / DataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SEG_HEAD_PREFIX = "decoder.seg_layers."
DECODER_PREFIXES = ("decoder.stages.", "decoder.transpconvs.")
_STAGE_KEY = re.compile(r"^(\d+)\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class Layout:
    """Where the stem, the encoder stages and the input projection sit in a state dict.

    The names are those of nnssl's adaptation plan (``key_to_stem``, ``key_to_encoder``, ``keys_to_in_proj``);
    the defaults are nnU-Net's ResEnc, and an nnssl checkpoint's own plan overrides them.
    """

    stem: str = "encoder.stem"
    encoder: str = "encoder.stages"
    in_proj: tuple[str, ...] = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")

    @classmethod
    def from_plan(cls, plan: Any) -> "Layout":
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


def strip_wrappers(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove DDP / torch.compile prefixes (in any order, repeated) from every key."""
    out = {}
    for key, value in state.items():
        key = str(key)
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


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


def preset_name(features: tuple[int, ...], blocks: tuple[int, ...]) -> str | None:
    """The name of the preset in ``PRESETS`` with these encoder features and blocks per stage, or None."""
    for name, preset in PRESETS.items():
        if tuple(preset["features"]) == tuple(features) and tuple(preset["blocks_per_stage"]) == tuple(blocks):
            return name
    return None


def describe_encoder(features: tuple[int, ...], blocks: tuple[int, ...]) -> str:
    """"preset 'tiny' (features ..., blocks ...)" or "features ..., blocks ..., which is no preset in PRESETS"."""
    shape = f"features {features}, blocks {blocks}"
    name = preset_name(features, blocks)
    return f"preset '{name}' ({shape})" if name else f"{shape}, which is no preset in PRESETS"
