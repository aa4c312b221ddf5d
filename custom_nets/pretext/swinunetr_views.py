"""Views of SwinUNETR-style pre-training: two rotated, cut-out views per sample with their targets."""

from __future__ import annotations

from typing import Sequence

import torch

from custom_nets.pretext.boxes import uniform_int

__all__ = ["SwinUNETRViews", "rotate90", "random_boxes_mask"]


def rotate90(image: torch.Tensor, k: torch.Tensor, plane: Sequence[int] = (0, 1)) -> torch.Tensor:
    """Rotate every sample by its own multiple of 90 degrees in one spatial plane, as one gather (no host sync).

    Sample b equals ``torch.rot90(image[b], int(k[b]), dims=(1 + plane[0], 1 + plane[1]))``.

    Args:
        image: (B, C, *spatial); the two plane axes must have the same size.
        k: (B,) integer number of quarter turns (any integer; taken modulo 4).
        plane: the two spatial axes of the rotation plane (0 = X). Defaults to (0, 1), a rotation about Z.

    Returns:
        (B, C, *spatial) rotated image.
    """
    ndim = image.ndim - 2
    a, b = (int(p) % ndim for p in plane)
    if a == b or len(plane) != 2:
        raise ValueError(f"plane must name two different spatial axes, got {tuple(plane)}.")
    n = image.shape[2 + a]
    if image.shape[2 + b] != n:
        raise ValueError(
            f"a 90-degree rotation needs a square plane, got sizes {n} and {image.shape[2 + b]} on spatial axes"
            f" {a} and {b}; use a patch with equal sizes there."
        )
    batch = image.shape[0]
    x = image.movedim((2 + a, 2 + b), (2, 3))
    moved_shape = x.shape
    x = x.reshape(batch, x.shape[1], n * n, -1)
    i = torch.arange(n, device=image.device).view(1, n, 1)
    j = torch.arange(n, device=image.device).view(1, 1, n)
    turns = (k.to(image.device).long() % 4).view(-1, 1, 1)
    last = n - 1
    # Source of output voxel (i, j) after `turns` quarter turns from the first plane axis towards the second.
    src_i = torch.where(turns == 0, i, torch.where(turns == 1, j, torch.where(turns == 2, last - i, last - j)))
    src_j = torch.where(turns == 0, j, torch.where(turns == 1, last - i, torch.where(turns == 2, last - j, i)))
    source = (src_i * n + src_j).expand(batch, n, n).reshape(batch, 1, n * n, 1)
    rotated = torch.gather(x, 2, source.expand(-1, x.shape[1], -1, x.shape[3]))
    return rotated.reshape(moved_shape).movedim((2, 3), (2 + a, 2 + b))


def random_boxes_mask(
    batch: int,
    spatial: Sequence[int],
    max_fraction: float,
    edge_range: tuple[float, float],
    max_boxes: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Union of random axis-aligned boxes covering a random share of the volume, one set per sample.

    Each sample draws a budget ``U(0, max_fraction) * volume``; boxes (edges uniform in ``edge_range`` times the
    axis size, corners uniform, clipped at the border) are added while the summed volume of the boxes already
    placed is below the budget, as in the original SwinUNETR pre-training (which also counts box volumes, not
    their union). At most ``max_boxes`` boxes are placed, so a budget needing more stays short.

    Args:
        batch: number of masks.
        spatial: spatial size.
        max_fraction: largest budget as a fraction of the volume, in [0, 1].
        edge_range: (min, max) box edge as a fraction of each axis size.
        max_boxes: boxes drawn per sample.
        generator: source of randomness (on ``device``).
        device: where the mask lives.

    Returns:
        (B, 1, *spatial) bool, True inside a box.
    """
    sizes = torch.tensor(list(spatial), device=device)
    low = (sizes.float() * edge_range[0]).long().clamp_min(1)
    high = torch.maximum((sizes.float() * edge_range[1]).long(), low)
    shape = (batch, max_boxes, len(spatial))
    edges = low + uniform_int(0, (high - low).expand(shape), generator)
    starts = uniform_int(0, (sizes - low).expand(shape), generator)
    ends = torch.minimum(starts + edges, sizes)
    volume = (ends - starts).prod(dim=-1).float()  # (B, M) clipped box volumes
    volume_voxels = 1
    for size in spatial:
        volume_voxels *= int(size)  # from the Python shape: no device round trip
    budget = torch.rand(batch, 1, generator=generator, device=device) * max_fraction * volume_voxels
    placed_before = volume.cumsum(dim=1) - volume
    active = (placed_before < budget).float()  # (B, M)
    # The mask is a sum of separable boxes: count = sum_m active_m * in_x(m) * in_y(m) * in_z(m), one einsum.
    inside = []
    for axis, size in enumerate(spatial):
        coords = torch.arange(size, device=device).view(1, 1, -1)
        inside.append(((coords >= starts[..., axis : axis + 1]) & (coords < ends[..., axis : axis + 1])).float())
    letters = "xyzw"[: len(spatial)]
    terms = ",".join(f"bm{c}" for c in letters)
    count = torch.einsum(f"bm,{terms}->b{letters}", active, *inside)
    return (count > 0.5).unsqueeze(1)


class SwinUNETRViews:
    """Two views per sample for SwinUNETR-style pre-training: random rotation (label 0..3) and cut-outs.

    Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR 2022,
    https://arxiv.org/abs/2111.14791: the network in-paints cut-out regions (L1), classifies the rotation
    (cross-entropy) and makes the two views of a sample agree (contrastive), weights 1:1:1 (method.md section 4).

    Per view and sample: a rotation by ``k ~ U{0, 1, 2, 3}`` quarter turns in ``plane`` (default X-Y, i.e. about
    the z-axis, as the paper and OpenMind describe; the original code turns the last two axes); then the
    original code's two cut-out passes, each with a budget of up to ``max_fraction`` of the volume (0.3, so up to
    60 % in all, OpenMind's "maximum removal rate of 60 %"): the first fills its boxes with N(0, 1) noise
    (z-scored intensity space; the original rescales noise to [0, 1] for its [0, 1] CT input), the second with the
    same region of another sample's view (skipped when B = 1). Box edges are 5-25 % of each axis (original code).

    Output layout (``__call__``), with B the loader's batch:
        input: (2B, C, *spatial): rows i and i + B are the two views of sample i (positives).
        target: (2B, C, *spatial): the rotated views before cut-out (in-painting target).
        rotation: (2B,) long, quarter turns of each row (0..3).
        cutout: (2B, 1, *spatial) float, 1 where a voxel was replaced.

    Args:
        plane: two spatial axes of the rotation plane. Defaults to (0, 1).
        max_fraction: largest cut-out budget per pass. Defaults to 0.3.
        edge_range: box edge range as a fraction of the axis. Defaults to (0.05, 0.25).
        max_boxes: boxes drawn per pass and view. Defaults to 128.
        mix_samples: run the second pass (content of another sample). Defaults to True.
    """

    def __init__(
        self,
        plane: Sequence[int] = (0, 1),
        max_fraction: float = 0.3,
        edge_range: tuple[float, float] = (0.05, 0.25),
        max_boxes: int = 128,
        mix_samples: bool = True,
    ) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}.")
        if not 0.0 < edge_range[0] <= edge_range[1] <= 1.0:
            raise ValueError(f"edge_range must satisfy 0 < min <= max <= 1, got {tuple(edge_range)}.")
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {max_boxes}.")
        self.plane = tuple(int(p) for p in plane)
        self.max_fraction = float(max_fraction)
        self.edge_range = (float(edge_range[0]), float(edge_range[1]))
        self.max_boxes = int(max_boxes)
        self.mix_samples = bool(mix_samples)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(B, C, *spatial) patches -> views; see the class docstring."""
        batch, spatial, device = image.shape[0], tuple(image.shape[2:]), image.device
        rotation = torch.randint(0, 4, (2 * batch,), generator=generator, device=device)
        target = rotate90(torch.cat([image, image], dim=0), rotation, self.plane)
        mask_args = (spatial, self.max_fraction, self.edge_range, self.max_boxes, generator, device)
        noise_region = random_boxes_mask(2 * batch, *mask_args)
        noise = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)
        views = torch.where(noise_region, noise, target)
        cutout = noise_region
        if self.mix_samples and batch > 1:
            # Partner of row r: another sample's view of the same group (rows 0..B-1 or B..2B-1).
            offset = 1 + uniform_int(0, torch.full((2 * batch,), batch - 2, device=device), generator)
            rows = torch.arange(2 * batch, device=device)
            partner = (rows % batch + offset) % batch + (rows // batch) * batch
            mix_region = random_boxes_mask(2 * batch, *mask_args)
            views = torch.where(mix_region, views[partner], views)
            cutout = cutout | mix_region
        return {"input": views, "target": target, "rotation": rotation, "cutout": cutout.float()}
