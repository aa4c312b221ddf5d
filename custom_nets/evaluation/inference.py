"""Sliding-window inference with nnU-Net's test-time mirroring, as a MONAI inferer."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["MirroredSlidingWindowInferer"]


class MirroredSlidingWindowInferer(Inferer):
    """Gaussian-weighted sliding-window inference, averaged over mirrored copies of the input.

    nnU-Net predicts every mirror combination of the spatial axes (8 for 3 axes) and averages the softmax
    probabilities; this is the same, on top of MONAI's ``SlidingWindowInferer``. The output is the mean of
    ``softmax(logits)`` over the mirror set, i.e. class probabilities, shape (B, classes, *spatial).

    Args:
        roi_size: window size in voxels (the training patch size).
        overlap: fraction of overlap between windows. Defaults to 0.5.
        mirror_axes: spatial axes (0-based) to mirror; () disables mirroring. Defaults to (0, 1, 2).
        sw_batch_size: windows per network call. Defaults to 1.
        mode: window blending, "gaussian" (nnU-Net) or "constant". Defaults to "gaussian".
        sw_device, device: where windows run and where the output is accumulated (MONAI semantics).
        progress: show a progress bar per volume. Defaults to False.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        overlap: float = 0.5,
        mirror_axes: Sequence[int] = (0, 1, 2),
        sw_batch_size: int = 1,
        mode: str = "gaussian",
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.window = SlidingWindowInferer(
            roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, sw_device=sw_device, device=device,
            progress=progress,
        )
        self.mirror_axes = tuple(int(a) for a in mirror_axes)

    def mirror_sets(self) -> list[tuple[int, ...]]:
        """Every subset of ``mirror_axes`` (the empty set first), as tensor dims of a (B, C, *spatial) batch."""
        dims = [a + 2 for a in self.mirror_axes]
        return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """(B, C, *spatial) image -> (B, classes, *spatial) mean class probabilities."""
        total = None
        flips = self.mirror_sets()
        for dims in flips:
            x = torch.flip(inputs, dims) if dims else inputs
            logits = self.window(x, network, *args, **kwargs)
            probs = torch.softmax(logits.float(), dim=1)
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total + probs
        return total / len(flips)
