"""The exported inference config: MONAI-only intensity normalisation equal to the project's, filled model section,
and predictions named ``<case id>.nii.gz`` exactly as the project's inference config names them."""

from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from export_helpers import run_python, write_image
from custom_nets.data.preprocessing import NormaliseIntensityd
from custom_nets.export.inference_config import exported_inference_config, normalisation_transforms

CT = {
    "modality": "ct",
    "statistics": {
        "window": "percentiles",
        "channels": [
            {"low": -100.0, "high": 250.0, "mean": 40.0, "std": 60.0},
            {"low": 0.0, "high": 90.0, "mean": 30.0, "std": 0.0},  # constant foreground: std clamped, as nnU-Net
        ],
    },
}
INFO = {
    "network_preset": "tiny", "num_channels": 2, "modalities": ["t1", "flair"],
    "labels": {"2": "ventricles", "0": "background", "1": "lesion"}, "spacing": [1.0, 1.0, 1.5],
    "normalisation": {"modality": "mri"}, "patch_size": [32, 32, 32],
}


def _monai(normalisation, image):
    transforms = ConfigParser({"t": normalisation_transforms(normalisation)}).get_parsed_content("t")
    d = {"image": image.clone()}
    for t in transforms:
        d = t(d)
    return d["image"]


@pytest.mark.parametrize("normalisation", [{"modality": "mri"}, CT], ids=["mri", "ct"])
def test_monai_transforms_equal_the_project_normalisation(normalisation):
    torch.manual_seed(0)
    image = torch.randn(2, 9, 8, 7) * 200
    image[:, :3] = 0  # background: MRI keeps zeros at zero and leaves them out of the statistics
    expected = NormaliseIntensityd("image", normalisation)({"image": image.clone()})["image"]
    torch.testing.assert_close(_monai(normalisation, image), torch.as_tensor(expected), rtol=1e-5, atol=1e-5)


def test_ct_hand_computed_value():
    image = torch.tensor([[[[300.0, -500.0]]], [[[60.0, 120.0]]]])  # (2, 1, 1, 2)
    out = _monai(CT, image)
    # channel 0: clip 300 -> 250, (250 - 40) / 60 = 3.5; -500 -> -100, -140 / 60; channel 1: (60-30)/1e-8 ...
    assert out[0, 0, 0, 0].item() == pytest.approx(3.5)
    assert out[0, 0, 0, 1].item() == pytest.approx(-140 / 60)
    assert out[1, 0, 0, 1].item() == pytest.approx((90 - 30) / 1e-8, rel=1e-5)


def test_model_section_is_filled_from_model_info():
    config = exported_inference_config(INFO)
    assert config["labels"] == {"0": "background", "1": "lesion", "2": "ventricles"}  # sorted by class index
    assert config["in_channels"] == 2 and config["patch_size"] == [32, 32, 32] and config["spacing"] == [1.0, 1.0, 1.5]
    assert config["network_def"]["features"] == [4, 8, 12, 16] and config["network_def"]["_target_"] == "scripts.resenc.ResEncUNet"
    targets = [t["_target_"] for t in config["preprocessing"]["transforms"]]
    assert targets == ["LoadImaged", "Orientationd", "CropForegroundd", "NormalizeIntensityd", "Spacingd", "EnsureTyped"]
    assert "normalisation" not in config
    assert not any("custom_nets" in str(v) for v in config.values())


def test_bad_model_info_says_what_to_do():
    broken = copy.deepcopy(INFO)
    del broken["spacing"]
    with pytest.raises(ValueError, match=r"lacks \['spacing'\].*fine-tuning bundle"):
        exported_inference_config(broken)
    with pytest.raises(ValueError, match="unknown network preset 'huge'"):
        exported_inference_config({**INFO, "network_preset": "huge"})
    with pytest.raises(ValueError, match="modality 'mri' or 'ct'"):
        normalisation_transforms({"modality": "pet"})


def test_exported_bundle_names_predictions_by_case_id_and_never_replaces_one(exported, without_custom_nets, tmp_path):
    """The issue's cases, run in the exported bundle without custom_nets: a dataset.json case ``case_008`` (nnU-Net
    channel files) is written as ``case_008.nii.gz`` (was ``case_008_0000_seg.nii.gz``); same-named images in two
    folders give two files; a second run refuses before segmenting anything."""
    four_d = write_image(tmp_path / "four_d.nii.gz", shape=(24, 22, 20))
    volume, affine = np.asarray(nib.load(four_d).dataobj), nib.load(four_d).affine
    (tmp_path / "task" / "imagesTs").mkdir(parents=True)
    for channel in range(2):
        nib.save(nib.Nifti1Image(volume[..., channel], affine),
                 str(tmp_path / "task" / "imagesTs" / f"case_008_{channel:04d}.nii.gz"))
    (tmp_path / "task" / "dataset.json").write_text(json.dumps(
        {"test": [{"image": ["imagesTs/case_008_0000.nii.gz", "imagesTs/case_008_0001.nii.gz"]}]}
    ))
    for site in ("siteA", "siteB"):
        (tmp_path / "folder" / site).mkdir(parents=True)
        write_image(tmp_path / "folder" / site / "scan.nii.gz", shape=(24, 22, 20), seed={"siteA": 1, "siteB": 2}[site])
    code = f"""
from monai.bundle import run
run(config_file='configs/inference.yaml', input_dir={str(tmp_path / 'task' / 'dataset.json')!r},
    output_dir={str(tmp_path / 'out_json')!r}, mirror_axes=[])
run(config_file='configs/inference.yaml', input_dir={str(tmp_path / 'folder')!r},
    output_dir={str(tmp_path / 'out_dir')!r}, mirror_axes=[])
try:
    run(config_file='configs/inference.yaml', input_dir={str(tmp_path / 'folder')!r},
        output_dir={str(tmp_path / 'out_dir')!r}, mirror_axes=[])
except Exception as err:
    while err.__cause__ is not None:
        err = err.__cause__
    print('REFUSED:', err)
"""
    done = run_python(code, exported, without_custom_nets)
    assert sorted(p.name for p in (tmp_path / "out_json").iterdir()) == ["case_008.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "out_dir").iterdir()) == ["siteA__scan.nii.gz", "siteB__scan.nii.gz"]
    assert nib.load(tmp_path / "out_json" / "case_008.nii.gz").shape == (24, 22, 20)
    out = tmp_path / "out_dir"
    assert (
        f"REFUSED: 2 of 2 predictions already exist in '{out}': '{out / 'siteA__scan.nii.gz'}', "
        f"'{out / 'siteB__scan.nii.gz'}'. Existing predictions are never replaced"
    ) in done.stdout
