"""Process set-up of a training run: seeds and cuDNN (``seed_run``), data-loading processes per rank
(``default_num_workers``).

Bundles call ``seed_run`` in ``initialize`` instead of ``monai.utils.set_determinism``: MONAI's function also
turns cuDNN autotuning off and forces deterministic kernels for the whole run, which costs speed on every real
run, while the project's randomness (masks, views, sampling, augmentation) is already seeded explicitly.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_run", "default_num_workers", "MAX_WORKERS_PER_RANK"]

# nnU-Net's default number of data-augmentation processes per GPU (nnunetv2 ``get_allowed_n_proc_DA``).
MAX_WORKERS_PER_RANK = 12
# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); read when the first cuBLAS handle is made.
_CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def seed_run(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy and torch (every device) with ``seed``, and choose the cuDNN mode.

    ``deterministic=False`` (default): ``cudnn.benchmark = True`` (each convolution shape is timed once and the
    fastest kernel kept), ``cudnn.deterministic = False``, ``torch.use_deterministic_algorithms(False)``. Runs
    with the same seed draw the same masks, images and augmentations but may differ in the last bits of the
    floating-point results.

    ``deterministic=True``: bitwise-reproducible runs on the same hardware and software: ``cudnn.benchmark =
    False``, ``cudnn.deterministic = True`` and ``torch.use_deterministic_algorithms(True)``, so an operation
    without a deterministic implementation raises and names itself instead of silently varying.
    ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` when unset, as cuBLAS requires for determinism.

    Args:
        seed: run seed; reduced modulo 2**32 for NumPy. Bundles pass ``@seed`` (``@seed + rank`` under DDP).
        deterministic: the reproducibility switch described above. Defaults to False.
    """
    seed = int(seed) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    deterministic = bool(deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a Slurm or container allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_num_workers() -> int:
    """Data-loading processes for one rank: its share of the usable cores, less one for the training process.

    ``usable cores // LOCAL_WORLD_SIZE - 1``, at least 1 and at most ``MAX_WORKERS_PER_RANK`` (12, nnU-Net's
    default number of augmentation processes per GPU; beyond it each worker mostly adds memory, about
    ``prefetch_factor`` batches of patches per worker). Usable cores come from the process's CPU affinity where
    the platform has it (``os.sched_getaffinity``), else ``os.cpu_count()``; ``LOCAL_WORLD_SIZE`` is the number
    of ranks on this machine set by torchrun (1 without it). Example: 64 cores and 8 GPUs give 7 workers per rank.
    """
    local_ranks = os.environ.get("LOCAL_WORLD_SIZE", "1")
    try:
        local_ranks = int(local_ranks)
    except ValueError:
        raise ValueError(
            f"LOCAL_WORLD_SIZE must be the integer number of ranks on this machine, got {local_ranks!r}."
        ) from None
    if local_ranks < 1:
        raise ValueError(f"LOCAL_WORLD_SIZE must be >= 1, got {local_ranks}; unset it outside torchrun.")
    return max(1, min(MAX_WORKERS_PER_RANK, _usable_cores() // local_ranks - 1))
