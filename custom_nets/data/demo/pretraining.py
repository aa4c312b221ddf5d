"""Unlabeled synthetic head MRIs and their MSD-style datalist, for the pre-training bundles.

``make_demo_volume`` renders one head (``custom_nets.data.demo.anatomy``) with one contrast and
adds focal lesions; contrast alternates with the seed (even seeds T1-like, odd seeds T2-like), so
a demo dataset is a mixed-modality set. ``write_demo_dataset`` writes such volumes as NIfTI files
plus a datalist, with the spacing and orientation of each file varied as ``files`` describes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.demo.anatomy import finish_volume, make_demo_anatomy, render_tissues
from custom_nets.data.demo.files import case_spacing, save_demo_nifti

__all__ = ["make_demo_volume", "write_demo_dataset"]

logger = logging.getLogger(__name__)

#: Tissue intensities (scanner-like units) before bias field and noise, per contrast.
#: T2-like swaps the ordering of fluid, grey and white matter relative to T1-like.
_TISSUE_INTENSITY = {
    "T1": {"scalp": 700.0, "skull": 1050.0, "csf": 140.0, "gm": 520.0, "wm": 820.0},
    "T2": {"scalp": 450.0, "skull": 900.0, "csf": 1250.0, "gm": 780.0, "wm": 500.0},
}


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


def _already_written(datalist_path: Path, names: list[str], seed: int, shape) -> bool:
    """True when ``datalist_path`` lists exactly ``names`` for ``seed`` and ``shape`` and every image exists."""
    out = datalist_path.parent
    if not (datalist_path.is_file() and all((out / n).is_file() for n in names)):
        return False
    try:
        existing = json.loads(datalist_path.read_text(encoding="utf-8"))
        return (
            [e.get("image") for e in existing.get("training", [])] == names
            and existing.get("demo_seed") == int(seed)
            and existing.get("demo_shape") == [int(n) for n in shape]
        )
    except (OSError, ValueError, AttributeError):
        return False  # unreadable or foreign datalist: rewrite it


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
    if _already_written(datalist_path, names, seed, shape):
        logger.info("Demo dataset already present in %s", out)
        return str(datalist_path)

    for i, name in enumerate(names):
        volume, affine = make_demo_volume(seed * 1000 + i, shape=shape, spacing=case_spacing(i))
        save_demo_nifti(out / name, volume, affine, i)

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
