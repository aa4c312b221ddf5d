"""Helpers of the model-zoo export tests: a fake fine-tuning run (tiny ResEnc, random weights, model_info.json),
small synthetic two-modality NIfTI images (and a labeled MSD-style dataset of them), and subprocesses without
custom_nets. No training, no internet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

LABELS = {"0": "background", "1": "lesion", "2": "ventricles"}


def write_run(folder: Path, preset: str = "tiny", normalisation: dict | None = None, seed: int = 0,
              patch_size=(32, 32, 32)) -> Path:
    """A fine-tuning run folder as the fine-tuning bundle leaves it: models/model.pt + models/model_info.json."""
    from custom_nets.nets import resenc_unet

    torch.manual_seed(seed)
    network = resenc_unet(preset, in_channels=2, num_classes=len(LABELS))
    models = folder / "models"
    models.mkdir(parents=True)
    torch.save(network.state_dict(), models / "model.pt")
    info = {
        "network_preset": preset,
        "num_channels": 2,
        "modalities": ["t1", "flair"],
        "labels": LABELS,
        "spacing": [1.0, 1.0, 1.0],
        "normalisation": normalisation or {"modality": "mri"},
        "patch_size": [int(p) for p in patch_size],
        "pretrained_checkpoint": None,
        "schedule": "sawtooth",
    }
    (models / "model_info.json").write_text(json.dumps(info))
    return folder


def write_image(path: Path, shape=(40, 36, 34), seed: int = 0, spacing=(1.2, 1.0, 0.9)) -> Path:
    """A 4D (x, y, z, 2 modalities) float32 NIfTI: a bright blob on a zero background, non-identity affine."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.6
    data = np.zeros((*shape, 2), np.float32)
    data[inside] = rng.normal([300.0, 120.0], [40.0, 25.0], size=(int(inside.sum()), 2))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-20.0, -18.0, -15.0]
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_labeled_dataset(folder: Path, cases: int = 2) -> Path:
    """An MSD-style folder: dataset.json + imagesTr/<case>.nii.gz (4D, t1 and flair) + labelsTr/<case>.nii.gz with
    classes 1 (bright t1) and 2 (bright flair, wins where both are bright) inside the blob of ``write_image``."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    entries = []
    for case in range(cases):
        image = nib.load(write_image(folder / "imagesTr" / f"case{case}.nii.gz", shape=(36, 34, 30), seed=case))
        data = np.asarray(image.dataobj)
        label = np.zeros(data.shape[:3], np.uint8)
        label[data[..., 0] > 300] = 1
        label[data[..., 1] > 140] = 2
        nib.save(nib.Nifti1Image(label, image.affine), folder / "labelsTr" / f"case{case}.nii.gz")
        entries.append({"image": f"imagesTr/case{case}.nii.gz", "label": f"labelsTr/case{case}.nii.gz"})
    dataset = {"labels": LABELS, "modality": {"0": "t1", "1": "flair"}, "training": entries}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def run_python(code: str, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -c code`` in ``cwd`` (which is then on sys.path, as with ``python -m``); fails with its output."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"subprocess failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done
