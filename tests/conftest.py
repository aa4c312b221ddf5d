"""Shared test settings (small thread count so the suite behaves the same on 2-core CI machines) and fixtures."""

import socket

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


def _error_messages(err: BaseException) -> list[str]:
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    return messages


@pytest.fixture
def error_messages():
    """The messages of an exception and its causes, outermost first (MONAI wraps errors raised in config items)."""
    return _error_messages


@pytest.fixture
def error_chain():
    """All messages of an exception and its causes as one text, one message a line."""
    return lambda err: "\n".join(_error_messages(err))


@pytest.fixture
def one_process_group(monkeypatch):
    """torchrun's environment for a world of one, so a multi-GPU overlay's ``initialize`` can run on CPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
