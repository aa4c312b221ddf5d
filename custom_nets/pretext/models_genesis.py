"""Models Genesis: restore the original patch from a deformed copy.

Zhou et al., "Models Genesis", Medical Image Analysis 2021 (MICCAI 2019), https://arxiv.org/abs/1908.06912.

Defining idea: a patch is deformed by a random chain of local pixel shuffling, a non-linear (Bezier) intensity
mapping and in-painting or out-painting, and the whole U-Net learns to restore the original (texture, intensity
and context) with an MSE loss over every voxel.

Settings (method.md section 4 and the public Models Genesis / nnssl transforms, per sample):
- flipping, applied to input and target alike: up to 3 steps, each taken with p 0.4 while the previous ones
  were, each flipping one random axis (the net effect is a flip parity per axis);
- local pixel shuffle (p 0.5): the patch is tiled by blocks with random edges U{1, ..., edge // 10} per axis at
  a random offset; 80 % of the blocks have their voxels permuted (the reference shuffles 10,000 random windows,
  which at 160^3 covers ~78 % of the voxels, 1 - exp(-1.5)); non-overlapping blocks keep the multiset of values
  of every block;
- non-linear intensity transform (p 0.9): a cubic Bezier curve through (0, 0), two control points U([0, 1]^2)
  and (1, 1), increasing, or (p 0.5) its decreasing counterpart ``v -> By(1 - Bx^-1(v))``, as the reference;
- painting (p 0.9): in-painting (p 0.2) fills up to 5 boxes (each drawn with p 0.95 while the previous ones were;
  sides in [1/6, 1/3] of the edge, 3 voxels from the border) with noise; otherwise out-painting (p 0.8) fills
  everything with noise except 1 box plus up to 4 more (p 0.95 each; sides in [3/7, 4/7] of the edge).

Our volumes are z-scored, not in [0, 1] as in Models Genesis. The Bezier mapping and the painting noise are
therefore defined on each sample's own intensity range: per sample and channel, ``v = (x - min) / (max - min)``,
``x' = min + f(v) (max - min)`` (a constant channel is left unchanged), and the noise is U(min, max) of that
channel, the analogue of the reference's U(0, 1) noise on [0, 1] images. The target stays in z-score units.

Everything is drawn from the given generator and computed on the batch's device with shapes known in advance
(no ``.item()``, no ``nonzero``): per-sample choices are applied with ``torch.where``, so every branch is
computed for the whole batch and the unused results are dropped. Works for 2-D and 3-D patches.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from custom_nets.pretext.boxes import box_mask, draw_boxes, uniform_int

__all__ = ["ModelsGenesis", "bezier_curve_table", "bezier_map", "local_pixel_shuffle", "box_union"]

_RANDOM_KEY_BITS = 20


def _per_sample(flag: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with ``ndim`` dimensions, for broadcasting per-sample choices."""
    return flag.view(-1, *([1] * (ndim - 1)))


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}.")
    return float(value)


def _check_fractions(name: str, value: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"{name} must be (low, high) fractions of the patch edge with 0 < low <= high <= 1, got {value}."
        )
    return low, high


def _consecutive_successes(probability: float, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) int64: how many of ``steps`` Bernoulli(p) draws succeed before the first failure."""
    draws = torch.rand(batch_size, steps, generator=generator, device=generator.device) < probability
    return draws.long().cumprod(dim=1).sum(dim=1)


def bezier_curve_table(
    control: torch.Tensor, decreasing: torch.Tensor, n_points: int = 1001
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tabulate each sample's intensity mapping ``f: [0, 1] -> [0, 1]``.

    The cubic Bezier curve ``B(t) = 3(1-t)^2 t P1 + 3(1-t) t^2 P2 + t^3 (1, 1)`` (P0 = (0, 0)) has both coordinates
    non-decreasing in t when P1, P2 lie in the unit square, so it is the graph of an increasing function
    ``f(Bx(t)) = By(t)``; the decreasing variant is ``f(Bx(t)) = By(1 - t)``.

    Args:
        control: (B, 4) float, (x1, y1, x2, y2) of the two inner control points, in [0, 1].
        decreasing: (B,) bool.
        n_points: table length. Defaults to 1001.

    Returns:
        ``(xs, ys)``, each (B, n_points) float32; ``xs`` non-decreasing from 0 to 1.
    """
    t = torch.linspace(0.0, 1.0, n_points, device=control.device, dtype=torch.float32)
    w1, w2, w3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    x1, y1, x2, y2 = (c.float()[:, None] for c in control.unbind(dim=1))
    xs = torch.cummax(x1 * w1 + x2 * w2 + w3, dim=1).values  # cummax only removes float rounding wiggles
    ys = torch.cummax(y1 * w1 + y2 * w2 + w3, dim=1).values
    ys = torch.where(decreasing[:, None], ys.flip(1), ys)
    return xs, ys


def bezier_map(values: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of each sample's table: (B, M) values in [0, 1] -> (B, M) in [0, 1]."""
    values = values.float().clamp(0.0, 1.0).contiguous()
    index = torch.searchsorted(xs.contiguous(), values).clamp(1, xs.shape[1] - 1)
    x0, x1 = xs.gather(1, index - 1), xs.gather(1, index)
    y0, y1 = ys.gather(1, index - 1), ys.gather(1, index)
    span = x1 - x0
    weight = torch.where(span > 0, (values - x0) / span.clamp_min(1e-12), torch.zeros_like(values)).clamp(0.0, 1.0)
    return y0 + weight * (y1 - y0)


def local_pixel_shuffle(
    image: torch.Tensor,
    block: torch.Tensor,
    offset: torch.Tensor,
    block_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Permute the voxels inside randomly chosen blocks of a per-sample block grid.

    Voxel v of sample b lies in block ``(v + offset[b]) // block[b]`` (per axis); each block is selected with
    probability ``block_fraction`` and its voxels are permuted at random (the same permutation for every
    channel, so co-registered channels stay aligned). Two sorts per sample do it for all blocks at once: by
    (block, random key) for a random order and by (block, position) for the canonical one; the i-th voxel of
    a block in the canonical order receives the i-th in the random order.

    Args:
        image: (B, C, *spatial).
        block: (B, D) int64 block edges in voxels (>= 1).
        offset: (B, D) int64 grid offsets in [0, block).
        block_fraction: share of blocks that are shuffled.
        generator: the source of randomness.

    Returns:
        (B, C, *spatial), the shuffled copy.
    """
    batch_size, channels, *spatial = image.shape
    n_dims, n_voxels = len(spatial), math.prod(spatial)
    block_id = torch.zeros((batch_size,) + (1,) * n_dims, dtype=torch.int64, device=image.device)
    n_ids = 1
    for axis, size in enumerate(spatial):
        index = (torch.arange(size, device=image.device) + offset[:, axis, None]) // block[:, axis, None]  # <= size
        view = [batch_size] + [1] * n_dims
        view[1 + axis] = size
        block_id = block_id * (size + 1) + index.view(view)
        n_ids *= size + 1
    block_id = block_id.reshape(batch_size, n_voxels)
    device = generator.device
    selected = torch.rand(batch_size, n_ids, generator=generator, device=device) < block_fraction
    selected = selected.gather(1, block_id)
    key = torch.randint(0, 2**_RANDOM_KEY_BITS, (batch_size, n_voxels), generator=generator, device=device)
    random_order = torch.argsort(block_id * 2**_RANDOM_KEY_BITS + key, dim=1)
    canonical_order = torch.argsort(block_id, dim=1, stable=True)
    flat = image.reshape(batch_size, channels, n_voxels)
    expand = (batch_size, channels, n_voxels)
    moved = flat.gather(2, random_order[:, None].expand(expand))
    shuffled = torch.empty_like(flat).scatter_(2, canonical_order[:, None].expand(expand), moved)
    return torch.where(selected[:, None], shuffled, flat).view_as(image)


def box_union(
    starts: torch.Tensor, sizes: torch.Tensor, count: torch.Tensor, spatial_size: Sequence[int]
) -> torch.Tensor:
    """(B, 1, *spatial) bool: inside any of the first ``count[b]`` boxes of sample b (``draw_boxes`` layout)."""
    union = torch.zeros((starts.shape[0], 1, *spatial_size), dtype=torch.bool, device=starts.device)
    for k in range(starts.shape[1]):
        in_use = _per_sample(count > k, len(spatial_size) + 2)
        union = union | (box_mask(starts[:, k], sizes[:, k], spatial_size) & in_use)
    return union


class ModelsGenesis:
    """Models Genesis pretext transform; see the module docstring for the idea and the settings.

    Args:
        flip_prob: probability of each of the (up to ``max_flips``) flip steps. Defaults to 0.4.
        max_flips: largest number of flip steps. Defaults to 3.
        shuffle_prob: probability of local pixel shuffling. Defaults to 0.5.
        shuffle_block_fraction: share of blocks shuffled. Defaults to 0.8.
        shuffle_block_divisor: block edges are U{1, ..., edge // divisor}. Defaults to 10.
        nonlinear_prob: probability of the Bezier intensity transform. Defaults to 0.9.
        decreasing_prob: probability that the Bezier mapping is decreasing. Defaults to 0.5.
        paint_prob: probability of in- or out-painting. Defaults to 0.9.
        inpaint_prob: probability of in-painting given painting (otherwise out-painting). Defaults to 0.2.
        inpaint_boxes: most in-painted boxes. Defaults to 5.
        inpaint_size: box sides as (low, high) fractions of the edge. Defaults to (1/6, 1/3).
        outpaint_boxes: most kept boxes in out-painting (the first is always kept). Defaults to 5.
        outpaint_size: kept box sides as (low, high) fractions of the edge. Defaults to (3/7, 4/7).
        box_prob: probability of each further box while the previous ones were drawn. Defaults to 0.95.
        margin: voxels between painted boxes and the patch border. Defaults to 3.
        bezier_points: entries of the tabulated Bezier mapping. Defaults to 1001.

    Call: ``views = ModelsGenesis()(image, generator)`` with ``image`` (B, C, *spatial) returns
        ``input``: (B, C, *spatial) deformed patch; ``target``: (B, C, *spatial) the flipped original.
    """

    def __init__(
        self,
        flip_prob: float = 0.4,
        max_flips: int = 3,
        shuffle_prob: float = 0.5,
        shuffle_block_fraction: float = 0.8,
        shuffle_block_divisor: int = 10,
        nonlinear_prob: float = 0.9,
        decreasing_prob: float = 0.5,
        paint_prob: float = 0.9,
        inpaint_prob: float = 0.2,
        inpaint_boxes: int = 5,
        inpaint_size: Sequence[float] = (1 / 6, 1 / 3),
        outpaint_boxes: int = 5,
        outpaint_size: Sequence[float] = (3 / 7, 4 / 7),
        box_prob: float = 0.95,
        margin: int = 3,
        bezier_points: int = 1001,
    ) -> None:
        self.flip_prob = _check_probability("flip_prob", flip_prob)
        self.shuffle_prob = _check_probability("shuffle_prob", shuffle_prob)
        self.shuffle_block_fraction = _check_probability("shuffle_block_fraction", shuffle_block_fraction)
        self.nonlinear_prob = _check_probability("nonlinear_prob", nonlinear_prob)
        self.decreasing_prob = _check_probability("decreasing_prob", decreasing_prob)
        self.paint_prob = _check_probability("paint_prob", paint_prob)
        self.inpaint_prob = _check_probability("inpaint_prob", inpaint_prob)
        self.box_prob = _check_probability("box_prob", box_prob)
        counts = {"max_flips": max_flips, "inpaint_boxes": inpaint_boxes, "outpaint_boxes": outpaint_boxes}
        for name, value in counts.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if int(shuffle_block_divisor) < 1:
            raise ValueError(f"shuffle_block_divisor must be >= 1, got {shuffle_block_divisor}; the reference uses 10.")
        if int(margin) < 0 or int(bezier_points) < 2:
            raise ValueError(f"margin must be >= 0 and bezier_points >= 2, got {margin} and {bezier_points}.")
        self.max_flips = int(max_flips)
        self.shuffle_block_divisor = int(shuffle_block_divisor)
        self.inpaint_boxes, self.outpaint_boxes = int(inpaint_boxes), int(outpaint_boxes)
        self.inpaint_size = _check_fractions("inpaint_size", inpaint_size)
        self.outpaint_size = _check_fractions("outpaint_size", outpaint_size)
        self.margin = int(margin)
        self.bezier_points = int(bezier_points)

    @staticmethod
    def side_range(spatial_size: Sequence[int], fractions: tuple[float, float]) -> list[tuple[int, int]]:
        """Per axis the (smallest, largest) box side in voxels: ``floor(edge * fraction)``, at least 1."""
        ranges = []
        for size in spatial_size:
            low = min(max(1, int(size * fractions[0])), size)
            ranges.append((low, min(max(low, int(size * fractions[1])), size)))
        return ranges

    def draw(self, batch_size: int, spatial_size: Sequence[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw every per-sample choice (small tensors on the generator's device; voxel noise is drawn later).

        Returns a dict of (B, ...) tensors: ``flip_steps`` (B,), ``flip_parity`` (B, D) bool, ``shuffle`` (B,)
        bool, ``block`` and ``offset`` (B, D) int64, ``nonlinear`` (B,) bool, ``control`` (B, 4),
        ``decreasing`` (B,) bool, ``inpaint`` / ``outpaint`` (B,) bool (never both), ``inpaint_count`` (B,) in
        [0, inpaint_boxes], ``outpaint_count`` (B,) in [1, outpaint_boxes], and the boxes ``inpaint_starts``,
        ``inpaint_sizes``, ``outpaint_starts``, ``outpaint_sizes`` (B, K, D) int64.
        """
        device, n_dims = generator.device, len(spatial_size)

        def coin(probability: float) -> torch.Tensor:
            return torch.rand(batch_size, generator=generator, device=device) < probability

        flip_steps = _consecutive_successes(self.flip_prob, batch_size, self.max_flips, generator)
        flip_axis = torch.randint(0, n_dims, (batch_size, self.max_flips), generator=generator, device=device)
        taken = torch.arange(self.max_flips, device=device) < flip_steps[:, None]
        flip_parity = torch.stack([((flip_axis == d) & taken).sum(dim=1) % 2 == 1 for d in range(n_dims)], dim=1)

        largest_block = torch.tensor([max(1, s // self.shuffle_block_divisor) for s in spatial_size], device=device)
        smallest_block = torch.ones(batch_size, n_dims, dtype=torch.int64, device=device)
        block = uniform_int(smallest_block, largest_block.expand(batch_size, n_dims), generator)
        offset = uniform_int(torch.zeros_like(block), block - 1, generator)

        shuffle, nonlinear = coin(self.shuffle_prob), coin(self.nonlinear_prob)
        control = torch.rand(batch_size, 4, generator=generator, device=device)
        decreasing = coin(self.decreasing_prob)
        paint, inner = coin(self.paint_prob), coin(self.inpaint_prob)

        inpaint_count = _consecutive_successes(self.box_prob, batch_size, self.inpaint_boxes, generator)
        inpaint_range = self.side_range(spatial_size, self.inpaint_size)
        inpaint_starts, inpaint_sizes = draw_boxes(
            batch_size, self.inpaint_boxes, spatial_size, inpaint_range, generator, self.margin
        )
        outpaint_count = 1 + _consecutive_successes(self.box_prob, batch_size, self.outpaint_boxes - 1, generator)
        outpaint_range = self.side_range(spatial_size, self.outpaint_size)
        outpaint_starts, outpaint_sizes = draw_boxes(
            batch_size, self.outpaint_boxes, spatial_size, outpaint_range, generator, self.margin
        )
        return {
            "flip_steps": flip_steps,
            "flip_parity": flip_parity,
            "shuffle": shuffle,
            "block": block,
            "offset": offset,
            "nonlinear": nonlinear,
            "control": control,
            "decreasing": decreasing,
            "inpaint": paint & inner,
            "outpaint": paint & ~inner,
            "inpaint_count": inpaint_count,
            "inpaint_starts": inpaint_starts,
            "inpaint_sizes": inpaint_sizes,
            "outpaint_count": outpaint_count,
            "outpaint_starts": outpaint_starts,
            "outpaint_sizes": outpaint_sizes,
        }

    def apply(
        self, image: torch.Tensor, params: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Deform ``image`` (B, C, *spatial) with the drawn ``params``; voxel-wise noise comes from ``generator``."""
        batch_size, channels, *spatial = image.shape
        ndim = image.ndim
        target = image
        for axis in range(len(spatial)):
            target = torch.where(_per_sample(params["flip_parity"][:, axis], ndim), target.flip(2 + axis), target)
        x = target
        shuffled = local_pixel_shuffle(x, params["block"], params["offset"], self.shuffle_block_fraction, generator)
        x = torch.where(_per_sample(params["shuffle"], ndim), shuffled, x)

        flat = x.reshape(batch_size, channels, -1)
        low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
        extent = high - low
        unit = (flat - low) / extent.clamp_min(torch.finfo(torch.float32).tiny)
        xs, ys = bezier_curve_table(params["control"], params["decreasing"], self.bezier_points)
        mapped = bezier_map(unit.reshape(batch_size, -1), xs, ys).view_as(flat).to(x.dtype)
        mapped = (low + mapped * extent).view_as(x)
        x = torch.where(_per_sample(params["nonlinear"], ndim), mapped, x)

        noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        shape = (batch_size, channels) + (1,) * len(spatial)
        noise = low.view(shape) + noise * extent.view(shape)
        inside = box_union(params["inpaint_starts"], params["inpaint_sizes"], params["inpaint_count"], spatial)
        kept = box_union(params["outpaint_starts"], params["outpaint_sizes"], params["outpaint_count"], spatial)
        x = torch.where(_per_sample(params["inpaint"], ndim) & inside, noise, x)
        x = torch.where(_per_sample(params["outpaint"], ndim) & ~kept, noise, x)
        return {"input": x, "target": target}

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if image.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(image.shape)}.")
        return self.apply(image, self.draw(image.shape[0], tuple(image.shape[2:]), generator), generator)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(flip_prob={self.flip_prob}, shuffle_prob={self.shuffle_prob}, "
            f"nonlinear_prob={self.nonlinear_prob}, paint_prob={self.paint_prob}, inpaint_prob={self.inpaint_prob})"
        )
