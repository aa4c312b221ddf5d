"""Synthetic brain-like MRI volumes, so that every bundle runs end to end without real data.

The volumes are not anatomically faithful; they only need the statistics that matter for
masked-autoencoder pre-training and for exercising preprocessing: a head on a zero background,
layered tissues with partial-volume edges, folded grey/white-matter boundaries, dark or bright
ventricles, focal lesions, a smooth multiplicative bias field and Rician noise. Contrast
alternates with the seed (even seeds T1-like, odd seeds T2-like), so a demo dataset is a
mixed-modality set.

A head is built in three steps that other demo generators reuse: ``make_demo_anatomy`` draws the
geometry, ``render_tissues`` paints it with one contrast, ``finish_volume`` adds texture, bias and
noise. Rendering one anatomy with several contrasts gives co-registered multi-modal cases
(``custom_nets.data.demo_segmentation``).

``write_demo_dataset`` writes such volumes as NIfTI files plus an MSD-style datalist. Some files
get an anisotropic spacing and some an LPS (instead of RAS) orientation, so that the
reorientation and resampling steps of preprocessing are actually exercised.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from custom_nets.data.atomic import atomic_save_nifti, atomic_write_text

__all__ = [
    "DemoAnatomy",
    "finish_volume",
    "make_demo_anatomy",
    "make_demo_volume",
    "render_tissues",
    "write_demo_dataset",
]

logger = logging.getLogger(__name__)

#: Anisotropic spacing (mm) used for every other file of the demo dataset.
_ANISOTROPIC_SPACING = (1.2, 1.0, 1.5)

#: Tissue intensities (scanner-like units) before bias field and noise, per contrast.
#: T2-like swaps the ordering of fluid, grey and white matter relative to T1-like.
_TISSUE_INTENSITY = {
    "T1": {"scalp": 700.0, "skull": 1050.0, "csf": 140.0, "gm": 520.0, "wm": 820.0},
    "T2": {"scalp": 450.0, "skull": 900.0, "csf": 1250.0, "gm": 780.0, "wm": 500.0},
}


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


def _step(x: np.ndarray, width_mm: float = 0.6) -> np.ndarray:
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
        rng: random generator; the draws consumed here are the first draws of
            ``make_demo_volume``, so it stays reproducible.
        shape: array shape in voxels (x, y, z), at least 16 per axis.
        spacing: voxel size in mm (x, y, z).
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
        ventricles = np.maximum(ventricles, _step(1.0 - np.sqrt(inside), 0.08))
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
        image += (value - image) * _step(anatomy.depth - border - bend * anatomy.fold)
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


def make_demo_volume(
    seed: int, shape=(80, 96, 80), spacing=(1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Render one deterministic synthetic head MRI.

    Args:
        seed: random seed; the same seed always gives the same array. Even seeds are
            T1-like (white matter bright, fluid dark), odd seeds T2-like (fluid bright).
        shape: array shape in voxels (x, y, z).
        spacing: voxel size in mm (x, y, z). The head is sized from the field of view
            (``shape * spacing`` mm), so it fills the same fraction of the array at any spacing
            (an anisotropic spacing gives a proportionally stretched head); tissue layers have
            fixed thicknesses in mm.

    Returns:
        ``(volume, affine)``: an ``int16`` array of ``shape`` with values in about 0..1500 and
        exactly 0 outside the head, and the 4x4 RAS voxel-to-world affine (mm) that centres the
        volume on the world origin.
    """
    shape, spacing = _check_shape_spacing(shape, spacing)
    rng = np.random.default_rng(seed)
    contrast = "T1" if seed % 2 == 0 else "T2"
    anatomy = make_demo_anatomy(rng, shape, spacing)
    image = render_tissues(anatomy, _TISSUE_INTENSITY[contrast])

    # Focal lesions: gaussian blobs inside the white matter, bright or dark at random.
    for _ in range(int(rng.integers(2, 6))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        position = direction * rng.uniform(0.2, 0.55) * anatomy.semi_axes
        width = rng.uniform(1.5, 4.0)
        amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(200.0, 400.0)
        dist2 = sum((u - p) ** 2 for u, p in zip(anatomy.local, position))
        image += amplitude * np.exp(-dist2 / (2.0 * width**2)).astype(np.float32)

    return finish_volume(rng, anatomy, image), anatomy.affine


def _to_lps(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store the same world-space image with LPS axes (flip the first two array axes)."""
    flipped = volume[::-1, ::-1, :].copy()
    flip = np.eye(4)
    for axis in (0, 1):
        flip[axis, axis] = -1.0
        flip[axis, 3] = volume.shape[axis] - 1
    return flipped, affine @ flip


def _nifti(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Wrap an array as NIfTI with matching qform/sform (scanner-anatomical, code 1)."""
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def write_demo_dataset(out_dir, num_images: int = 8, seed: int = 0, shape=(80, 96, 80)) -> str:
    """Write a small synthetic dataset and its MSD-style datalist; return the datalist path.

    Files are ``out_dir/imagesTr/demo_XXX.nii.gz``; image ``i`` uses seed ``seed * 1000 + i``,
    so contrast alternates T1-like/T2-like. Images with ``i % 4`` in {1, 3} get spacing
    (1.2, 1.0, 1.5) mm, images with ``i % 4`` in {2, 3} are stored in LPS orientation.
    ``out_dir/datalist.json`` is ``{"name": ..., "training": [{"image": "imagesTr/..."}]}`` with
    paths relative to ``out_dir`` (plus ``demo_seed`` and ``demo_shape``). At the default shape
    every file is larger than 200 kB, so it passes the default quality filter. Nothing is
    rewritten when a datalist for the same images, seed and shape exists and all its images
    exist; every file is written atomically, so concurrent callers are safe.
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images={num_images} must be at least 1: pass e.g. num_images=8")
    out = Path(out_dir)
    datalist_path = out / "datalist.json"
    names = [f"imagesTr/demo_{i:03d}.nii.gz" for i in range(int(num_images))]
    if datalist_path.is_file() and all((out / n).is_file() for n in names):
        try:
            existing = json.loads(datalist_path.read_text(encoding="utf-8"))
            same = (
                [e.get("image") for e in existing.get("training", [])] == names
                and existing.get("demo_seed") == int(seed)
                and existing.get("demo_shape") == [int(n) for n in shape]
            )
            if same:
                logger.info("Demo dataset already present in %s", out)
                return str(datalist_path)
        except (OSError, ValueError, AttributeError):
            pass  # unreadable or foreign datalist: rewrite it below

    for i, name in enumerate(names):
        spacing = _ANISOTROPIC_SPACING if i % 4 in (1, 3) else (1.0, 1.0, 1.0)
        volume, affine = make_demo_volume(seed * 1000 + i, shape=shape, spacing=spacing)
        if i % 4 in (2, 3):
            volume, affine = _to_lps(volume, affine)
        atomic_save_nifti(_nifti(volume, affine), out / name)

    datalist = {
        "name": "S3D synthetic brain MRI demo",
        "description": "Synthetic head volumes (T1-like and T2-like) for smoke-testing pre-training",
        "modality": {"0": "MRI"},
        "numTraining": len(names),
        "demo_seed": int(seed),
        "demo_shape": [int(n) for n in shape],
        "training": [{"image": n} for n in names],
    }
    atomic_write_text(datalist_path, json.dumps(datalist, indent=2) + "\n")
    logger.info("Wrote %d synthetic demo volumes to %s", len(names), out)
    return os.fspath(datalist_path)
