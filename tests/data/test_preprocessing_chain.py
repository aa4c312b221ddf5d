"""The preprocessing chain defined once: hand-computed results, the portable (exported) form equal to the project's,
picklable for spawned workers, and the inference-time chain giving exactly the training cache's image."""

from __future__ import annotations

import json
import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from custom_nets.data import prepare_segmentation_dataset
from custom_nets.data.preprocessing import ClipChannels, chain_config, preprocessing_chain

CT = {"modality": "ct", "statistics": {"channels": [{"low": -100.0, "high": 250.0, "mean": 40.0, "std": 60.0},
                                                    {"low": 0.0, "high": 90.0, "mean": 30.0, "std": 0.0}]}}


def _image(channels: int = 1) -> MetaTensor:
    """``(C, 6, 5, 4)`` with a zero border on axis 0 and 2, stored left-to-right flipped (x axis towards L)."""
    torch.manual_seed(0)
    data = torch.zeros(channels, 6, 5, 4)
    data[:, 1:4, :, 1:3] = torch.rand(channels, 3, 5, 2) * 200 - 50
    affine = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    return MetaTensor(data, affine=affine)


def test_mri_chain_equals_hand_computation():
    image = _image()
    out = preprocessing_chain("image", [1.0, 1.0, 1.0], {"modality": "mri"})({"image": image.clone()})["image"]
    ras = np.flip(image.numpy()[0], axis=0)  # x runs towards L in the file: flipped to R
    box = ras[np.ix_(*[np.flatnonzero(np.any(ras != 0, axis=tuple(a for a in range(3) if a != d))) for d in range(3)])]
    values = box[box != 0]
    expected = np.where(box != 0, (box - values.mean()) / values.std(), 0.0)
    assert out.shape == (1, *box.shape) == (1, 3, 5, 2)
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32
    assert np.allclose(np.diag(out.affine.numpy())[:3], 1.0)  # RAS, 1 mm


def test_ct_chain_clips_then_uses_the_dataset_statistics():
    image = MetaTensor(torch.tensor([[[[300.0, -500.0]]], [[[60.0, 120.0]]]]), affine=torch.eye(4))
    out = preprocessing_chain("image", [1.0, 1.0, 1.0], CT)({"image": image})["image"]
    assert out[0, 0, 0, 0].item() == pytest.approx((250 - 40) / 60)
    assert out[0, 0, 0, 1].item() == pytest.approx((-100 - 40) / 60)
    assert out[1, 0, 0, 1].item() == pytest.approx((90 - 30) / 1e-8, rel=1e-5)  # std 0: divided by MIN_STD
    with pytest.raises(ValueError, match="image has 1 channels but the CT statistics have 2"):
        ClipChannels([0, 0], [1, 1])(torch.zeros(1, 2, 2, 2))


@pytest.mark.parametrize("normalisation", [{"modality": "mri"}, CT], ids=["mri", "ct"])
def test_portable_form_runs_the_same_transforms(normalisation):
    """What an exported bundle writes (MONAI and torch only) gives bit-identical images and labels."""
    keys, mode = ["image", "label"], ["bilinear", "nearest"]
    portable = chain_config(keys, [1.5, 1.0, 2.0], normalisation, mode=mode, portable=True)
    assert "custom_nets" not in json.dumps(portable)
    exported = ConfigParser({"c": {"_target_": "Compose", "transforms": portable}}).get_parsed_content("c")
    project = preprocessing_chain(keys, [1.5, 1.0, 2.0], normalisation, mode=mode)
    image = _image(channels=2)
    label = MetaTensor((image[:1] > 20).float(), affine=image.affine)
    a = exported({"image": image.clone(), "label": label.clone()})
    b = project({"image": image.clone(), "label": label.clone()})
    for key in keys:
        assert torch.equal(a[key].as_tensor(), b[key].as_tensor()), key
        assert torch.equal(a[key].affine, b[key].affine), key
    assert set(torch.unique(b["label"]).tolist()) <= {0.0, 1.0}  # nearest: still a label map


def test_chain_survives_pickling_for_spawned_workers():
    chain = preprocessing_chain("image", [1.0, 1.0, 1.0], CT)
    copy = pickle.loads(pickle.dumps(chain))
    image = _image(channels=2)
    assert torch.equal(copy({"image": image.clone()})["image"], chain({"image": image.clone()})["image"])


def test_inference_preprocessing_gives_exactly_the_cached_training_image(tmp_path):
    """The cache (training) and inference/evaluation (LoadImaged + the chain) run one chain: same voxels, same grid."""
    rng = np.random.default_rng(3)
    affine = np.diag([-0.9, 1.1, 1.3, 1.0])  # not RAS, not 1 mm: reoriented and resampled
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    image = np.zeros((20, 18, 16), np.float32)
    image[3:17, 2:16, 4:12] = rng.normal(100.0, 20.0, (14, 14, 8))
    label = np.zeros(image.shape, np.uint8)
    label[6:12, 6:12, 6:10] = 1
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "imagesTr" / "a_0000.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "labelsTr" / "a.nii.gz"))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "modality": {"0": "t1"}, "labels": {"0": "background", "1": "lesion"},
        "training": [{"image": ["imagesTr/a_0000.nii.gz"], "label": "labelsTr/a.nii.gz"}],
    }))
    result = prepare_segmentation_dataset(tmp_path / "dataset.json", tmp_path / "cache", num_workers=0)
    cached = nib.load(result["training"][0]["image"])

    inference = Compose([
        LoadImaged("image", image_only=False, ensure_channel_first=True),
        preprocessing_chain("image", result["spacing"], result["normalisation"]),
    ])
    out = inference({"image": str(tmp_path / "imagesTr" / "a_0000.nii.gz")})["image"]
    np.testing.assert_array_equal(out.numpy()[0], np.asarray(cached.dataobj))
    np.testing.assert_allclose(out.affine.numpy(), cached.affine, atol=1e-6)
