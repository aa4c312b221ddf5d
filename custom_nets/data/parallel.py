"""Run independent per-file tasks over CPU cores without letting one file stop the run.

Tasks go to a ``ProcessPoolExecutor`` whose workers start from a clean process (a fork server
that has imported the worker's module once, or fresh interpreters where fork servers do not
exist), so they never inherit locks or thread pools from a parent that may already run CUDA,
NCCL or data-loader threads. Each worker uses one torch thread, so N workers use N cores. Results are handed to a
callback in the parent as they arrive, which is where the manifest is appended. At most
``2 * num_workers`` tasks are in flight, so memory stays flat for 100k-file collections.

A worker that dies (out of memory, a crash inside a reader) breaks the whole pool and every
task in flight with it. The pool is then rebuilt and those tasks are retried *one at a time*:
innocent tasks succeed, and a task that kills a worker while running alone is reported through
``on_crash`` instead of being retried again.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

__all__ = ["run_tasks", "limit_torch_threads"]

logger = logging.getLogger(__name__)


def limit_torch_threads() -> None:
    """Limit each worker to one intra-op thread; the parallelism comes from the processes."""
    import torch

    torch.set_num_threads(1)


def _start_context(worker: Callable) -> multiprocessing.context.BaseContext:
    """A fork-server context that preloads the worker's module (imports MONAI once, not once per
    worker, and makes pool restarts cheap); a spawn context where fork servers are unavailable.
    The caller's main script is not preloaded: tasks reference library code only."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([worker.__module__])
        return context
    return multiprocessing.get_context("spawn")


def _check_workers_start(pool: ProcessPoolExecutor) -> None:
    """Fail loudly when workers die before running anything, instead of excluding every file.

    The probe is the builtin ``int()``, so running it imports nothing beyond what a worker
    needs to start."""
    try:
        pool.submit(int).result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            "worker processes died while starting. Worker processes import the main script, so a script "
            "that preprocesses data must guard its code with `if __name__ == '__main__':`; "
            "or pass num_workers=0 to preprocess in this process"
        ) from err


def run_tasks(
    tasks: Sequence[dict],
    worker: Callable[[dict], dict],
    num_workers: int,
    on_result: Callable[[dict, dict], None],
    on_crash: Callable[[dict], dict],
    initializer: Callable[[], None] | None = limit_torch_threads,
) -> None:
    """Apply ``worker`` to every task and pass ``(task, result)`` to ``on_result``.

    Args:
        tasks: picklable task dicts.
        worker: picklable module-level function ``task -> result`` that catches its own errors.
        num_workers: number of processes; 0 runs everything in this process (no pickling).
        on_result: called in this process for every finished task, in completion order.
        on_crash: builds the result for a task that killed its worker process while running
            alone; that result is passed to ``on_result`` like any other.
        initializer: run once in every worker process (default: one torch thread per worker).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} is negative: pass 0 (in-process) or a positive number")
    if num_workers == 0:
        for task in tasks:
            on_result(task, worker(task))
        return

    pending = deque(tasks)
    suspects: deque = deque()
    context = _start_context(worker)
    while pending or suspects:
        in_flight: dict[Future, dict] = {}
        crashed: list[dict] = []
        solo = False
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context, initializer=initializer) as pool:
            _check_workers_start(pool)

            def submit(task: dict) -> None:
                try:
                    in_flight[pool.submit(worker, task)] = task
                except BrokenProcessPool:  # the pool broke since the last result arrived
                    crashed.append(task)

            while (pending or suspects or in_flight) and not crashed:
                if suspects and not in_flight:
                    solo = True
                    submit(suspects.popleft())
                elif not suspects:
                    solo = False
                    while pending and len(in_flight) < 2 * num_workers and not crashed:
                        submit(pending.popleft())
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        crashed.append(task)
                        continue
                    on_result(task, result)
            victims = crashed + list(in_flight.values())
        if not victims:
            continue
        if solo and len(victims) == 1:
            logger.warning("A worker process died while processing %s; excluding it", victims[0].get("case_id"))
            on_result(victims[0], on_crash(victims[0]))
        else:
            logger.warning("A worker process died; retrying the %d tasks in flight one at a time", len(victims))
            suspects.extend(victims)
