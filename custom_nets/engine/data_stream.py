"""Seed the training data stream (which images, which augmentations) from the iteration a run starts at.

Without it, every start of a run, fresh or resumed, seeds the sampler and the loader's workers from the global
torch RNG that ``initialize`` just reseeded, so a job pre-empted again and again trains on the same images and
augmentations in every segment. ``SeedDataStream`` reseeds them from (seed, iteration at start, rank): a fresh
run with the same seed sees the same batches, a resumed run continues with new ones (not those the
uninterrupted run would have seen: that would need the workers' RNG states, which live in other processes).
"""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd

from custom_nets.distributed import rank_and_world
from custom_nets.engine.iterations import step_seed

__all__ = ["SeedDataStream", "data_stream_seeds"]

# Spawn key that separates the data stream from the masks / pretext views, which are seeded with step_seed itself.
_DATA_STREAM_KEY = 0xDA7A


def data_stream_seeds(seed: int, iteration: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """(sampler seed, loader seed) of a run of ``seed`` starting at global ``iteration`` on ``rank``.

    Both are 63-bit integers drawn by NumPy's ``SeedSequence`` from ``step_seed(seed, iteration, rank,
    world_size)``, so they are unrelated to each other and to the mask / view generator of the same iteration.
    """
    entropy = step_seed(seed, iteration, rank, world_size)
    sequence = np.random.SeedSequence(entropy, spawn_key=(_DATA_STREAM_KEY,))
    sampler_seed, loader_seed = sequence.generate_state(2, np.uint64)
    return int(sampler_seed) >> 1, int(loader_seed) >> 1


class SeedDataStream:
    """At the start of every run, seed the trainer's sampler and augmentation from (seed, iteration, rank).

    What is seeded, with ``data_stream_seeds(seed, engine.state.iteration, rank, world_size)``:

    - the sampler's ``generator`` (``RandomSampler``, ``WeightedRandomSampler``, ...: which images are drawn);
      samplers without one (sequential, ``DistributedSampler``) are left as they are;
    - the loader's ``generator``, from which PyTorch draws the workers' base seed when the data iterator is
      created; MONAI's ``worker_init_fn`` seeds each worker's random transforms from it;
    - with ``num_workers=0``, the dataset's random transforms directly (``monai.data.utils.set_rnd``), since
      there are no workers and MONAI's ``DataLoader`` seeded them once, when it was built.

    It acts on the first ``EPOCH_STARTED`` of each ``engine.run()``: Ignite fires every ``STARTED`` handler
    before it, among them ``ResumableCheckpoint``'s resume, which restores ``engine.state.iteration``, and creates
    the data iterator right after it (``ignite.engine.Engine._internal_run_as_gen``). So the position of this
    handler in ``train#handlers`` does not matter. Under DDP each rank gets its own stream. A loader with
    ``persistent_workers`` that was already iterated in this process keeps its workers' seeds.

    Args:
        seed: the run's seed (the bundle's ``seed``). The loader is the trainer's ``engine.state.dataloader``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._pending = False
        self.seeds: tuple[int, int] | None = None  # (sampler, loader) seeds of the latest start, for logs and tests

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._arm)
        engine.add_event_handler(Events.EPOCH_STARTED, self._seed_once)

    def _arm(self, engine: Engine) -> None:
        self._pending = True

    def _seed_once(self, engine: Engine) -> None:
        if self._pending:
            self._pending = False
            self(engine)

    def __call__(self, engine: Engine) -> None:
        loader = engine.state.dataloader
        if loader is None:
            return
        rank, world = rank_and_world()
        self.seeds = sampler_seed, loader_seed = data_stream_seeds(self.seed, engine.state.iteration, rank, world)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "generator"):
            sampler.generator = torch.Generator().manual_seed(sampler_seed)
        if hasattr(loader, "generator"):
            loader.generator = torch.Generator().manual_seed(loader_seed)
        if getattr(loader, "num_workers", 0) == 0 and hasattr(loader, "dataset"):
            set_rnd(loader.dataset, seed=loader_seed)
