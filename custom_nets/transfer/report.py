"""``LoadReport``: what a weight transfer copied, skipped and left untouched, tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "LoadReport",
    "SEG_HEAD_REASON",
    "OUT_OF_SCOPE_REASON",
    "UNKNOWN_KEY_REASON",
    "MISSING_REASON",
    "first_keys",
]

SEG_HEAD_REASON = "segmentation head is trained anew"
OUT_OF_SCOPE_REASON = "not in transfer scope"
UNKNOWN_KEY_REASON = "not in the network"
MISSING_REASON = "missing from the checkpoint"


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
        source_format: the checkpoint format (the ``name`` of its reader in ``custom_nets.transfer.formats``).
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
            groups = [f"{len(keys)} {reason} ({first_keys(keys, examples)})" for reason, keys in by_reason.items()]
            parts.append(f"Skipped {len(self.skipped)} checkpoint tensors: " + "; ".join(groups) + ".")
        else:
            parts.append("Skipped no checkpoint tensor.")
        if self.missing:
            parts.append(
                f"{len(self.missing)} network tensors are not in the checkpoint and keep their initial values "
                f"({first_keys(self.missing, examples)})."
            )
        return " ".join(parts)


def first_keys(keys: Sequence[str], n: int) -> str:
    """The first ``n`` keys, comma-separated, and how many more there are."""
    shown = ", ".join(keys[:n])
    return shown + (f", ... {len(keys) - n} more" if len(keys) > n else "")

