"""The exported bundle's configs/train.yaml: fine-tunes the bundle's own network from models/model.pt with MONAI
components only, run as ``python -m monai.bundle run training`` from inside the bundle without custom_nets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow, create_workflow

from export_helpers import write_labeled_dataset
from custom_nets.export.inference_config import exported_inference_config
from custom_nets.export.train_config import exported_train_config

CT_INFO = {
    "network_preset": "tiny", "num_channels": 1, "modalities": ["ct"], "labels": {"0": "background", "1": "liver"},
    "spacing": [1.5, 1.0, 1.0], "patch_size": [32, 48, 32],
    "normalisation": {
        "modality": "ct", "statistics": {"channels": [{"low": -100.0, "high": 250.0, "mean": 40.0, "std": 60.0}]},
    },
}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_labeled_dataset(tmp_path_factory.mktemp("task"))


def _clean_scripts_modules(monkeypatch):
    """Workflows import the bundle's scripts package; keep it (and the bundle on sys.path) out of other tests."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        monkeypatch.delitem(sys.modules, name)


def test_model_section_and_preprocessing_equal_the_inference_config():
    train, infer = exported_train_config(CT_INFO), exported_inference_config(CT_INFO)
    for key in ("labels", "modalities", "in_channels", "patch_size", "spacing", "network_def"):
        assert train[key] == infer[key], key
    assert train["network_def"]["features"] == [4, 8, 12, 16]
    infer_steps = [t["_target_"] for t in infer["preprocessing"]["transforms"]]
    train_steps = [t["_target_"] for t in train["train"]["preprocessing"]["transforms"]]
    # same deterministic steps in the same order (image and label), the CT normalisation included
    assert train_steps[: len(infer_steps)] == infer_steps == [
        "LoadImaged", "Orientationd", "CropForegroundd", "Lambdad", "NormalizeIntensityd", "Spacingd", "EnsureTyped"]
    normalisation = slice(3, 5)
    train_transforms, infer_transforms = train["train"]["preprocessing"]["transforms"], infer["preprocessing"]["transforms"]
    assert train_transforms[normalisation] == infer_transforms[normalisation]
    assert train["train"]["preprocessing"]["transforms"][5]["mode"] == ["bilinear", "nearest"]


def test_exported_train_config_is_complete(exported, task, monkeypatch):
    configs = exported / "configs"
    assert yaml.safe_load((configs / "train.yaml").read_text()) == json.loads((configs / "train.json").read_text())
    assert "custom_nets" not in (configs / "train.yaml").read_text()
    _clean_scripts_modules(monkeypatch)
    workflow = create_workflow(
        config_file=str(configs / "train.yaml"), workflow_type="train", meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), bundle_root=str(exported), dataset_dir=str(task), num_workers=0,
    )
    assert workflow.check_properties() == []  # MONAI's TrainProperties: trainer, max_epochs, dataset, inferer, ...


def test_fine_tuning_starts_from_the_bundle_weights(exported, task, tmp_path, monkeypatch):
    """learning_rate 0: the saved network must be the bundle's models/model.pt exactly (loaded strictly first)."""
    _clean_scripts_modules(monkeypatch)
    workflow = ConfigWorkflow(
        config_file=str(exported / "configs" / "train.yaml"), workflow_type="train", logging_file=False,
        bundle_root=str(exported), dataset_dir=str(task), output_dir=str(tmp_path), epochs=1, iterations_per_epoch=1,
        batch_size=1, num_workers=0, learning_rate=0.0,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    start = torch.load(exported / "models" / "model.pt", weights_only=True)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(saved) == list(start)
    for key in start:
        torch.testing.assert_close(saved[key], start[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_monai_bundle_run_training_inside_the_bundle(exported, task, tmp_path, without_custom_nets):
    """The documented command, from the bundle folder, in a process where custom_nets cannot be imported."""
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml",
         "--dataset_dir", str(task), "--output_dir", str(tmp_path / "more"), "--epochs", "1",
         "--iterations_per_epoch", "2", "--batch_size", "1", "--num_workers", "0"],
        cwd=exported, env=without_custom_nets, capture_output=True, text=True, timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "Restored all variables from ./models/model.pt" in log
    assert "Epoch: 1/1, Iter: 2/2 -- train_loss:" in log
    start = torch.load(exported / "models" / "model.pt", weights_only=True)
    tuned = torch.load(tmp_path / "more" / "model.pt", weights_only=True)
    assert list(tuned) == list(start)  # the network's state dict, loadable like models/model.pt
    assert any(not torch.equal(tuned[k], start[k]) for k in start if start[k].is_floating_point())
