"""Rank helpers that work with and without ``torch.distributed`` initialised (torch only, no ignite, so the
data pipeline and its worker processes can import them cheaply)."""

from __future__ import annotations

import torch

__all__ = ["is_initialized", "rank_and_world", "is_main_process", "barrier"]


def is_initialized() -> bool:
    """True inside an initialised ``torch.distributed`` process group (of any size)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed run."""
    if is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 or outside a distributed run: the process that writes files and logs."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (``torch.distributed.barrier``); only call it inside an initialised process group."""
    torch.distributed.barrier()
