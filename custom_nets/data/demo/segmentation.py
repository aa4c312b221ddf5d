"""Labeled synthetic multi-modal head MRIs in the MSD/nnU-Net layout, for the fine-tuning bundle.

Every case is one synthetic head (``custom_nets.data.demo.anatomy``) rendered with several
contrasts: the modalities of a case are co-registered (same anatomy, same voxel grid), only tissue
intensities, texture, bias field and noise differ. The label map has two foreground classes that a
small network can learn:

* 1 = ``lesion``: 2 to 5 white-matter ellipsoids with radii of about 1.5 to 7.5 mm, bright in FLAIR
  and T2, dark in T1 (like multiple-sclerosis plaques). Their edges have the same partial-volume
  blur (0.6 mm) as the tissue borders; the label is the ellipsoid interior.
* 2 = ``ventricles``: the two fluid-filled ellipsoids of the phantom, dark in T1 and FLAIR (fluid
  suppressed), bright in T2.

``write_demo_segmentation_dataset`` stores cases in the nnU-Net/MSD layout: ``imagesTr/case_XXX_MMMM``
(one file per modality ``MMMM``), ``labelsTr/case_XXX`` (uint8) and ``dataset.json``. Cases with
``index % 4`` in {1, 3} get spacing (1.2, 1.0, 1.5) mm and cases with ``index % 4`` in {2, 3} are
stored in LPS orientation (image and label alike, ``custom_nets.data.demo.files``), so the
reorientation and resampling of preprocessing are exercised together with the label.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.demo.anatomy import DemoAnatomy, finish_volume, make_demo_anatomy, render_tissues, soft_step
from custom_nets.data.demo.files import case_spacing, save_demo_nifti

__all__ = ["DEMO_LABELS", "DEMO_CONTRASTS", "make_demo_segmentation_case", "write_demo_segmentation_dataset"]

logger = logging.getLogger(__name__)

#: Classes of the demo label maps (value -> name), as declared in ``dataset.json``.
DEMO_LABELS = {0: "background", 1: "lesion", 2: "ventricles"}

#: Tissue and lesion intensities (scanner-like units) per supported modality name.
DEMO_CONTRASTS = {
    "t1": {"scalp": 700.0, "skull": 1050.0, "csf": 140.0, "gm": 520.0, "wm": 820.0, "lesion": 380.0},
    "t2": {"scalp": 450.0, "skull": 900.0, "csf": 1250.0, "gm": 780.0, "wm": 500.0, "lesion": 1050.0},
    "flair": {"scalp": 600.0, "skull": 750.0, "csf": 110.0, "gm": 640.0, "wm": 470.0, "lesion": 1150.0},
}

_LESION_LABEL, _VENTRICLE_LABEL = 1, 2


def _ventricle_clearance(anatomy: DemoAnatomy) -> np.ndarray:
    """Approximate distance (mm) from each voxel to the nearest ventricle surface (negative inside)."""
    clearance = np.full(anatomy.shape, np.inf, dtype=np.float32)
    for centre, axes in anatomy.ventricle_ellipsoids:
        rho = np.sqrt(sum(((u - c) / a) ** 2 for u, c, a in zip(anatomy.local, centre, axes)))
        clearance = np.minimum(clearance, (rho - 1.0) * float(np.min(axes)))
    return clearance


def _lesion_centres(anatomy: DemoAnatomy, white_matter_depth, clearance, placed, reach: float) -> np.ndarray:
    """Flat indices of voxels where a lesion reaching ``reach`` mm from its centre fits."""
    fits = (white_matter_depth > reach + 1.0) & (clearance > reach + 1.5)
    for centre, other in placed:
        distance = np.sqrt(sum((u - c) ** 2 for u, c in zip(anatomy.local, centre)))
        fits &= distance > reach + other + 1.0
    return np.flatnonzero(fits)


def _lesion_map(rng: np.random.Generator, anatomy: DemoAnatomy) -> np.ndarray:
    """Soft map in [0, 1] of 2-5 white-matter ellipsoids (0.5 on their surfaces).

    Each lesion centre is drawn among the voxels that leave the whole ellipsoid inside the white
    matter, at least 1.5 mm away from the ventricles and 1 mm away from earlier lesions; a lesion
    that does not fit is tried once at half its size and otherwise left out (only in small volumes).
    """
    white_matter_depth = anatomy.depth - anatomy.borders[3] - anatomy.fold  # > 0 inside white matter (mm)
    clearance = _ventricle_clearance(anatomy)
    lesions = np.zeros(anatomy.shape, dtype=np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(2, 6))):
        radii = rng.uniform(2.0, 6.0) * rng.uniform(0.75, 1.25, 3)
        candidates = _lesion_centres(anatomy, white_matter_depth, clearance, placed, float(radii.max()))
        if candidates.size == 0:  # too big for the white matter left: try once at half the size
            radii = radii / 2.0
            candidates = _lesion_centres(anatomy, white_matter_depth, clearance, placed, float(radii.max()))
        if candidates.size == 0:
            continue
        reach = float(radii.max())
        pick = int(candidates[rng.integers(candidates.size)])
        centre = np.array([float(u.flat[pick]) for u in anatomy.local])
        rho = np.sqrt(sum(((u - c) / a) ** 2 for u, c, a in zip(anatomy.local, centre, radii)))
        lesions = np.maximum(lesions, soft_step((1.0 - rho) * float(radii.mean())))
        placed.append((centre, reach))
    return lesions


def _check_modalities(modalities) -> tuple[str, ...]:
    """Modality names as a tuple; a ``ValueError`` names the unknown or repeated ones and the valid choices."""
    names = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    unknown = [m for m in names if m not in DEMO_CONTRASTS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"modalities={modalities!r} must be distinct names from {sorted(DEMO_CONTRASTS)}: "
            "pass e.g. modalities=('t1', 'flair')"
        )
    return names


def make_demo_segmentation_case(
    seed: int, index: int, shape=(80, 96, 80), spacing=(1.0, 1.0, 1.0), modalities=("t1", "flair")
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Render one deterministic labeled multi-modal case.

    Args:
        seed: dataset seed; with ``index`` it fixes the case completely.
        index: case number within the dataset.
        shape: array shape in voxels (x, y, z); at least about 64 per axis at 1 mm leaves room
            for lesions in the white matter.
        spacing: voxel size in mm (x, y, z).
        modalities: contrast names from ``DEMO_CONTRASTS``; one volume per name, in this order.

    Returns:
        ``(volumes, label, affine)``: one ``int16`` array of ``shape`` per modality (0 outside
        the head), the ``uint8`` label map (values in ``DEMO_LABELS``) and the 4x4 RAS affine (mm).
    """
    names = _check_modalities(modalities)
    rng = np.random.default_rng([int(seed), int(index)])
    anatomy = make_demo_anatomy(rng, shape, spacing)
    lesions = _lesion_map(rng, anatomy)
    volumes = []
    for name in names:
        contrast = DEMO_CONTRASTS[name]
        image = render_tissues(anatomy, contrast)
        image += (contrast["lesion"] - image) * lesions
        # Noise, texture and bias field differ per modality; keyed by name so that a modality
        # looks the same whatever other modalities are requested with it.
        noise_rng = np.random.default_rng([int(seed), int(index), 1 + list(DEMO_CONTRASTS).index(name)])
        volumes.append(finish_volume(noise_rng, anatomy, image))
    label = np.zeros(anatomy.shape, dtype=np.uint8)
    label[anatomy.ventricles > 0.5] = _VENTRICLE_LABEL
    label[lesions > 0.5] = _LESION_LABEL
    label[anatomy.radius > 1.0] = 0
    return volumes, label, anatomy.affine


def _case_files(index: int, names: tuple[str, ...], folder: str) -> list[str]:
    """Relative image paths of case ``index`` in ``folder``, one ``case_XXX_MMMM.nii.gz`` per modality."""
    return [f"{folder}/case_{index:03d}_{m:04d}.nii.gz" for m in range(len(names))]


def _demo_settings(num_cases: int, num_test: int, seed: int, shape, names) -> dict:
    """The writer's arguments as stored under ``"demo"`` in ``dataset.json`` (to detect a finished dataset)."""
    return {
        "seed": int(seed), "shape": [int(n) for n in shape], "modalities": list(names),
        "num_cases": int(num_cases), "num_test": int(num_test),
    }


def _already_written(out: Path, settings: dict, files: list[str]) -> bool:
    """True when ``out/dataset.json`` was written for ``settings`` and every file exists."""
    path = out / "dataset.json"
    if not (path.is_file() and all((out / f).is_file() for f in files)):
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("demo") == settings
    except (OSError, ValueError, AttributeError):
        return False  # unreadable or foreign dataset.json: rewrite it


def write_demo_segmentation_dataset(
    out_dir, num_cases: int = 12, seed: int = 0, shape=(80, 96, 80), modalities=("t1", "flair"), num_test: int = 2
) -> str:
    """Write a small synthetic labeled dataset in the MSD/nnU-Net layout; return the ``dataset.json`` path.

    Args:
        out_dir: output folder; receives ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``dataset.json``.
        num_cases: number of labeled training cases ``case_000`` ... (each about 1 s to render
            at the default shape with two modalities).
        seed: dataset seed; the same arguments always give the same files.
        shape: array shape per case in voxels (x, y, z).
        modalities: contrast names from ``DEMO_CONTRASTS`` (``t1``, ``t2``, ``flair``); file
            ``_MMMM`` holds modality ``MMMM`` in this order.
        num_test: unlabeled cases listed under ``"test"`` (numbered after the training cases).

    ``dataset.json`` is ``{"name", "modality": {"0": "t1", ...}, "labels": {"0": "background",
    "1": "lesion", "2": "ventricles"}, "training": [{"image": [files], "label": file}], "test":
    [{"image": [files]}], "demo": {the arguments}}`` with paths relative to ``out_dir``. Nothing
    is rewritten when a ``dataset.json`` for the same arguments exists and all its files exist;
    every file is written atomically, so concurrent callers are safe. Files are not sized for the
    pre-training quality filter (labeled data bypass its 200 kB rule).
    """
    if isinstance(num_cases, bool) or not isinstance(num_cases, int) or num_cases < 1:
        raise ValueError(f"num_cases={num_cases!r} must be an integer >= 1: pass e.g. num_cases=12")
    if isinstance(num_test, bool) or not isinstance(num_test, int) or num_test < 0:
        raise ValueError(f"num_test={num_test!r} must be an integer >= 0: pass e.g. num_test=2")
    names = _check_modalities(modalities)
    out = Path(out_dir)
    settings = _demo_settings(num_cases, num_test, seed, shape, names)
    training = [
        {"image": _case_files(i, names, "imagesTr"), "label": f"labelsTr/case_{i:03d}.nii.gz"} for i in range(num_cases)
    ]
    test = [{"image": _case_files(i, names, "imagesTs")} for i in range(num_cases, num_cases + num_test)]
    files = [f for e in training + test for f in e["image"]] + [e["label"] for e in training]
    if _already_written(out, settings, files):
        logger.info("Demo segmentation dataset already present in %s", out)
        return os.fspath(out / "dataset.json")

    for index, entry in enumerate(training + test):
        volumes, label, affine = make_demo_segmentation_case(seed, index, shape, case_spacing(index), names)
        arrays = [*volumes, label] if "label" in entry else volumes
        paths = [*entry["image"], entry["label"]] if "label" in entry else entry["image"]
        for array, path in zip(arrays, paths):
            save_demo_nifti(out / path, array, affine, index)

    dataset = {
        "name": "S3D synthetic brain MRI segmentation demo",
        "description": "Synthetic co-registered multi-modal head volumes with lesion and ventricle labels",
        "tensorImageSize": "3D",
        "modality": {str(i): name for i, name in enumerate(names)},
        "labels": {str(k): v for k, v in DEMO_LABELS.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "demo": settings,
        "training": training,
        "test": test,
    }
    atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    logger.info("Wrote %d labeled and %d unlabeled synthetic cases to %s", len(training), len(test), out)
    return os.fspath(out / "dataset.json")
