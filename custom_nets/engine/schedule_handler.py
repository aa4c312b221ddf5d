"""Ignite handler that drives a fine-tuning ``Schedule``: learning rate, frozen encoder, fresh optimiser.

Everything is derived from ``engine.state.iteration``, so a run resumed from a checkpoint in the middle of a
stage gets the same learning rate, trainable set and optimiser state as the uninterrupted run.
"""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from torch import nn
from torch.optim import Optimizer

from custom_nets.engine.freezing import set_trainable
from custom_nets.engine.schedules import Schedule, Stage

__all__ = ["ScheduleHandler"]

logger = logging.getLogger(__name__)


def _describe(schedule: Schedule, index: int, stage: Stage) -> str:
    fresh = ", fresh optimiser" if stage.fresh_optimizer else ""
    return (
        f"stage {index + 1}/{len(schedule.stages)} '{stage.name}' of schedule '{schedule.name}' (iterations"
        f" {schedule.stage_starts[index]}..{schedule.stage_starts[index] + stage.iterations - 1}): trains"
        f" {stage.trains}, lr {stage.shape} {stage.lr_start:.3g} -> {stage.lr_end:.3g}{fresh}"
    )


class ScheduleHandler:
    """Apply a fine-tuning schedule to the optimiser and the network of an Ignite trainer.

    - ``Events.STARTED``: make the current stage's parameters trainable (``set_trainable``), also when the run
      resumes in the middle of a stage, and set its learning rate.
    - ``Events.ITERATION_STARTED``: set every parameter group's ``lr`` to ``schedule.lr_at(iteration - 1)``
      (Ignite counts iterations from 1). At the first iteration of a stage, apply its trainable set and, if the
      stage has ``fresh_optimizer``, clear the optimiser state (``optimizer.state.clear()``). With all
      parameters in one optimiser from the start, that is exactly a new optimiser (momentum buffers start from
      the next gradient), and the optimiser object that checkpoint handlers reference stays the same.

    Build the optimiser over *all* parameters (not only those with ``requires_grad``): frozen ones simply get no
    gradient and are skipped by the optimiser, untouched bit for bit.

    Multi-GPU: wrap the network in DistributedDataParallel before the run starts, while every parameter is
    still trainable (DDP ignores, for good, parameters that are frozen when it is built), and pass
    ``find_unused_parameters=True``: during decoder-only stages the encoder produces no gradients, which DDP
    otherwise reports as an error at the next iteration. The handler refuses a DDP network built without it
    when the schedule has decoder-only stages. The flag costs one graph traversal per step.

    Args:
        schedule: the ``Schedule`` (``build_schedule(...)``); its ``total_iterations`` must cover the run.
        network: the trained network, possibly wrapped (DDP, ``torch.compile``); needs ``.encoder`` if any stage
            trains only the decoder.
        optimizer: the trainer's optimiser; every parameter group gets the schedule's lr.
        stem_first_conv_trainable: keep the stem's first convolution trainable in decoder-only stages (input
            channels differ from pre-training and that convolution was replicated). Defaults to False.
    """

    def __init__(
        self, schedule: Schedule, network: nn.Module, optimizer: Optimizer, stem_first_conv_trainable: bool = False
    ) -> None:
        if not isinstance(schedule, Schedule):
            raise ValueError(
                f"schedule must be a custom_nets.engine.schedules.Schedule, got {type(schedule).__name__}; build one"
                " with build_schedule(name, epochs, iterations_per_epoch, peak_lr)."
            )
        has_decoder_stage = any(stage.trains == "decoder" for stage in schedule.stages)
        if (
            has_decoder_stage
            and isinstance(network, nn.parallel.DistributedDataParallel)
            and not network.find_unused_parameters
        ):
            raise ValueError(
                f"schedule '{schedule.name}' freezes the encoder in some stages, so DistributedDataParallel must be"
                " built with find_unused_parameters=True (set it in the multi-GPU config)."
            )
        self.schedule = schedule
        self.network = network
        self.optimizer = optimizer
        self.stem_first_conv_trainable = bool(stem_first_conv_trainable)

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s STARTED and ITERATION_STARTED events."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _apply_stage(self, stage: Stage) -> None:
        set_trainable(self.network, stage.trains, stem_first_conv_trainable=self.stem_first_conv_trainable)

    def started(self, engine: Engine) -> None:
        """Check the run length and apply the trainable set and lr of the iteration the run starts (or resumes) at."""
        total = self.schedule.total_iterations
        max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
        if max_epochs is not None and epoch_length is not None:
            planned = max_epochs * epoch_length
            if planned > total:
                raise ValueError(
                    f"the run has {planned} iterations (max_epochs={max_epochs} x epoch_length={epoch_length}) but"
                    f" schedule '{self.schedule.name}' covers {total}; build the schedule with the run's epochs and"
                    " iterations_per_epoch."
                )
            if planned < total:
                logger.warning(
                    "the run stops after %d of the %d iterations of schedule '%s'; its later stages never run.",
                    planned,
                    total,
                    self.schedule.name,
                )
        iteration = min(engine.state.iteration, total - 1)  # number of completed steps = next step's 0-based index
        index, stage, within = self.schedule.stage_at(iteration)
        self._apply_stage(stage)
        self._set_lr(stage.lr_at(within))
        if engine.state.iteration > 0:
            described = _describe(self.schedule, index, stage)
            logger.info("resuming at iteration %d in %s", engine.state.iteration, described)

    def iteration_started(self, engine: Engine) -> None:
        """Set the lr of this iteration; at a stage's first iteration apply its trainable set and optimiser reset."""
        index, stage, within = self.schedule.stage_at(engine.state.iteration - 1)
        if within == 0:
            self._apply_stage(stage)
            if stage.fresh_optimizer:
                self.optimizer.state.clear()
            logger.info("starting %s", _describe(self.schedule, index, stage))
        self._set_lr(stage.lr_at(within))
