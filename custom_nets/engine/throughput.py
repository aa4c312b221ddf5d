"""Training speed per logging window and for the whole run: samples/s, step time, data wait, peak GPU memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from ignite.engine import Engine, Events

__all__ = ["Throughput", "THROUGHPUT_KEYS"]

# Keys of engine.state.metrics and of Throughput.summary(); peak_memory_gib only on CUDA.
THROUGHPUT_KEYS = ("samples_per_s", "step_ms", "data_wait_share", "peak_memory_gib")
_GIB = 2**30


@dataclass
class _Tally:
    """Iterations, samples, seconds waited for data and wall seconds of a stretch of training."""

    iterations: int = 0
    samples: int = 0
    wait_s: float = 0.0
    wall_s: float = 0.0

    def add(self, other: "_Tally") -> None:
        self.iterations += other.iterations
        self.samples += other.samples
        self.wait_s += other.wait_s
        self.wall_s += other.wall_s

    def values(self) -> dict[str, float]:
        wall = max(self.wall_s, 1e-12)
        return {
            "samples_per_s": self.samples / wall,
            "step_ms": 1000.0 * self.wall_s / max(self.iterations, 1),
            "data_wait_share": self.wait_s / wall,
        }


def _batch_samples(batch) -> int:
    """Samples in a collated batch: the leading size of its first tensor (dict or tuple batch), or the length of
    a list of per-sample dicts."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return int(batch[0].shape[0]) if isinstance(batch[0], torch.Tensor) else len(batch)
    raise ValueError(
        f"cannot count the samples of a batch of type {type(batch).__name__} (no tensor in it); "
        "pass Throughput(batch_size=...)."
    )


class Throughput:
    """Samples/s, step time, data-wait share and peak GPU memory of every logging window and of the whole run.

    Per window of ``interval`` iterations (windows end at iterations that are multiples of ``interval``), it puts
    into ``engine.state.metrics``:

    - ``samples_per_s``: samples of the window / wall seconds of the window, per process (per GPU under DDP;
      multiply by the world size for the global rate);
    - ``step_ms``: wall milliseconds of the window / its iterations (loading, step and handlers together);
    - ``data_wait_share``: share (0-1) of the window's wall time the training process spent waiting for the next
      batch (``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``); near 0 the loader keeps up, a large share means
      the GPU waits for data (raise ``num_workers``);
    - ``peak_memory_gib`` (CUDA only): ``torch.cuda.max_memory_allocated`` since the run started, GiB (2**30 B).

    ``summary()`` gives the same keys over all iterations of the latest ``engine.run()`` after its first
    ``warmup`` iterations (which hold cuDNN autotuning, ``torch.compile`` and the workers' start-up).

    Cost: a clock read at ``GET_BATCH_STARTED``, ``GET_BATCH_COMPLETED`` and ``ITERATION_COMPLETED``, no
    host-device synchronisation per iteration. On CUDA it calls ``torch.cuda.synchronize`` once at the end of each
    window (so a window's time includes the GPU work queued in it), once when warm-up ends and once at
    ``COMPLETED``. Between synchronisations the host may run ahead of the GPU, so a window's data wait can overlap
    GPU work; the window's wall time is exact.

    Args:
        interval: iterations per window; the bundles use ``log_interval``. Defaults to 10.
        warmup: iterations at the start of each run left out of ``summary()``. Defaults to 10.
        batch_size: samples per iteration; None reads it from each batch (leading size of its first tensor).
        clock: function returning seconds; tests pass a fake one. Defaults to ``time.perf_counter``.
    """

    def __init__(
        self,
        interval: int = 10,
        warmup: int = 10,
        batch_size: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if int(interval) < 1 or int(warmup) < 0:
            raise ValueError(
                f"Throughput needs interval >= 1 and warmup >= 0, got interval={interval}, warmup={warmup}."
            )
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"Throughput batch_size must be >= 1 or None (read from each batch), got {batch_size}.")
        self.interval = int(interval)
        self.warmup = int(warmup)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.clock = clock
        self._reset(None)

    def _reset(self, device: torch.device | None) -> None:
        self._device = device
        self._segment = _Tally()  # since the last synchronisation point
        self._window = _Tally()  # closed segments of the current window
        self._total = _Tally()  # closed segments after warm-up
        self._boundary: float | None = None  # clock at the last synchronisation point
        self._fetch_started = 0.0
        self._run_iterations = 0
        self._summarising = self.warmup == 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._get_batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._get_batch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _on_cuda(self) -> bool:
        return self._device is not None and self._device.type == "cuda"

    def _started(self, engine: Engine) -> None:
        device = getattr(engine.state, "device", None)
        self._reset(torch.device(device) if device is not None else None)
        if self._on_cuda():
            torch.cuda.reset_peak_memory_stats(self._device)

    def _get_batch_started(self, engine: Engine) -> None:
        self._fetch_started = self.clock()
        if self._boundary is None:  # the run's first batch starts the first window
            self._boundary = self._fetch_started

    def _get_batch_completed(self, engine: Engine) -> None:
        self._segment.wait_s += self.clock() - self._fetch_started

    def _iteration_completed(self, engine: Engine) -> None:
        self._segment.iterations += 1
        self._segment.samples += self.batch_size or _batch_samples(engine.state.batch)
        self._run_iterations += 1
        warmup_ends = not self._summarising and self._run_iterations == self.warmup
        window_ends = engine.state.iteration % self.interval == 0
        if warmup_ends or window_ends:
            self._close_segment()
        if warmup_ends:
            self._summarising = True
        if window_ends:
            engine.state.metrics.update(self._values(self._window))
            self._window = _Tally()

    def _completed(self, engine: Engine) -> None:
        if self._segment.iterations:
            self._close_segment()

    def _close_segment(self) -> None:
        """Synchronise the GPU, read the clock, and book the segment since the last such point."""
        if self._on_cuda():
            torch.cuda.synchronize(self._device)
        now = self.clock()
        self._segment.wall_s = now - (self._boundary if self._boundary is not None else now)
        self._window.add(self._segment)
        if self._summarising:
            self._total.add(self._segment)
        self._segment = _Tally()
        self._boundary = now

    def _values(self, tally: _Tally) -> dict[str, float]:
        values = tally.values()
        if self._on_cuda():
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self._device) / _GIB
        return values

    def summary(self) -> dict[str, float]:
        """``samples_per_s``, ``step_ms``, ``data_wait_share`` (and ``peak_memory_gib`` on CUDA) over the latest
        run's iterations after warm-up, up to its end (or, during a run, to the latest window end)."""
        if self._total.iterations == 0:
            raise ValueError(
                f"Throughput has timed no iteration after the {self.warmup} warm-up iterations "
                f"({self._run_iterations} ran in the latest run); run more iterations or lower warmup."
            )
        return self._values(self._total)
