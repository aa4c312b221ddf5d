"""Shared test settings (small thread count so the suite behaves the same on 2-core CI machines) and fixtures."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def restore_torch_flags(monkeypatch):
    """Put cuDNN flags, deterministic-algorithm mode and CUBLAS_WORKSPACE_CONFIG back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
    torch.use_deterministic_algorithms(saved[2])
