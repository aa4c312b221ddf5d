"""An OpenMind-style download pre-trains with the README's command (only run-size overrides added), and the
anonymisation-aware loss receives the download's anonymisation masks."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

TRAIN = Path(__file__).resolve().parents[2] / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"
SHAPE = (40, 40, 40)
DEFACED = 12  # voxels along x marked as anonymised in every mask


def _write_openmind(root: Path) -> None:
    """Two T1w images with anonymisation masks in OpenMind's layout, and one FA image the filter leaves out."""
    rows = []
    for index, (dataset, modality, score) in enumerate((("ds000001", "T1w", 1.0), ("ds000002", "T1w", 2.0),
                                                        ("ds000002", "FA", 4.0))):
        folder = f"{dataset}/sub-0{index}/anat"
        image = np.random.default_rng(index).uniform(1, 2, SHAPE).astype(np.float32)
        mask = np.zeros(SHAPE, np.uint8)
        mask[:DEFACED] = 1
        paths = {"image_path": f"{folder}/sub-0{index}_{modality}.nii.gz",
                 "anon_mask_path": f"{folder}/sub-0{index}_{modality}_anon.nii.gz"}
        for key, volume in (("image_path", image), ("anon_mask_path", mask)):
            (root / "OpenMind" / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / "OpenMind" / paths[key]))
        rows.append({**paths, "anat_mask_path": "", "dataset_id": dataset, "modality": modality,
                     "image_quality_score": score})
    with open(root / "openneuro_metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["image_path", "anat_mask_path", "anon_mask_path", "modality",
                                         "image_quality_score", "dataset_id"])
        writer.writeheader()
        writer.writerows(rows)


def test_openmind_folder_pretrains_and_the_loss_gets_its_anonymization_masks(tmp_path):
    _write_openmind(tmp_path / "openmind")
    workflow = ConfigWorkflow(
        config_file=str(TRAIN), workflow_type="train", logging_file=False,
        dataset_dir=str(tmp_path / "openmind"), output_dir=str(tmp_path / "run"),
        max_image_quality_score=3.0,
        # run size only: the tiny network on 32^3 patches for two CPU iterations, small files accepted
        network_preset="tiny", patch_size=[32, 32, 32], block_size=8, batch_size=2, max_steps=2,
        iterations_per_epoch=2, num_workers=0, checkpoint_interval=2, preview_interval=2, log_interval=1,
        device="cpu", quality_thresholds={"min_fov_mm": 0.0, "max_spacing_mm": 6.5, "min_file_bytes": 0},
    )
    workflow.initialize()
    seen = []
    loss = workflow.parser.get_parsed_content("loss")
    # the loss is called as loss(outputs, views): the anonymisation mask travels in the views
    loss.register_forward_pre_hook(lambda module, args: seen.append(args[1].get("anonymization_mask")))
    workflow.run()
    workflow.finalize()

    assert workflow.parser.get_parsed_content("use_anonymization_mask") is True  # switched on by the data
    cache = tmp_path / "run" / "cache"
    masks = sorted(p.name for p in (cache / "anonymization_masks").glob("*.nii.gz"))
    assert masks == ["ds000001__sub-00__anat__sub-00_T1w.nii.gz", "ds000002__sub-01__anat__sub-01_T1w.nii.gz"]
    assert "quality_score: image_quality_score 4 > max_image_quality_score 3" in (cache / "excluded.csv").read_text()
    # the cached mask keeps the defaced slab: 12 of 40 x-slices of the 40^3 image (1 mm, nothing cropped)
    cached = np.asarray(nib.load(str(cache / "anonymization_masks" / masks[0])).dataobj)
    assert cached.shape == SHAPE and int(cached.sum()) == DEFACED * SHAPE[1] * SHAPE[2]
    # every loss call got a (B, 1, 32, 32, 32) mask with anonymised and kept voxels in it
    assert len(seen) == 2
    for anonymization in seen:
        assert anonymization is not None and tuple(anonymization.shape) == (2, 1, 32, 32, 32)
        assert 0 < float(anonymization.float().mean()) < 1
        assert torch.equal(torch.unique(anonymization), torch.tensor([0.0, 1.0], dtype=anonymization.dtype))
