"""Rank helpers that work with and without ``torch.distributed`` initialised."""

from __future__ import annotations

import torch

__all__ = ["rank_and_world", "is_main_process"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 or outside a distributed run: the process that writes files and logs."""
    return rank_and_world()[0] == 0
