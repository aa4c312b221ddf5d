"""The synthetic head shared by every demo generator: geometry, tissue rendering and scanner finish.

A head is built in three steps: ``make_demo_anatomy`` draws the geometry (size, pose, cortical
folding, tissue borders, ventricles), ``render_tissues`` paints it with one contrast and
``finish_volume`` adds texture, a smooth multiplicative bias field and Rician noise. Rendering one
anatomy with several contrasts gives co-registered multi-modal cases. The heads are not
anatomically faithful; they only need the statistics that matter for masked-autoencoder
pre-training and for exercising preprocessing: a head on a zero background, layered tissues with
partial-volume edges, folded grey/white-matter borders and fluid-filled ventricles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DemoAnatomy", "finish_volume", "make_demo_anatomy", "render_tissues", "soft_step"]


def _check_shape_spacing(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate and normalise ``shape`` (voxels) and ``spacing`` (mm) to 3-tuples."""
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != 3 or min(shape_t) < 16:
        raise ValueError(
            f"shape {tuple(shape)} is not a 3D shape with at least 16 voxels per axis: "
            "pass e.g. shape=(80, 96, 80)"
        )
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(
            f"spacing {tuple(spacing)} is not three positive numbers in mm: pass e.g. spacing=(1.0, 1.0, 1.0)"
        )
    return shape_t, spacing_t  # type: ignore[return-value]


def _rotation(angles: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix from three Euler angles (radians) about x, y and z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def soft_step(x: np.ndarray, width_mm: float = 0.6) -> np.ndarray:
    """Smooth 0 -> 1 transition at x = 0 (mm); models partial-volume edges between tissues."""
    return 0.5 * (1.0 + np.tanh(x / width_mm))


@dataclass(frozen=True)
class DemoAnatomy:
    """Geometry of one synthetic head, shared by every contrast rendered from it.

    Attributes:
        shape: array shape in voxels (x, y, z).
        spacing: voxel size in mm (x, y, z).
        affine: 4x4 RAS voxel-to-world affine (mm) centring the volume on the world origin.
        grid: world coordinates (mm) of the voxel centres, three arrays broadcastable to ``shape``.
        local: coordinates (mm) in the rotated head frame, three float32 arrays of ``shape``.
        semi_axes: head semi-axes (mm) in the head frame.
        radius: normalised head radius (1 on the scalp surface), float32 array of ``shape``.
        depth: approximate depth below the scalp (mm), float32 array of ``shape``.
        fold: cortical folding offset (mm, before scaling per border), float32 array of ``shape``.
        borders: depth (mm) of the scalp/skull, skull/CSF, CSF/grey and grey/white borders.
        ventricles: soft ventricle map in [0, 1] (0.5 on the ventricle surface), float32.
        ventricle_ellipsoids: ``(centre, semi_axes)`` per ventricle in the head frame (mm).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    grid: list
    local: list
    semi_axes: np.ndarray
    radius: np.ndarray
    depth: np.ndarray
    fold: np.ndarray
    borders: tuple[float, float, float, float]
    ventricles: np.ndarray
    ventricle_ellipsoids: list

    @property
    def fov(self) -> np.ndarray:
        """Field of view in mm per axis."""
        return np.asarray(self.shape, dtype=np.float64) * np.asarray(self.spacing, dtype=np.float64)


def make_demo_anatomy(rng: np.random.Generator, shape, spacing) -> DemoAnatomy:
    """Draw the head geometry (size, pose, folding, tissue borders, ventricles) from ``rng``.

    Args:
        rng: random generator; the draws consumed here are the first draws of every demo
            generator, so each stays reproducible.
        shape: array shape in voxels (x, y, z), at least 16 per axis.
        spacing: voxel size in mm (x, y, z). The head is sized from the field of view
            (``shape * spacing`` mm); tissue layers have fixed thicknesses in mm.
    """
    shape, spacing = _check_shape_spacing(shape, spacing)
    sizes = np.asarray(shape, dtype=np.float64)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    fov = sizes * spacing_arr
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(sizes - 1.0) / 2.0 * spacing_arr

    # Head geometry in mm: semi-axes, centre offset and a small rotation vary with the seed.
    semi_axes = 0.42 * fov * rng.uniform(0.94, 1.06, 3)
    centre = rng.uniform(-0.03, 0.03, 3) * fov
    rotation = _rotation(rng.uniform(-0.15, 0.15, 3))

    # World coordinates of voxel centres, rotated into the head frame (three broadcastable axes).
    axes = [((np.arange(n) - (n - 1) / 2.0) * s - c) for n, s, c in zip(shape, spacing, centre)]
    grid = [a.reshape([-1 if i == d else 1 for i in range(3)]) for d, a in enumerate(axes)]
    local = [sum(rotation[d, k] * grid[d] for d in range(3)) for k in range(3)]
    local = [np.broadcast_to(u, shape).astype(np.float32) for u in local]
    radius = np.sqrt(sum((u / a) ** 2 for u, a in zip(local, semi_axes)))
    depth = (1.0 - radius) * float(np.mean(semi_axes))  # approximate mm below the scalp surface

    # Folding of the cortex: random plane waves (periods ~10-20 mm) bend the tissue borders.
    fold = np.zeros(shape, dtype=np.float32)
    for _ in range(5):
        wave = rng.normal(size=3)
        wave *= rng.uniform(0.3, 0.6) / np.linalg.norm(wave)
        fold += np.sin(sum(w * u for w, u in zip(wave, local)) + rng.uniform(0, 2 * np.pi))
    fold *= 0.9

    scalp_mm, skull_mm = 3.0, 3.0 + rng.uniform(4.0, 6.0)
    csf_mm = skull_mm + rng.uniform(1.5, 2.5)
    gm_mm = csf_mm + rng.uniform(3.5, 4.5)

    # Paired ventricles: two small ellipsoids beside the midline, filled with fluid.
    ventricles = np.zeros(shape, dtype=np.float32)
    vent_axes = semi_axes * np.array([0.12, 0.35, 0.18]) * rng.uniform(0.8, 1.2, 3)
    ellipsoids = []
    for side in (-1.0, 1.0):
        offset = np.array([side * 0.16 * semi_axes[0], 0.05 * semi_axes[1], 0.1 * semi_axes[2]])
        inside = sum(((u - o) / a) ** 2 for u, o, a in zip(local, offset, vent_axes))
        ventricles = np.maximum(ventricles, soft_step(1.0 - np.sqrt(inside), 0.08))
        ellipsoids.append((offset, vent_axes))
    return DemoAnatomy(
        shape, spacing, affine, grid, local, semi_axes, radius, depth, fold,
        (scalp_mm, skull_mm, csf_mm, gm_mm), ventricles, ellipsoids,
    )


def render_tissues(anatomy: DemoAnatomy, tissue: dict[str, float]) -> np.ndarray:
    """Noise-free float32 image of the layered head with fluid-filled ventricles.

    Args:
        anatomy: head geometry from ``make_demo_anatomy``.
        tissue: intensity per tissue, keys ``scalp``, ``skull``, ``csf``, ``gm``, ``wm``.
    """
    scalp_mm, skull_mm, csf_mm, gm_mm = anatomy.borders
    image = np.full(anatomy.shape, tissue["scalp"], dtype=np.float32)
    for border, value, bend in (
        (scalp_mm, tissue["skull"], 0.0),
        (skull_mm, tissue["csf"], 0.0),
        (csf_mm, tissue["gm"], 0.5),
        (gm_mm, tissue["wm"], 1.0),
    ):
        image += (value - image) * soft_step(anatomy.depth - border - bend * anatomy.fold)
    image += (tissue["csf"] - image) * anatomy.ventricles
    return image


def finish_volume(rng: np.random.Generator, anatomy: DemoAnatomy, image: np.ndarray) -> np.ndarray:
    """Add texture, a bias field and Rician noise, zero the outside of the head, return int16.

    Args:
        rng: random generator for the texture, bias and noise draws.
        anatomy: head geometry from ``make_demo_anatomy``.
        image: float32 noise-free image of ``anatomy.shape``; modified in place.
    """
    shape = anatomy.shape
    # Tissue texture and a smooth multiplicative bias field (low-order polynomial in mm / FOV).
    image *= 1.0 + 0.03 * rng.standard_normal(shape).astype(np.float32)
    norm = [g / (f / 2.0) for g, f in zip(anatomy.grid, anatomy.fov)]
    bias = 1.0 + sum(rng.uniform(-0.12, 0.12) * n for n in norm)
    bias = bias + sum(rng.uniform(-0.06, 0.06) * n * m for i, n in enumerate(norm) for m in norm[i:])
    image *= np.clip(bias, 0.7, 1.3).astype(np.float32)

    # Rician noise: magnitude of a complex signal with gaussian noise in both channels.
    sigma = rng.uniform(18.0, 30.0)
    real = image + sigma * rng.standard_normal(shape).astype(np.float32)
    imag = sigma * rng.standard_normal(shape).astype(np.float32)
    image = np.sqrt(real**2 + imag**2)

    image[anatomy.radius > 1.0] = 0.0
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
