"""Predictions made on preprocessed images go back to the original geometry (the evaluation pipeline's Invertd)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from custom_nets.data.demo import write_demo_segmentation_dataset
from custom_nets.evaluation import binary_dice

EVALUATE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "evaluate.yaml"


def test_preprocess_then_invert_reproduces_the_original_label(tmp_path):
    # an LPS case with 1.2 x 1.0 x 1.5 mm voxels exercises reorientation, cropping and resampling
    source = Path(write_demo_segmentation_dataset(tmp_path / "demo", num_cases=4, seed=3, shape=(48, 56, 48)))
    import json

    entry = json.loads(source.read_text())["training"][3]
    image_paths = [str(source.parent / p) for p in entry["image"]]
    label_path = str(source.parent / entry["label"])
    original = np.asarray(nib.load(label_path).dataobj)

    parser = ConfigParser()
    parser.read_config(str(EVALUATE))
    parser["model_info"] = {"normalisation": {"modality": "mri"}, "spacing": [1.0, 1.0, 1.0]}  # what training used
    parser["imports"] = ["$import torch", "$import custom_nets", "$import custom_nets.data.patches"]
    parser["prediction_dir"] = str(tmp_path / "pred")  # set before parsing: changing the config re-creates objects
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    data = preprocessing({"image": image_paths, "case": "c"})

    # the oracle prediction: the label pushed through the same spatial steps (nearest), as one-hot "probabilities"
    from monai.transforms import Compose, CropForegroundd, LoadImaged, Orientationd, Spacingd

    from custom_nets.data.preprocessing import nonzero

    spatial = Compose([
        LoadImaged(keys=["image", "label"], ensure_channel_first=True),
        Orientationd(keys=["image", "label"], axcodes="RAS"),
        CropForegroundd(keys=["image", "label"], source_key="image", select_fn=nonzero, allow_smaller=True),
        Spacingd(keys=["image", "label"], pixdim=(1.0, 1.0, 1.0), mode=["bilinear", "nearest"]),
    ])
    label_pp = spatial({"image": image_paths, "label": label_path})["label"]
    assert label_pp.shape[1:] == data["image"].shape[1:]
    probs = torch.nn.functional.one_hot(label_pp[0].long(), 3).permute(3, 0, 1, 2).float()
    data["pred"] = probs

    postprocessing = parser.get_parsed_content("validate#postprocessing")
    out = postprocessing(data)
    written = nib.load(out["prediction_path"])
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, nib.load(label_path).affine, atol=1e-4)
    predicted = np.asarray(written.dataobj)
    for cls in (1, 2):
        dsc = binary_dice(torch.as_tensor(predicted == cls), torch.as_tensor(original == cls))
        assert dsc > 0.9, (cls, dsc)  # two resamplings (there and back) only blur the borders
