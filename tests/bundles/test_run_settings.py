"""What every bundle's ``initialize`` and ``train`` set up for speed and resumption: cuDNN autotuning unless
``deterministic``, loader workers per rank, and the data-stream seeding and throughput handlers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from custom_nets.engine import default_num_workers

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = ROOT / "bundles" / "s3d_pretrain" / "configs"
FINETUNE = ROOT / "bundles" / "s3d_finetune" / "configs"
BASELINES = ROOT / "bundles" / "baselines" / "configs"
TRAINING = {
    "s3d_pretrain": [PRETRAIN / "train.yaml"],
    "s3d_finetune": [FINETUNE / "train.yaml"],
    "baselines": [PRETRAIN / "train.yaml", BASELINES / "dense_mae.yaml"],
}
MULTI_GPU = {
    "s3d_pretrain": PRETRAIN / "multi_gpu_train.yaml",
    "s3d_finetune": FINETUNE / "multi_gpu_train.yaml",
    "baselines": PRETRAIN / "multi_gpu_train.yaml",
}
INFERENCE = {
    "s3d_finetune_inference": FINETUNE / "inference.yaml",
    "exported_inference": ROOT / "custom_nets" / "export" / "templates" / "inference.yaml",
}




def _initialize(files, deterministic=None) -> None:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if deterministic is not None:
        parser["deterministic"] = deterministic
    parser.get_parsed_content("initialize")


def _assert_mode(deterministic: bool) -> None:
    assert torch.backends.cudnn.benchmark is (not deterministic)
    assert torch.backends.cudnn.deterministic is deterministic


@pytest.mark.parametrize("deterministic", [None, True])
@pytest.mark.parametrize("bundle", sorted(TRAINING))
def test_training_autotunes_unless_deterministic(bundle, deterministic, restore_torch_flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (True, False) if deterministic else (False, True)
    _initialize(TRAINING[bundle], deterministic)
    _assert_mode(bool(deterministic))
    assert torch.are_deterministic_algorithms_enabled() is bool(deterministic)


@pytest.mark.parametrize("deterministic", [None, True])
@pytest.mark.parametrize("bundle", sorted(MULTI_GPU))
def test_multi_gpu_overlays_autotune_unless_deterministic(bundle, deterministic, restore_torch_flags, one_process_group):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (True, False) if deterministic else (False, True)
    _initialize(TRAINING[bundle] + [MULTI_GPU[bundle]], deterministic)
    _assert_mode(bool(deterministic))


@pytest.mark.parametrize("deterministic", [None, True])
@pytest.mark.parametrize("config", sorted(INFERENCE))
def test_inference_autotunes_unless_deterministic(config, deterministic, restore_torch_flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (True, False) if deterministic else (False, True)
    _initialize([INFERENCE[config]], deterministic)
    _assert_mode(bool(deterministic))


@pytest.mark.parametrize("bundle", sorted(TRAINING))
def test_training_seeds_the_data_stream_and_measures_throughput(bundle, monkeypatch):
    parser = ConfigParser()
    parser.read_config([str(f) for f in TRAINING[bundle]])
    targets = [h.get("_target_") if isinstance(h, dict) else h for h in parser["train"]["handlers"]]
    names = ("ResumableCheckpoint", "SeedDataStream", "Throughput", "ProgressBar", "TensorBoardScalars")
    position = {name: targets.index(f"custom_nets.engine.{name}") for name in names}
    assert position["ResumableCheckpoint"] < position["SeedDataStream"] < position["Throughput"] < position["ProgressBar"]
    handlers = parser["train"]["handlers"]
    assert handlers[position["SeedDataStream"]]["seed"] == "@seed"
    assert handlers[position["Throughput"]]["interval"] == handlers[position["TensorBoardScalars"]]["interval"] == "@log_interval"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    for local_ranks, expected in (("1", 12), ("4", 7)):  # 32 cores: capped at 12; 8 per rank, one for training
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
        assert parser.get_parsed_content("num_workers", lazy=False) == default_num_workers() == expected


@pytest.mark.parametrize("method, unused", [("s3d", False), ("models_genesis", True)])
def test_pretraining_multi_gpu_overlay_wraps_the_network_and_finalize_leaves_the_group(
    method, unused, one_process_group, restore_torch_flags, tmp_path
):
    """multi_gpu_train.yaml only switches train.yaml's network to DDP: gloo on CPU, the method file's
    find_unused_parameters, channels_last kept; train.yaml's finalize leaves the process group."""
    files = [PRETRAIN / "train.yaml"] + ([BASELINES / f"{method}.yaml"] if method != "s3d" else [])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files + [MULTI_GPU["s3d_pretrain"]]])
    parser.update({"network_preset": "tiny", "patch_size": [32, 32, 32], "block_size": 8, "device": "cpu",
                   "channels_last": True, "output_dir": str(tmp_path / "run")})
    parser.get_parsed_content("initialize")
    assert torch.distributed.get_backend() == "gloo"
    network = parser.get_parsed_content("network")
    assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
    assert network.find_unused_parameters is unused
    weights = [p for p in network.module.parameters() if p.ndim == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    parser.get_parsed_content("finalize")
    assert not torch.distributed.is_initialized()
