"""Fixtures for running the bundles in-process on a small synthetic dataset with the tiny network preset."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_datalist(tmp_path_factory) -> str:
    """Four synthetic brain MRIs (NIfTI) written once per test session; returns their datalist."""
    from custom_nets.data import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo_mri"), num_images=4, seed=0)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> str:
    """One preprocessing cache for the whole session (preprocessing is resumable, so later runs reuse it)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def finetune_cache(tmp_path_factory) -> str:
    """One cache of the synthetic labeled dataset and its preprocessing for every fine-tuning test."""
    return str(tmp_path_factory.mktemp("finetune_cache"))


@pytest.fixture
def tiny_overrides(demo_datalist, shared_cache, tmp_path):
    """Overrides that make train.yaml a seconds-long CPU run; tests add or change keys."""
    return {
        "dataset_dir": demo_datalist,
        "cache_dir": shared_cache,
        "output_dir": str(tmp_path / "run"),
        "network_preset": "tiny",
        "patch_size": [32, 32, 32],
        "block_size": 8,
        "batch_size": 2,
        "max_steps": 4,
        "iterations_per_epoch": 2,
        "num_workers": 0,
        "checkpoint_interval": 2,
        "preview_interval": 2,
        "log_interval": 1,
        "device": "cpu",
    }
