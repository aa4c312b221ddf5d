"""SeedDataStream: the sampler and the augmentation are seeded from (seed, iteration at start, rank), so a resumed
run does not replay the data of its first segment, and a run is still reproducible from its seed."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Randomizable

from custom_nets.engine import SeedDataStream, data_stream_seeds, data_stream, step_seed

EPOCH_LENGTH = 2


class RandomValue(Randomizable):
    """A random transform: the item's index and a number from the transform's own random state."""

    def randomize(self, data=None) -> None:
        self.value = self.R.rand()

    def __call__(self, index: int) -> dict:
        self.randomize()
        return {"index": index, "value": self.value}


def _loader(num_workers: int) -> DataLoader:
    dataset = Dataset(data=list(range(50)), transform=RandomValue())
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=400)
    return DataLoader(dataset, sampler=sampler, batch_size=3, num_workers=num_workers)


def _run(loader: DataLoader, start_iteration: int, seed: int = 0, iterations: int = 4) -> list[tuple]:
    """Batches (indices, values) of a run that starts at ``start_iteration`` as a resumed run does: the state
    is restored by a STARTED handler attached *after* SeedDataStream."""
    engine = Engine(lambda e, batch: None)
    SeedDataStream(seed).attach(engine)

    @engine.on(Events.STARTED)
    def resume(e):
        e.state.iteration = start_iteration
        e.state.epoch = start_iteration // EPOCH_LENGTH

    seen = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((tuple(e.state.batch["index"].tolist()), tuple(e.state.batch["value"].tolist()))),
    )
    engine.run(loader, max_epochs=(start_iteration + iterations) // EPOCH_LENGTH, epoch_length=EPOCH_LENGTH)
    return seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_draws_new_images_and_augmentations_and_runs_are_reproducible(num_workers):
    torch.manual_seed(0)  # what seed_run in initialize does before every start
    fresh = _run(_loader(num_workers), start_iteration=0)
    torch.manual_seed(0)
    assert _run(_loader(num_workers), start_iteration=0) == fresh
    torch.manual_seed(0)
    resumed = _run(_loader(num_workers), start_iteration=4)
    # other images and other augmentation draws than the first segment (without SeedDataStream: the same ones)
    assert {indices for indices, _ in resumed}.isdisjoint(indices for indices, _ in fresh)
    assert {v for _, values in resumed for v in values}.isdisjoint(v for _, values in fresh for v in values)
    torch.manual_seed(123)  # the global RNG no longer decides the stream
    assert _run(_loader(num_workers), start_iteration=4) == resumed
    assert _run(_loader(num_workers), start_iteration=4, seed=1) != resumed


def test_each_rank_draws_its_own_stream(monkeypatch):
    streams = []
    for rank in range(2):
        monkeypatch.setattr(data_stream, "rank_and_world", lambda rank=rank: (rank, 2))
        streams.append(_run(_loader(0), start_iteration=6))
    assert streams[0] != streams[1]


def test_seeds_are_distinct_per_start_rank_and_purpose():
    seeds = {data_stream_seeds(0, it, rank, 4) for it in range(0, 1000, 10) for rank in range(4)}
    assert len(seeds) == 400
    flat = [s for pair in seeds for s in pair]
    assert len(set(flat)) == 800 and all(0 <= s < 2**63 for s in flat)
    # unrelated to the mask / pretext-view seeds of the same iteration
    assert not set(flat) & {step_seed(0, it, rank, 4) for it in range(0, 1000, 10) for rank in range(4)}
    assert data_stream_seeds(5, 40, 1, 2) == data_stream_seeds(5, 40, 1, 2)


def test_seeding_waits_for_the_resume_and_happens_once_per_run():
    calls = []

    class Recording(SeedDataStream):
        def __call__(self, engine):
            calls.append(engine.state.iteration)
            super().__call__(engine)

    loader, handler, engine = _loader(0), Recording(seed=3), Engine(lambda e, batch: None)
    handler.attach(engine)

    @engine.on(Events.STARTED)  # attached after the handler, as a checkpoint listed below it would be
    def resume(e):
        e.state.iteration, e.state.epoch = 10, 5

    engine.run(loader, max_epochs=8, epoch_length=EPOCH_LENGTH)
    assert calls == [10]  # seeded once, after the resume, not again at epochs 7 and 8
    assert handler.seeds == data_stream_seeds(3, 10, 0, 1)
    assert loader.sampler.generator.initial_seed() == handler.seeds[0]
    assert loader.generator.initial_seed() == handler.seeds[1]
