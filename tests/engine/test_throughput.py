"""Throughput: samples/s, step time and data-wait share against hand-computed values (fake clock and a real
sleeping loader), synchronisation count on CUDA, and what the progress bar and TensorBoard show."""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from ignite.engine import Engine, Events

from custom_nets.engine import THROUGHPUT_KEYS, ProgressBar, TensorBoardScalars, Throughput


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowLoader:
    """Batches of ``batch`` zeros; each takes ``wait_s`` to fetch (advancing the fake clock, or sleeping)."""

    def __init__(self, batch: int, wait_s: float, clock: FakeClock | None = None) -> None:
        self.batch, self.wait_s, self.clock = batch, wait_s, clock

    def __iter__(self):
        while True:
            if self.clock is None:
                time.sleep(self.wait_s)
            else:
                self.clock.now += self.wait_s
            yield {"image": torch.zeros(self.batch, 1, 2, 2, 2)}


def _fake_run(iterations=20, interval=5, warmup=5, batch=3, wait_s=0.01, step_s=0.03, first_steps_s=1.0):
    """A run on the fake clock whose first ``warmup`` steps take ``first_steps_s`` (compilation, autotuning)."""
    clock = FakeClock()

    def step(engine, batch_data):
        clock.now += first_steps_s if engine.state.iteration <= warmup else step_s

    engine = Engine(step)
    throughput = Throughput(interval=interval, warmup=warmup, clock=clock)
    throughput.attach(engine)
    windows = {}
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=interval), lambda e: windows.update({e.state.iteration: dict(e.state.metrics)})
    )
    engine.run(SlowLoader(batch, wait_s, clock), max_epochs=1, epoch_length=iterations)
    return throughput, windows


def test_window_values_and_summary_against_hand_computed_ones():
    throughput, windows = _fake_run()
    assert sorted(windows) == [5, 10, 15, 20]
    # warm-up window: 5 iterations of 10 ms waiting + 1 s step
    assert windows[5]["samples_per_s"] == pytest.approx(3 * 5 / (5 * 1.01))
    assert windows[5]["step_ms"] == pytest.approx(1010.0)
    assert windows[5]["data_wait_share"] == pytest.approx(0.01 / 1.01)
    # steady windows: batch * iterations / window = 3 * 5 / (5 * 40 ms)
    for it in (10, 15, 20):
        assert windows[it]["samples_per_s"] == pytest.approx(75.0)
        assert windows[it]["step_ms"] == pytest.approx(40.0)
        assert windows[it]["data_wait_share"] == pytest.approx(0.25)
        assert "peak_memory_gib" not in windows[it]  # CPU
    # the summary leaves out the 5 warm-up iterations
    assert throughput.summary() == pytest.approx({"samples_per_s": 75.0, "step_ms": 40.0, "data_wait_share": 0.25})


def test_summary_starts_mid_window_and_includes_the_final_partial_window():
    throughput, _ = _fake_run(iterations=13, interval=5, warmup=3, first_steps_s=0.5)
    # iterations 4-13 at 40 ms each, 10 ms of which waiting; 13 is not a window end but the run's end
    assert throughput.summary() == pytest.approx({"samples_per_s": 75.0, "step_ms": 40.0, "data_wait_share": 0.25})


def test_summary_without_timed_iterations_names_the_fix():
    throughput, _ = _fake_run(iterations=4, warmup=5)
    with pytest.raises(ValueError, match="no iteration after the 5 warm-up iterations.*lower warmup"):
        throughput.summary()
    with pytest.raises(ValueError, match="interval >= 1"):
        Throughput(interval=0)


def test_real_sleeping_loader_gives_the_expected_share_and_rate():
    """A loader that sleeps 30 ms per batch in front of a 30 ms step: half the time is spent waiting."""
    engine = Engine(lambda e, b: time.sleep(0.03))
    throughput = Throughput(interval=4, warmup=2)
    throughput.attach(engine)
    engine.run(SlowLoader(batch=2, wait_s=0.03), max_epochs=1, epoch_length=10)
    summary = throughput.summary()
    assert summary["data_wait_share"] == pytest.approx(0.5, abs=0.1)
    assert summary["step_ms"] == pytest.approx(60.0, rel=0.3)
    assert summary["samples_per_s"] == pytest.approx(2 / 0.06, rel=0.3)
    assert summary["samples_per_s"] == pytest.approx(2 * 1000.0 / summary["step_ms"])


def test_cuda_is_synchronised_once_per_window_not_per_iteration(monkeypatch):
    calls = {"synchronize": 0, "reset": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.__setitem__("synchronize", calls["synchronize"] + 1))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.__setitem__("reset", calls["reset"] + 1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    clock = FakeClock()

    def step(engine, batch_data):
        clock.now += 0.03

    engine = Engine(step)
    engine.state.device = torch.device("cuda", 0)  # MONAI's trainers set this
    throughput = Throughput(interval=10, warmup=5, clock=clock)
    throughput.attach(engine)
    engine.run(SlowLoader(2, 0.01, clock), max_epochs=1, epoch_length=40)
    # 4 window ends + the end of warm-up + COMPLETED (nothing left to book there: iteration 40 ended a window)
    assert calls == {"synchronize": 5, "reset": 1}
    assert engine.state.metrics["peak_memory_gib"] == pytest.approx(3.0)
    assert throughput.summary()["peak_memory_gib"] == pytest.approx(3.0)
    assert set(throughput.summary()) == set(THROUGHPUT_KEYS)


def test_progress_bar_shows_loss_and_speed_without_the_requires_grad_warning():
    engine = Engine(lambda e, b: None)
    engine.state.metrics.update({"samples_per_s": 12.5, "step_ms": 80.0, "data_wait_share": 0.1, "other": 1.0})
    loss = (torch.ones(2, requires_grad=True) * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shown = ProgressBar().postfix(engine, {"loss": loss})
    assert shown == {"loss": 4.0, "samples_per_s": 12.5, "step_ms": 80.0, "data_wait_share": 0.1}


def test_tensorboard_writes_the_speed_under_train():
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = (value, step)

    clock = FakeClock()

    def step(engine, batch_data):
        clock.now += 0.03
        return {"loss": torch.tensor(1.5, requires_grad=True)}  # MONAI's default step does not detach the loss

    engine = Engine(step)
    Throughput(interval=2, warmup=0, clock=clock).attach(engine)
    writer = Writer()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    TensorBoardScalars(writer, optimizer, interval=2).attach(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.run(SlowLoader(4, 0.01, clock), max_epochs=1, epoch_length=4)
    assert writer.scalars["train/loss"] == (1.5, 4)
    assert writer.scalars["train/samples_per_s"][0] == pytest.approx(100.0)
    assert writer.scalars["train/step_ms"][0] == pytest.approx(40.0)
    assert writer.scalars["train/data_wait_share"] == (pytest.approx(0.25), 4)
    assert "train/peak_memory_gib" not in writer.scalars


def test_tensorboard_writes_a_last_point_when_the_run_ends_between_two_intervals():
    points = []

    class Writer:
        def add_scalar(self, tag, value, step):
            points.append((tag, step))

    losses = iter([3.0, 2.0, 1.0])
    engine = Engine(lambda e, b: {"loss": torch.tensor(next(losses))})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    TensorBoardScalars(Writer(), optimizer, interval=10).attach(engine)
    engine.run([0, 0, 0], max_epochs=1)  # shorter than log_interval
    assert points == [("train/loss", 3), ("train/lr", 3)]

    points.clear()
    exact = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
    TensorBoardScalars(Writer(), optimizer, interval=2).attach(exact)
    exact.run([0, 0, 0, 0], max_epochs=1)  # ends on an interval: no duplicate point
    assert points == [("train/loss", 2), ("train/lr", 2), ("train/loss", 4), ("train/lr", 4)]
