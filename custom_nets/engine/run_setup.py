"""What a training config sets up for its process, named: device, network, TensorBoard writer, process group.

Each function replaces a conditional ``$`` expression of the training configs (``bundles/s3d_pretrain/configs``,
``bundles/s3d_finetune/configs``; the baselines inherit pre-training's),
so the configs say what they get ("this process's device", "the network this process trains") and the same code
serves one process and ``torchrun``:

- ``default_device``: this rank's GPU under ``torchrun`` (``cuda:<LOCAL_RANK>``), "cuda" for one process, else "cpu";
- ``training_network``: He initialisation (optional), the device (and memory format), and DistributedDataParallel
  under ``torchrun``;
- ``tensorboard_writer``: a ``SummaryWriter`` on the main process, None on the other ranks;
- ``init_distributed`` / ``finish_run``: the process group (NCCL on GPUs, gloo on CPU) and the end of a run.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from custom_nets.distributed import is_main_process
from custom_nets.nets.initialization import he_init as he_initialise

__all__ = ["default_device", "is_cuda", "training_network", "tensorboard_writer", "init_distributed", "finish_run"]


def default_device() -> str:
    """"cuda:<LOCAL_RANK>" under ``torchrun`` on a GPU machine, "cuda" for one process on it, else "cpu"."""
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{local_rank}" if local_rank is not None else "cuda"


def is_cuda(device: str | torch.device) -> bool:
    """True for a CUDA device ("cuda", "cuda:3"): pinned host memory and bf16 autocast are used only there."""
    return torch.device(device).type == "cuda"


def training_network(
    network: nn.Module,
    device: str | torch.device,
    he_init: bool = False,
    distributed: bool = False,
    find_unused_parameters: bool = False,
    channels_last: bool = False,
) -> nn.Module:
    """The network this process trains: initialised, on ``device``, wrapped for DDP when ``distributed``.

    Args:
        network: the freshly built network (``network_def``); initialised and moved in place.
        device: this process's device (``default_device()``).
        he_init: nnU-Net's initialisation (``custom_nets.nets.initialization.he_init``) instead of PyTorch's.
            Defaults to False.
        distributed: wrap in ``DistributedDataParallel`` (inside an initialised process group, see
            ``init_distributed``), on ``device`` for a GPU. Defaults to False.
        find_unused_parameters: DDP's flag; needed when some parameters get no gradient in some iterations
            (a frozen encoder in decoder-only stages). Defaults to False.
        channels_last: store the 5-D weights in ``torch.channels_last_3d`` memory format (a speed switch,
            numerically equivalent; the patches follow in the iteration). Defaults to False.

    Returns:
        ``network`` itself, or the DDP wrapper around it.
    """
    if he_init:
        he_initialise(network)
    network = network.to(device, memory_format=torch.channels_last_3d) if channels_last else network.to(device)
    if not distributed:
        return network
    device_ids = [torch.device(device)] if is_cuda(device) else None
    return nn.parallel.DistributedDataParallel(
        network, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def tensorboard_writer(log_dir: str | os.PathLike):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing to ``log_dir`` on the main process; None on other ranks."""
    if not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def init_distributed(device: str | torch.device) -> None:
    """Join ``torchrun``'s process group (NCCL for a GPU device, gloo on CPU) unless joined, and make ``device``
    this process's current GPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if is_cuda(device) else "gloo")
    if is_cuda(device):
        torch.cuda.set_device(device)


def finish_run(summary_writer=None) -> None:
    """Close the TensorBoard writer (if this process has one) and leave the process group (if one was joined)."""
    if summary_writer is not None:
        summary_writer.close()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
