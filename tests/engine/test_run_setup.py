"""The named helpers of the fine-tuning configs: device, the trained network, TensorBoard writer, process group."""

from __future__ import annotations


import pytest
import torch

from custom_nets.engine import run_setup
from custom_nets.nets import resenc_unet
from custom_nets.nets.initialization import he_init


@pytest.mark.parametrize(
    "cuda, local_rank, expected",
    [(False, None, "cpu"), (False, "3", "cpu"), (True, None, "cuda"), (True, "3", "cuda:3")],
)
def test_default_device(monkeypatch, cuda, local_rank, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert run_setup.default_device() == expected


def test_is_cuda():
    assert run_setup.is_cuda("cuda:1") and run_setup.is_cuda(torch.device("cuda"))
    assert not run_setup.is_cuda("cpu")


@pytest.mark.parametrize("initialise", [True, False])
def test_training_network_initialises_only_when_asked(initialise):
    torch.manual_seed(0)
    expected = resenc_unet("tiny")
    if initialise:
        he_init(expected)
    torch.manual_seed(0)
    network = resenc_unet("tiny")
    assert run_setup.training_network(network, "cpu", he_init=initialise) is network
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0, msg=key)



def test_distributed_network_and_the_end_of_the_run(one_process_group, tmp_path):
    run_setup.init_distributed("cpu")
    assert torch.distributed.get_backend() == "gloo"
    run_setup.init_distributed("cpu")  # joined already: nothing happens
    network = run_setup.training_network(resenc_unet("tiny"), "cpu", distributed=True, find_unused_parameters=True)
    assert isinstance(network, torch.nn.parallel.DistributedDataParallel) and network.find_unused_parameters
    writer = run_setup.tensorboard_writer(tmp_path / "tensorboard")
    writer.add_scalar("x", 1.0, 0)
    run_setup.finish_run(writer)
    assert not torch.distributed.is_initialized()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_only_the_main_process_writes_tensorboard(monkeypatch, tmp_path):
    monkeypatch.setattr(run_setup, "is_main_process", lambda: False)
    assert run_setup.tensorboard_writer(tmp_path / "tb") is None
    assert not (tmp_path / "tb").exists()
    run_setup.finish_run(None)  # nothing to close, no process group: no error
