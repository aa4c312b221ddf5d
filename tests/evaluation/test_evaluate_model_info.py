"""The README's evaluate command (train.yaml + evaluate.yaml, no training settings) evaluates a model as its
model_info.json describes it: a demo-preset model with 64^3 patches, which the ResEnc-L defaults would not load."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom_nets.data.demo import write_demo_segmentation_dataset
from custom_nets.nets import resenc_unet

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs"
README_COMMAND = [str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """Five small synthetic two-modality cases (lesion + ventricles)."""
    return Path(write_demo_segmentation_dataset(tmp_path_factory.mktemp("task"), num_cases=5, shape=(40, 44, 40),
                                                num_test=0))


def _demo_run(folder: Path, task: Path) -> Path:
    """A fine-tuning run of the demo preset (64^3 patches) as the bundle leaves it; random weights."""
    torch.manual_seed(0)
    (folder / "models").mkdir(parents=True)
    torch.save(resenc_unet("demo", in_channels=2, num_classes=3).state_dict(), folder / "models" / "model.pt")
    labels = json.loads(task.read_text())["labels"]
    info = {
        "network_preset": "demo", "num_channels": 2, "modalities": ["t1", "flair"], "labels": labels,
        "spacing": [1.0, 1.0, 1.0], "normalisation": {"modality": "mri"}, "patch_size": [64, 64, 64],
        "pretrained_checkpoint": None, "schedule": "default",
    }
    (folder / "models" / "model_info.json").write_text(json.dumps(info))
    return folder


def _evaluate(task: Path, run: Path, **settings) -> ConfigWorkflow:
    """The README command: only --dataset_dir and --output_dir (plus CPU-friendly loader and mirroring)."""
    wf = ConfigWorkflow(config_file=README_COMMAND, workflow_type="train", logging_file=False,
                        dataset_dir=str(task), output_dir=str(run), num_workers=0, mirror_axes=[], device="cpu",
                        **settings)
    wf.initialize()
    wf.run()
    return wf


def test_readme_evaluate_command_reads_the_model_from_model_info(task, tmp_path):
    run = _demo_run(tmp_path / "run", task)
    wf = _evaluate(task, run)
    saved = torch.load(run / "models" / "model.pt", weights_only=True)
    evaluated = wf.parser.get_parsed_content("network").state_dict()
    assert evaluated.keys() == saved.keys() and all(torch.equal(evaluated[k], saved[k]) for k in saved)  # demo weights
    assert list(wf.parser.get_parsed_content("validate#inferer").window.roi_size) == [64, 64, 64]  # the training patch
    split = json.loads((run / "splits.json").read_text())["test"]
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["n_cases"] == len(split) >= 1 and summary["classes"] == ["lesion", "ventricles"]
    for case in split:  # <case id>.nii.gz on the grid of the case's label
        assert nib.load(run / "predictions" / f"{case}.nii.gz").shape == (40, 44, 40)


def test_absent_or_contradicted_model_info_is_a_clear_error(task, tmp_path, error_chain):
    run = _demo_run(tmp_path / "run", task)
    with pytest.raises(Exception) as contradicted:
        _evaluate(task, run, patch_size=[32, 32, 32])
    assert (
        "settings patch_size=[32, 32, 32] (the model: [64, 64, 64]) contradict "
        f"'{run / 'models' / 'model_info.json'}', which describes the network whose weights are evaluated: drop these "
        "overrides (the evaluation reads them from model_info.json)."
    ) in error_chain(contradicted.value)
    (run / "models" / "model_info.json").unlink()
    with pytest.raises(Exception) as absent:
        _evaluate(task, run)
    assert f"model_info.json not found at '{run / 'models' / 'model_info.json'}'" in error_chain(absent.value)
