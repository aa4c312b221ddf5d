"""Intensity augmentations of a batch on its device, one random draw per sample, no host syncs.

AMAES (Munk et al., arXiv 2408.00640, appendix B) trains the encoder to be invariant to intensity changes: they
are applied to the network input only, never to the reconstruction target. The augmentations and their
per-sample probabilities follow AMAES' table; where our copy of the table is unreadable (noise and blur ranges)
nnU-Net's default ranges are used:

| augmentation | p | parameters |
|---|---|---|
| bias field | 0.33 | smooth multiplicative field ``exp(g)``, g linearly upsampled from a 4^D grid of N(0, 0.2^2) |
| Gaussian blur | 0.1 | separable Gaussian, sigma ~ U(0.5, 1.0) voxels, edges replicated |
| additive Gaussian noise | 0.2 | ``x + n``, n ~ N(0, v), variance v ~ U(0, 0.1) |
| multiplicative Gaussian noise | 0.2 | ``x (1 + n)``, n ~ N(0, v), v ~ U(0, 0.1) |
| Gibbs ringing | 0.2 | k-space truncated along one random axis to a fraction U(0.3, 0.9) of its frequencies |
| motion ghosting | 0.2 | one random axis: every r-th k-space line but the centre, r ~ U{2..11}, times U(0.85, 0.95) |
| simulated low resolution | 0.1 | each axis with p 0.33: nearest-neighbour down to zoom U(0.5, 1.0) of its size, linear back |
| gamma | 0.2 | per channel: min-max to [0, 1], ``v^gamma``, gamma ~ U(0.7, 1.5), back, mean and std restored |

The gamma transform inverts the image before and after with p 0.01 (AMAES' "inverts colors").

Simulated low resolution keeps every tensor at the patch size: the coarse grid of each sample and axis is
expressed as gather indices and linear weights on the original grid (what ``F.interpolate`` with
"nearest-exact" down and "linear" back would compute), so samples with different zooms share one batched op.
Not implemented: elastic deformation (spatial, the data loader's job).

Every branch is computed for the whole batch and selected per sample with ``torch.where``; all randomness
comes from the given ``torch.Generator``. Works for 2-D and 3-D patches (B, C, *spatial).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from custom_nets.pretext.boxes import uniform_int

__all__ = ["IntensityAugmentation"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _per_sample(value: torch.Tensor, ndim: int) -> torch.Tensor:
    return value.view(-1, *([1] * (ndim - 1)))


def _uniform(batch_size: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch_size, generator=generator, device=generator.device)


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample.

    Args:
        image: (B, C, *spatial).
        sigma: (B,) standard deviations in voxels (> 0).
        radius: kernel half-width in voxels (the kernel has 2 radius + 1 taps).

    Returns:
        (B, C, *spatial), edges replicated.
    """
    batch_size, channels, *spatial = image.shape
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].float() ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, taps)
    x = image.float().reshape(1, batch_size * channels, *spatial)
    conv = _CONV[len(spatial)]
    for axis in range(len(spatial)):
        shape = [batch_size * channels, 1] + [1] * len(spatial)
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * len(spatial)
        pad[2 * (len(spatial) - 1 - axis)] = pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        x = conv(F.pad(x, pad, mode="replicate"), kernel.view(shape), groups=batch_size * channels)
    return x.view_as(image).to(image.dtype)


class IntensityAugmentation:
    """AMAES' intensity augmentations (see the module docstring), drawn per sample.

    Args:
        bias_field_prob, blur_prob, noise_prob, multiplicative_noise_prob, ringing_prob, ghosting_prob,
        gamma_prob, low_resolution_prob: per-sample probabilities. Default to 0.33, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2,
        0.1.
        invert_prob: probability of inverting the image around the gamma transform. Defaults to 0.01.
        bias_field_std: std of the log bias field at its control points. Defaults to 0.2.
        blur_sigma: (low, high) sigma in voxels. Defaults to (0.5, 1.0).
        noise_variance: (low, high) variance of the additive and multiplicative noise. Defaults to (0, 0.1).
        ringing_keep: (low, high) fraction of the frequencies kept by Gibbs ringing. Defaults to (0.3, 0.9).
        ghosting_alpha: (low, high) scale of the ghosting lines. Defaults to (0.85, 0.95).
        ghosting_repetitions: (low, high) line period, inclusive. Defaults to (2, 11).
        gamma: (low, high) gamma. Defaults to (0.7, 1.5).
        low_resolution_axis_prob: probability that a low-resolution sample is coarsened along each axis. Defaults
            to 0.33.
        low_resolution_zoom: (low, high) fraction of the axis' voxels kept on the coarse grid. Defaults to (0.5, 1.0).

    Call: ``augmented = IntensityAugmentation()(image, generator)``, (B, C, *spatial) -> the same shape.
    """

    def __init__(
        self,
        bias_field_prob: float = 0.33,
        blur_prob: float = 0.1,
        noise_prob: float = 0.2,
        multiplicative_noise_prob: float = 0.2,
        ringing_prob: float = 0.2,
        ghosting_prob: float = 0.2,
        gamma_prob: float = 0.2,
        invert_prob: float = 0.01,
        bias_field_std: float = 0.2,
        blur_sigma: tuple[float, float] = (0.5, 1.0),
        noise_variance: tuple[float, float] = (0.0, 0.1),
        ringing_keep: tuple[float, float] = (0.3, 0.9),
        ghosting_alpha: tuple[float, float] = (0.85, 0.95),
        ghosting_repetitions: tuple[int, int] = (2, 11),
        gamma: tuple[float, float] = (0.7, 1.5),
        low_resolution_prob: float = 0.1,
        low_resolution_axis_prob: float = 0.33,
        low_resolution_zoom: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        probabilities = {
            "bias_field": bias_field_prob,
            "blur": blur_prob,
            "noise": noise_prob,
            "multiplicative_noise": multiplicative_noise_prob,
            "ringing": ringing_prob,
            "ghosting": ghosting_prob,
            "gamma": gamma_prob,
            "invert": invert_prob,
            "low_resolution": low_resolution_prob,
        }
        for name, value in probabilities.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name}_prob must be a probability in [0, 1], got {value}.")
        ranges = {
            "blur_sigma": blur_sigma,
            "noise_variance": noise_variance,
            "ringing_keep": ringing_keep,
            "ghosting_alpha": ghosting_alpha,
            "ghosting_repetitions": ghosting_repetitions,
            "gamma": gamma,
        }
        for name, (low, high) in ranges.items():
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}.")
        if not 0.0 <= float(low_resolution_axis_prob) <= 1.0 or not 0 < low_resolution_zoom[0] <= low_resolution_zoom[1] <= 1:
            raise ValueError(
                "low_resolution_axis_prob must be in [0, 1] and low_resolution_zoom (low, high) with "
                f"0 < low <= high <= 1; got {low_resolution_axis_prob} and {low_resolution_zoom}."
            )
        if blur_sigma[0] <= 0 or gamma[0] <= 0 or ringing_keep[1] > 1 or ghosting_repetitions[0] < 1:
            raise ValueError(
                "blur sigma and gamma must be > 0, ringing_keep <= 1 and ghosting_repetitions >= 1; got "
                f"{blur_sigma}, {gamma}, {ringing_keep}, {ghosting_repetitions}."
            )
        self.probabilities = {k: float(v) for k, v in probabilities.items()}
        self.bias_field_std = float(bias_field_std)
        self.blur_sigma, self.noise_variance, self.ringing_keep = blur_sigma, noise_variance, ringing_keep
        self.ghosting_alpha, self.gamma = ghosting_alpha, gamma
        self.ghosting_repetitions = (int(ghosting_repetitions[0]), int(ghosting_repetitions[1]))
        self.low_resolution_axis_prob = float(low_resolution_axis_prob)
        self.low_resolution_zoom = (float(low_resolution_zoom[0]), float(low_resolution_zoom[1]))

    def draw_flags(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(B,) bool per augmentation name: which samples get it."""
        return {
            name: torch.rand(batch_size, generator=generator, device=generator.device) < p
            for name, p in self.probabilities.items()
        }

    def bias_field(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch_size, _, *spatial = image.shape
        grid = torch.randn((batch_size, 1) + (4,) * len(spatial), generator=generator, device=generator.device)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        log_field = F.interpolate(grid * self.bias_field_std, size=spatial, mode=mode, align_corners=True)
        return image * torch.exp(log_field).to(image.dtype)

    def blur(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sigma = _uniform(image.shape[0], *self.blur_sigma, generator)
        return gaussian_blur(image, sigma, radius=max(1, math.ceil(3 * self.blur_sigma[1])))

    def noise(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        std = _uniform(image.shape[0], *self.noise_variance, generator).sqrt()
        normal = torch.randn(image.shape, generator=generator, device=generator.device, dtype=image.dtype)
        return image + normal * _per_sample(std, image.ndim).to(image.dtype)

    def multiplicative_noise(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        std = _uniform(image.shape[0], *self.noise_variance, generator).sqrt()
        normal = torch.randn(image.shape, generator=generator, device=generator.device, dtype=image.dtype)
        return image * (1 + normal * _per_sample(std, image.ndim).to(image.dtype))

    def _filter_kspace(self, image: torch.Tensor, axis: torch.Tensor, line_weight) -> torch.Tensor:
        """Multiply the k-space of every sample by ``line_weight(axis_index, frequency)`` along its own axis."""
        batch_size, _, *spatial = image.shape
        n_dims = len(spatial)
        weight = torch.ones((batch_size, 1) + (1,) * n_dims, device=image.device)
        for d, size in enumerate(spatial):
            frequency = torch.fft.fftfreq(size, d=1.0 / size, device=image.device).round().long()
            on_axis = line_weight(d, frequency)  # (B, size)
            view = [batch_size, 1] + [1] * n_dims
            view[2 + d] = size
            chosen = (axis == d).view(batch_size, 1)
            weight = weight * torch.where(chosen, on_axis, torch.ones_like(on_axis)).view(view)
        dims = tuple(range(2, 2 + n_dims))
        spectrum = torch.fft.fftn(image.float(), dim=dims)
        return torch.fft.ifftn(spectrum * weight, dim=dims).real.to(image.dtype)

    def ringing(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch_size, _, *spatial = image.shape
        axis = torch.randint(0, len(spatial), (batch_size,), generator=generator, device=generator.device)
        keep = _uniform(batch_size, *self.ringing_keep, generator)

        def truncate(d: int, frequency: torch.Tensor) -> torch.Tensor:
            cutoff = keep[:, None] * (spatial[d] / 2)
            return (frequency.abs()[None].float() <= cutoff).float()

        return self._filter_kspace(image, axis, truncate)

    def ghosting(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch_size, _, *spatial = image.shape
        axis = torch.randint(0, len(spatial), (batch_size,), generator=generator, device=generator.device)
        alpha = _uniform(batch_size, *self.ghosting_alpha, generator)
        period = uniform_int(
            torch.full((batch_size,), self.ghosting_repetitions[0], device=generator.device),
            torch.full((batch_size,), self.ghosting_repetitions[1], device=generator.device),
            generator,
        )

        def scale_lines(d: int, frequency: torch.Tensor) -> torch.Tensor:
            hit = ((frequency[None] % period[:, None]) == 0) & (frequency[None] != 0)  # the mean stays
            return torch.where(hit, alpha[:, None], torch.ones_like(alpha[:, None]))

        return self._filter_kspace(image, axis, scale_lines)

    def low_resolution(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Coarsen each chosen axis of each sample to zoom x its size (nearest-exact) and interpolate back linearly.

        Axes that are not chosen get zoom 1, for which the indices are the identity and the weights 0.
        """
        batch_size, _, *spatial = image.shape
        x = image
        for d, size in enumerate(spatial):
            zoom = _uniform(batch_size, *self.low_resolution_zoom, generator)
            chosen = torch.rand(batch_size, generator=generator, device=generator.device) < self.low_resolution_axis_prob
            coarse = torch.where(chosen, (size * zoom).round().clamp_min(1), torch.full_like(zoom, float(size)))
            coarse = coarse[:, None].to(torch.float64)
            position = torch.arange(size, device=image.device, dtype=torch.float64)[None]
            # linear up-sampling (align_corners=False): fine voxel i reads coarse coordinate c
            c = ((position + 0.5) * coarse / size - 0.5).clamp_min(0)
            low = c.floor()
            high = torch.minimum(low + 1, coarse - 1)
            weight = (c - low).to(image.dtype)

            def fine_index(k: torch.Tensor) -> torch.Tensor:
                # nearest-exact down-sampling: coarse voxel k holds fine voxel floor((k + 0.5) * size / coarse)
                return ((k + 0.5) * size / coarse).floor().clamp(0, size - 1).long()

            view = [batch_size, 1] + [1] * len(spatial)
            view[2 + d] = size
            gather = (lambda idx: torch.gather(x, 2 + d, idx.view(view).expand_as(x)))
            x = gather(fine_index(low)) * (1 - weight.view(view)) + gather(fine_index(high)) * weight.view(view)
        return x

    def gamma_transform(self, image: torch.Tensor, invert: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch_size, channels = image.shape[:2]
        sign = _per_sample(torch.where(invert, -1.0, 1.0), image.ndim).to(image.dtype)
        x = (image * sign).reshape(batch_size, channels, -1).float()
        gamma = _uniform(batch_size, *self.gamma, generator).view(batch_size, 1, 1)
        mean, std = x.mean(dim=2, keepdim=True), x.std(dim=2, keepdim=True)
        low, high = x.amin(dim=2, keepdim=True), x.amax(dim=2, keepdim=True)
        extent = (high - low).clamp_min(1e-12)
        y = ((x - low) / extent).clamp(0, 1).pow(gamma) * extent + low
        y_mean, y_std = y.mean(dim=2, keepdim=True), y.std(dim=2, keepdim=True)
        y = (y - y_mean) / y_std.clamp_min(1e-12) * std + mean
        return (y.view_as(image) * sign).to(image.dtype)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if image.ndim - 2 not in _CONV:
            raise ValueError(f"expected a (B, C, *spatial) batch with 1 to 3 spatial axes, got {tuple(image.shape)}.")
        flags = self.draw_flags(image.shape[0], generator)
        x = image
        for name in ("bias_field", "blur", "noise", "multiplicative_noise", "ringing", "ghosting", "low_resolution"):
            x = torch.where(_per_sample(flags[name], x.ndim), getattr(self, name)(x, generator), x)
        gamma = self.gamma_transform(x, flags["invert"], generator)
        return torch.where(_per_sample(flags["gamma"], x.ndim), gamma, x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(probabilities={self.probabilities})"
