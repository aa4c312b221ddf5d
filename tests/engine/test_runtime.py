"""Process set-up of a run: seeds and cuDNN mode (seed_run), data-loading processes per rank (default_num_workers)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from custom_nets.engine import default_num_workers, runtime, seed_run



def test_default_is_autotuned_and_nondeterministic(restore_torch_flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True)
    seed_run(3)
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.deterministic is False
    assert torch.are_deterministic_algorithms_enabled() is False
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_deterministic_switch_gives_monai_s_reproducible_mode(restore_torch_flags):
    seed_run(3, deterministic=True)
    assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.deterministic is True
    assert torch.are_deterministic_algorithms_enabled() is True
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.parametrize("deterministic", [False, True])
def test_every_global_generator_is_seeded(restore_torch_flags, deterministic):
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_run(7, deterministic=deterministic)
    first = draw()
    seed_run(7, deterministic=deterministic)
    assert draw() == first
    seed_run(8, deterministic=deterministic)
    assert all(a != b for a, b in zip(draw(), first))
    seed_run(2**40 + 7)  # large seeds are reduced modulo 2**32 as NumPy needs
    assert draw() == first


@pytest.mark.parametrize(
    "cores, local_world_size, expected",
    [
        (64, "8", 7),    # 8 cores per rank, one for the training process
        (16, None, 12),  # one rank: 15 would be free, capped at nnU-Net's 12
        (24, "2", 11),
        (8, "4", 1),     # 2 cores per rank
        (4, "8", 1),     # fewer cores than ranks: still one worker
        (1, None, 1),
    ],
)
def test_workers_are_the_rank_s_share_of_the_usable_cores(monkeypatch, cores, local_world_size, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1000)  # the affinity mask wins over the machine's core count
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert default_num_workers() == expected


def test_workers_fall_back_to_the_core_count_without_affinity(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_num_workers() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_num_workers() == 1
    assert runtime.MAX_WORKERS_PER_RANK == 12


@pytest.mark.parametrize("value", ["two", "0"])
def test_bad_local_world_size_is_named(monkeypatch, value):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", value)
    with pytest.raises(ValueError, match=f"LOCAL_WORLD_SIZE.*{value}"):
        default_num_workers()
