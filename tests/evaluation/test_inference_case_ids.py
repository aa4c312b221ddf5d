"""The project's inference config names every prediction ``<case id>.nii.gz``, never replaces one, and checks the
model's input channels before the network runs (tiny random networks, a few hundred voxels per image)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom_nets.data import load_segmentation_datalist
from custom_nets.evaluation import inference_inputs
from custom_nets.nets import resenc_unet

INFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "inference.yaml"
LABELS = {"0": "background", "1": "lesion", "2": "ventricles"}


def _run_folder(folder: Path, in_channels: int) -> Path:
    """A finished fine-tuning run as the bundle leaves it: models/model.pt + models/model_info.json (tiny preset)."""
    torch.manual_seed(0)
    (folder / "models").mkdir(parents=True)
    torch.save(resenc_unet("tiny", in_channels=in_channels, num_classes=3).state_dict(), folder / "models" / "model.pt")
    info = {
        "network_preset": "tiny", "num_channels": in_channels, "modalities": ["t1", "flair"][:in_channels],
        "labels": LABELS, "spacing": [1.0, 1.0, 1.0], "normalisation": {"modality": "mri"}, "patch_size": [32, 32, 32],
    }
    (folder / "models" / "model_info.json").write_text(json.dumps(info))
    return folder / "models" / "model.pt"


def _image(path: Path, shape, seed: int = 0, channels: int | None = None) -> Path:
    """A blob of random intensities on a zero background (``channels``: 4D with the channels last)."""
    rng = np.random.default_rng(seed)
    full = (*shape, channels) if channels else shape
    data = np.zeros(full, np.float32)
    data[2:-2, 2:-2, 2:-2] = rng.normal(100.0, 20.0, size=data[2:-2, 2:-2, 2:-2].shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _infer(checkpoint: Path, input_dir: Path, **settings) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=str(INFERENCE), workflow_type="infer", logging_file=False,
                        checkpoint=str(checkpoint), input_dir=str(input_dir), mirror_axes=[], device="cpu", **settings)
    wf.initialize()
    wf.run()
    return wf


def test_same_named_files_in_two_folders_give_two_predictions_and_none_is_replaced(tmp_path, error_chain):
    checkpoint = _run_folder(tmp_path / "run", in_channels=1)
    images = tmp_path / "images"
    _image(images / "siteA" / "scan.nii.gz", (20, 24, 22), seed=1)
    _image(images / "siteB" / "scan.nii.gz", (26, 20, 18), seed=2)
    _infer(checkpoint, images)  # no output_dir: the run's folder, not the repository

    out = tmp_path / "run" / "inference"
    assert sorted(p.name for p in out.iterdir()) == ["siteA__scan.nii.gz", "siteB__scan.nii.gz"]
    # each file is its own image's segmentation: it has that image's grid
    assert nib.load(out / "siteA__scan.nii.gz").shape == (20, 24, 22)
    assert nib.load(out / "siteB__scan.nii.gz").shape == (26, 20, 18)

    before = (out / "siteA__scan.nii.gz").read_bytes()
    with pytest.raises(Exception) as refused:
        _infer(checkpoint, images)
    message = error_chain(refused.value)
    assert (
        f"2 of 2 predictions already exist in '{out}': '{out / 'siteA__scan.nii.gz'}', '{out / 'siteB__scan.nii.gz'}'. "
        "Existing predictions are never replaced: pass another --output_dir, or --overwrite true to replace them."
    ) in message
    assert (out / "siteA__scan.nii.gz").read_bytes() == before

    (out / "siteA__scan.nii.gz").write_bytes(b"not a prediction")  # replaced only when asked to
    _infer(checkpoint, images, overwrite="true")  # the text `--overwrite true` gives on the command line
    assert nib.load(out / "siteA__scan.nii.gz").shape == (20, 24, 22)


def test_dataset_json_case_is_named_by_its_case_id(tmp_path):
    checkpoint = _run_folder(tmp_path / "run", in_channels=2)
    data = tmp_path / "task"
    for channel in range(2):
        _image(data / "imagesTs" / f"case_008_{channel:04d}.nii.gz", (18, 20, 22), seed=channel)
    (data / "dataset.json").write_text(json.dumps({
        "labels": LABELS, "modality": {"0": "t1", "1": "flair"},
        "test": [{"image": ["imagesTs/case_008_0000.nii.gz", "imagesTs/case_008_0001.nii.gz"]}],
    }))
    _infer(checkpoint, data / "dataset.json", output_dir=str(tmp_path / "pred"))
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["case_008.nii.gz"]  # was case_0000.nii.gz
    assert nib.load(tmp_path / "pred" / "case_008.nii.gz").shape == (18, 20, 22)


def test_dataset_json_ids_are_those_of_training_and_the_splits(tmp_path):
    """Labeled cases are named exactly as ``load_segmentation_datalist`` names them (the ids of the splits), for the
    training list and for a labeled test list whose file names repeat training ones (a hash suffix)."""
    data = tmp_path / "task"
    entries = {"training": [], "test": []}
    for part, folder, names in (("training", "Tr", ("a", "b", "c")), ("test", "Ts", ("a", "d"))):
        for name in names:
            image = _image(data / f"images{folder}" / f"{name}_0000.nii.gz", (8, 8, 8))
            label = data / f"labels{folder}" / f"{name}.nii.gz"
            label.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image((np.asarray(nib.load(image).dataobj) > 0).astype(np.uint8), np.eye(4)), str(label))
            entries[part].append({"image": [str(image.relative_to(data))], "label": str(label.relative_to(data))})
    (data / "dataset.json").write_text(json.dumps({"labels": LABELS, "modality": {"0": "t1"}, **entries}))

    dataset, _ = load_segmentation_datalist(data / "dataset.json")
    by_label = {e["label"]: e["case"] for e in dataset}
    for key in ("training", "test"):
        cases = inference_inputs(data / "dataset.json", key=key)
        expected = [by_label[str(data / e["label"])] for e in entries[key]]
        assert [c["case"] for c in cases] == expected
    assert [c["case"] for c in inference_inputs(data / "dataset.json", key="training")] == ["a", "b", "c"]
    test_ids = [c["case"] for c in inference_inputs(data / "dataset.json", key="test")]
    assert test_ids[0].startswith("a__") and len(test_ids[0]) == len("a__") + 8 and test_ids[1] == "d"


def test_a_folder_for_a_two_channel_model_fails_before_the_network_runs(tmp_path, error_chain):
    checkpoint = _run_folder(tmp_path / "run", in_channels=2)
    images = tmp_path / "images"
    _image(images / "a.nii.gz", (12, 12, 12))
    _image(images / "b.nii.gz", (12, 12, 12))
    wf = ConfigWorkflow(config_file=str(INFERENCE), workflow_type="infer", logging_file=False,
                        checkpoint=str(checkpoint), input_dir=str(images), device="cpu")
    wf.initialize()
    with pytest.raises(Exception) as failed:
        wf.run()  # the datalist is read first, before any network call
    assert not (checkpoint.parent.parent / "inference").exists()  # nothing segmented, nothing written
    assert (
        f"input_dir '{images}' is a folder of images, one per case, but the model takes 2 channels (t1, flair) and "
        f"'{images / 'a.nii.gz'}' has 1 (2 of 2 files do not fit). To segment cases with several modality files, list "
        "each case's files in a dataset.json and pass it as --input_dir:\n"
        '  {"test": [{"image": ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]}, ...]}\n'
        "(paths relative to the JSON file, one file per channel in the model's order: t1, flair); a 4D image with "
        "the channels on its last axis also works."
    ) in error_chain(failed.value)
    # a folder of 4D two-channel images is fine for the same model
    four_d = tmp_path / "four_d"
    _image(four_d / "c.nii.gz", (12, 12, 12), channels=2)
    assert inference_inputs(four_d, in_channels=2) == [{"case": "c", "image": [str(four_d / "c.nii.gz")]}]


def test_missing_model_info_says_where_it_comes_from(tmp_path, error_chain):
    checkpoint = _run_folder(tmp_path / "run", in_channels=1)
    (checkpoint.parent / "model_info.json").unlink()
    _image(tmp_path / "images" / "a.nii.gz", (12, 12, 12))
    with pytest.raises(Exception) as failed:
        _infer(checkpoint, tmp_path / "images")
    assert (
        f"model_info.json not found at '{checkpoint.parent / 'model_info.json'}': it says which network the weights "
        "beside it belong to"
    ) in error_chain(failed.value)
