"""Random axis-aligned boxes drawn and rasterised on the batch's device, without host syncs.

Several pretext tasks paint boxes into a patch (Models Genesis' in-/out-painting, Volume Fusion's coefficient
map). Their sizes and positions are drawn here as integer tensors from a ``torch.Generator`` (never as Python
numbers, which would wait for the GPU) and turned into voxel masks by comparing coordinates with the box
bounds, one axis at a time, so one box costs one broadcast AND per axis.

Shapes: ``starts`` and ``sizes`` are (B, K, D) int64 (K boxes per sample, D spatial axes, voxels); a rasterised
box is (B, 1, *spatial) bool.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["uniform_int", "draw_boxes", "box_mask"]


def uniform_int(
    low: torch.Tensor | int, high: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Integers drawn uniformly from [low, high] (both inclusive), element-wise, without a host sync;
    ``low <= high`` is required.

    Args:
        low: int64 tensor broadcastable to ``high`` (or a Python int, e.g. 0), on the generator's device.
        high: int64 tensor on the generator's device.
        generator: the source of randomness.

    Returns:
        int64 tensor of the broadcast shape.
    """
    high = high.long()
    low = torch.as_tensor(low, dtype=torch.int64, device=high.device)
    shape = torch.broadcast_shapes(low.shape, high.shape)
    u = torch.rand(shape, generator=generator, device=high.device, dtype=torch.float64)
    value = low + torch.floor(u * (high - low + 1).to(torch.float64)).to(torch.int64)
    return torch.minimum(value, high)


def draw_boxes(
    batch_size: int,
    n_boxes: int,
    spatial_size: Sequence[int],
    size_range: Sequence[Sequence[int]],
    generator: torch.Generator,
    margin: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n_boxes`` boxes per sample with independent, uniform integer sides and positions.

    Args:
        batch_size: B.
        n_boxes: K, boxes per sample.
        spatial_size: patch size in voxels (D axes).
        size_range: per axis the (smallest, largest) side in voxels, both inclusive and already within the
            patch (1 <= smallest <= largest <= size).
        generator: the source of randomness (on the batch's device).
        margin: keep boxes this many voxels away from the patch border where the box fits with it; a box too
            large for the margin is placed anywhere inside the patch. Defaults to 0.

    Returns:
        ``(starts, sizes)``, each (B, K, D) int64: the box covers ``starts <= coordinate < starts + sizes``.
    """
    device = generator.device
    shape = (batch_size, n_boxes)
    starts, sizes = [], []
    for size, (smallest, largest) in zip(spatial_size, size_range):
        if not 1 <= smallest <= largest <= size:
            raise ValueError(
                f"box sides must satisfy 1 <= smallest <= largest <= patch size, got ({smallest}, {largest}) "
                f"for an axis of {size} voxels; clip the side range to the patch."
            )
        side = uniform_int(
            torch.full(shape, smallest, device=device), torch.full(shape, largest, device=device), generator
        )
        free = size - side
        low = torch.clamp(torch.full_like(side, margin), max=free)
        high = torch.maximum(free - margin, low)
        starts.append(uniform_int(low, high, generator))
        sizes.append(side)
    return torch.stack(starts, dim=-1), torch.stack(sizes, dim=-1)


def box_mask(starts: torch.Tensor, sizes: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """Rasterise one box per sample.

    Args:
        starts, sizes: (B, D) int64, the box of each sample (e.g. ``starts[:, k]`` of ``draw_boxes``).
        spatial_size: patch size in voxels (D axes).

    Returns:
        (B, 1, *spatial_size) bool, True inside the box.
    """
    batch_size, n_dims = starts.shape
    if n_dims != len(spatial_size):
        raise ValueError(f"boxes have {n_dims} axes but the patch {tuple(spatial_size)} has {len(spatial_size)}.")
    inside = None
    for axis, size in enumerate(spatial_size):
        coordinate = torch.arange(size, device=starts.device)
        on_axis = (coordinate >= starts[:, axis, None]) & (coordinate < (starts + sizes)[:, axis, None])
        view = [batch_size, 1] + [1] * n_dims
        view[2 + axis] = size
        on_axis = on_axis.view(view)
        inside = on_axis if inside is None else inside & on_axis
    return inside.expand(batch_size, 1, *spatial_size)
