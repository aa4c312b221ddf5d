"""Fine-tuning schedules of the OpenMind benchmark: which part of the network trains, and at which learning rate.

Wald et al., "An OpenMind for 3D medical vision self-supervised learning", appendix C.1 and Fig. 6,
https://arxiv.org/abs/2412.17041. Five schedules are defined there for fine-tuning a pre-trained ResEnc-L:

- ``default``: nnU-Net's polynomial decay from the peak learning rate, whole network.
- ``frozen``: the same decay, but only the decoder trains; the encoder is never updated.
- ``warm_up``: a linear warm-up of the whole network, then the default decay.
- ``valley``: decoder only with a linearly *decreasing* learning rate, then a whole-network warm-up (fresh
  optimiser), then the default decay.
- ``sawtooth`` (best for CNNs): decoder-only warm-up and decay, then a whole-network warm-up (fresh optimiser),
  then the default decay.

A ``Schedule`` is a tuple of ``Stage`` s measured in optimiser steps (iterations); it is pure data, with no
optimiser or network attached. ``ScheduleHandler`` (``custom_nets.engine.schedule_handler``) applies it to an
Ignite engine, ``custom_nets.engine.freezing.set_trainable`` freezes the encoder.

The reference trainers change the learning rate once per epoch; here it changes every iteration, with the
stage start and end values chosen so that the published numbers are met (see ``build_schedule``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "POLY_EXPONENT", "SCHEDULES", "Stage", "Schedule", "build_schedule", "default_peak_lr", "default_schedule",
    "warmup_iterations",
]

POLY_EXPONENT = 0.9  # nnU-Net's polynomial decay exponent
SCHEDULES = ("default", "frozen", "warm_up", "valley", "sawtooth")


def default_schedule(pretrained_checkpoint: str | None) -> str:
    """The schedule a fine-tuning run gets unless one is named: "sawtooth" (best for CNNs in OpenMind) from
    pre-trained weights, "default" (nnU-Net's poly decay, whole network from the start) from scratch."""
    return "sawtooth" if pretrained_checkpoint else "default"


def default_peak_lr(pretrained_checkpoint: str | None) -> float:
    """The peak learning rate a fine-tuning run gets unless one is set: 1e-3 from pre-trained weights (OpenMind's
    fine-tuning of pre-trained ResEnc-L), 1e-2 from scratch (nnU-Net's initial learning rate)."""
    return 1e-3 if pretrained_checkpoint else 1e-2


TRAINS = ("decoder", "all")
SHAPES = ("linear", "poly")

# Length in epochs of each warm-up stage ("initial warm-up stage" in the paper) for the two run lengths that
# the paper defines (appendix C.1: 15 epochs for 150-epoch runs, 50 for 1000-epoch runs).
PAPER_WARMUP_EPOCHS = MappingProxyType({150: 15, 1000: 50})
# Any other run length scales the 1000-epoch version: each warm-up stage is 50 / 1000 = 5 % of the run.
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule: a fixed number of iterations, a trained part, a learning-rate curve.

    With ``t`` the iteration within the stage (0-based) and ``N = iterations``:

    - ``linear``: ``lr = lr_start + (lr_end - lr_start) * t / N``. ``lr_end`` is the value the line reaches at
      ``t = N``, i.e. at the first iteration of the next stage, which is where the next stage continues.
    - ``poly``: ``lr = lr_end + (lr_start - lr_end) * (1 - t / N) ** 0.9``. With ``lr_end = 0`` this is exactly
      nnU-Net's ``PolyLRScheduler`` (``lr_start * (1 - t / N) ** 0.9``). A positive ``lr_end`` is a floor the
      decay approaches at ``t = N``; Sawtooth's decoder stage needs one (see ``_sawtooth_decoder_stages``).

    Args:
        name: short name used in logs, e.g. "warmup_decoder".
        iterations: length of the stage in optimiser steps (>= 1).
        trains: "decoder" (encoder frozen, stem included) or "all" (whole network).
        lr_start: learning rate of the stage's first iteration (>= 0).
        lr_end: value the curve reaches at the end of the stage (>= 0; for "poly", at most ``lr_start``).
        shape: "linear" or "poly".
        fresh_optimizer: clear the optimiser state (momentum buffers) when the stage begins. Defaults to False.
    """

    name: str
    iterations: int
    trains: str
    lr_start: float
    lr_end: float
    shape: str
    fresh_optimizer: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a stage needs a non-empty name, got {self.name!r}.")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"stage '{self.name}': iterations must be an integer >= 1, got {self.iterations!r}.")
        if self.trains not in TRAINS:
            raise ValueError(f"stage '{self.name}': trains must be one of {TRAINS}, got {self.trains!r}.")
        if self.shape not in SHAPES:
            raise ValueError(f"stage '{self.name}': shape must be one of {SHAPES}, got {self.shape!r}.")
        for key in ("lr_start", "lr_end"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"stage '{self.name}': {key} must be a finite number >= 0, got {value!r}.")
        if self.shape == "poly" and self.lr_end > self.lr_start:
            raise ValueError(
                f"stage '{self.name}': a poly stage decays, so lr_end ({self.lr_end}) must not exceed lr_start"
                f" ({self.lr_start}); use shape='linear' for an increasing learning rate."
            )

    def lr_at(self, t: int) -> float:
        """Learning rate of the stage's iteration ``t`` (0-based, ``0 <= t < iterations``)."""
        if not 0 <= t < self.iterations:
            raise ValueError(f"stage '{self.name}' has iterations 0..{self.iterations - 1}, got {t}.")
        progress = t / self.iterations
        if self.shape == "linear":
            return self.lr_start + (self.lr_end - self.lr_start) * progress
        return self.lr_end + (self.lr_start - self.lr_end) * (1.0 - progress) ** POLY_EXPONENT


@dataclass(frozen=True)
class Schedule:
    """A named sequence of stages; iterations are global, 0-based optimiser steps.

    Args:
        name: schedule name, e.g. "sawtooth".
        stages: the stages in order (a list is converted to a tuple).
    """

    name: str
    stages: tuple[Stage, ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise ValueError(f"schedule '{self.name}' needs at least one Stage, got {self.stages!r}.")
        object.__setattr__(self, "stages", stages)
        starts, total = [], 0
        for stage in stages:
            starts.append(total)
            total += stage.iterations
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def total_iterations(self) -> int:
        """Number of optimiser steps the schedule covers (the fine-tuning run's max_epochs * epoch_length)."""
        return self._starts[-1] + self.stages[-1].iterations

    @property
    def stage_starts(self) -> tuple[int, ...]:
        """Global iteration at which each stage begins."""
        return self._starts

    def stage_at(self, iteration: int) -> tuple[int, Stage, int]:
        """The stage of global iteration ``iteration`` (0-based) as ``(index, stage, iteration_within_stage)``."""
        if not 0 <= iteration < self.total_iterations:
            raise ValueError(
                f"schedule '{self.name}' covers iterations 0..{self.total_iterations - 1}, got {iteration}; make the"
                f" run's max_epochs * epoch_length equal the schedule's total_iterations ({self.total_iterations})."
            )
        index = bisect.bisect_right(self._starts, iteration) - 1
        return index, self.stages[index], iteration - self._starts[index]

    def lr_at(self, iteration: int) -> float:
        """Learning rate of the ``(iteration + 1)``-th optimiser step (``iteration`` is 0-based)."""
        _, stage, t = self.stage_at(iteration)
        return stage.lr_at(t)


def _check_positive_int(name: str, value: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= 1 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def warmup_iterations(epochs: int, iterations_per_epoch: int) -> int:
    """Length in iterations of one warm-up stage of a run of ``epochs`` epochs.

    15 epochs for 150-epoch runs and 50 for 1000-epoch runs (the paper's values: appendix C.1, "Segmentation
    Fine-tuning", last paragraph; Fig. 6 caption); any other run length (e.g. short demos) takes 5 % of its
    iterations (the 1000-epoch proportion), at least one iteration.
    """
    if epochs in PAPER_WARMUP_EPOCHS:
        return PAPER_WARMUP_EPOCHS[epochs] * iterations_per_epoch
    return max(1, round(WARMUP_FRACTION * epochs * iterations_per_epoch))


def _first_epoch_fraction(stage_iterations: int, iterations_per_epoch: int) -> float:
    """1 / (stage length in epochs), at most 1: where the reference's per-epoch linear warm-up starts."""
    return 1.0 / max(1.0, stage_iterations / iterations_per_epoch)


def _warmup(name: str, iterations: int, trains: str, peak_lr: float, ipe: int, fresh: bool = False) -> Stage:
    """A warm-up stage of ``E = iterations / ipe`` epochs: ``linear`` from ``peak_lr / E`` to ``peak_lr``.

    The reference trainers set ``peak * (e + 1) / E`` in epoch ``e`` of an ``E``-epoch warm-up, so its first
    epoch runs at ``peak / E`` (4e-5 = 1e-3 / 25, 2e-5 = 1e-3 / 50); here the rate rises every iteration from
    that value. A stage shorter than an epoch starts at ``peak_lr`` (``E`` clipped to 1 epoch). The
    whole-network warm-up follows the published 2e-5 -> 1e-3; the public Sawtooth trainer divides by the sum of
    both warm-up lengths instead and only reaches ``peak / 2`` before jumping to ``peak``.
    """
    start = peak_lr * _first_epoch_fraction(iterations, ipe)
    return Stage(name, iterations, trains, start, peak_lr, "linear", fresh_optimizer=fresh)


def _sawtooth_decoder_stages(warm: int, peak_lr: float, ipe: int) -> tuple[Stage, Stage]:
    """Sawtooth's decoder phase (encoder frozen): a linear warm-up, then a poly decay to a floor.

    The phase is the run's first warm-up stage (``warm`` iterations, at least two) split in half, the linear
    half rounded down to whole epochs as the reference does (25 + 25 epochs at 1000 epochs, 7 + 8 at 150). The
    reference decays per epoch with ``peak * (1 - e / E) ** 0.9``, whose last epoch gives
    ``peak * (1 / E) ** 0.9`` (5.52e-5 for E = 25). Decaying to zero per iteration would end at 3.8e-7, a rate
    the reference never uses, so the decay is ``poly`` from ``peak`` to that floor: it keeps the published end
    value and still reduces to nnU-Net's poly when the floor is 0.
    """
    decoder_phase = max(2, warm)
    linear = decoder_phase // 2
    if linear >= ipe:
        linear -= linear % ipe  # whole epochs, like the reference's 15 // 2 = 7 epochs
    decay = decoder_phase - linear
    floor = peak_lr * _first_epoch_fraction(decay, ipe) ** POLY_EXPONENT
    return (
        _warmup("warmup_decoder", linear, "decoder", peak_lr, ipe),
        Stage("train_decoder", decay, "decoder", peak_lr, floor, "poly"),
    )


def _head_stages(name: str, epochs: int, ipe: int, peak_lr: float) -> tuple[Stage, ...]:
    """The stages of schedule ``name`` ("default", "warm_up", "valley" or "sawtooth") before its final decay.

    Every warm-up stage lasts ``warmup_iterations(epochs, ipe)``. "default" has none; "warm_up" has one
    (whole network). "valley" first trains the decoder alone for as long with a linearly decreasing rate
    (peak -> 0), "sawtooth" first runs its decoder phase (``_sawtooth_decoder_stages``); both then warm up the
    whole network with a fresh optimiser (its momentum buffers cleared when that warm-up begins).
    """
    if name == "default":
        return ()
    warm = warmup_iterations(epochs, ipe)
    if name == "warm_up":
        return (_warmup("warmup_all", warm, "all", peak_lr, ipe),)
    if name == "valley":
        decoder = (Stage("valley_decoder", warm, "decoder", peak_lr, 0.0, "linear"),)
    else:  # sawtooth
        decoder = _sawtooth_decoder_stages(warm, peak_lr, ipe)
    return decoder + (_warmup("warmup_all", warm, "all", peak_lr, ipe, fresh=True),)


def _check_schedule_args(name: str, epochs: int, iterations_per_epoch: int, peak_lr: float) -> float:
    """Raise a ValueError naming the first bad argument of ``build_schedule``; return ``peak_lr`` as a float."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown fine-tuning schedule {name!r}; choose one of {list(SCHEDULES)}.")
    _check_positive_int("epochs", epochs)
    _check_positive_int("iterations_per_epoch", iterations_per_epoch)
    valid_lr = isinstance(peak_lr, (int, float)) and not isinstance(peak_lr, bool) and math.isfinite(peak_lr)
    if not valid_lr or peak_lr <= 0:
        raise ValueError(f"peak_lr must be a finite number > 0, got {peak_lr!r}.")
    return float(peak_lr)


def _final_decay_iterations(name: str, epochs: int, ipe: int, head: tuple[Stage, ...]) -> int:
    """Iterations left for the final decay after the ``head`` stages; a ValueError when the run has none left."""
    total, used = epochs * ipe, sum(stage.iterations for stage in head)
    if used >= total:
        raise ValueError(
            f"schedule {name!r} with epochs={epochs} and iterations_per_epoch={ipe} has {total} iterations, but its"
            f" warm-up stages alone take {used}; use at least {used + 1} iterations (more epochs or more iterations"
            f" per epoch)."
        )
    return total - used


def build_schedule(name: str, epochs: int = 1000, iterations_per_epoch: int = 250, peak_lr: float = 1e-3) -> Schedule:
    """The named OpenMind fine-tuning schedule for a run of ``epochs * iterations_per_epoch`` optimiser steps.

    Sawtooth, 1000 epochs of 250 iterations at peak 1e-3 (the published table):

    ====== ========== ============== =================================
    epochs iterations trains         lr
    ====== ========== ============== =================================
    0-24   6,250      decoder        linear 4e-5 -> 1e-3
    25-49  6,250      decoder        poly 1e-3 -> ~5.5e-5
    50-99  12,500     all, fresh opt linear 2e-5 -> 1e-3
    100-   225,000    all            poly 1e-3 -> ~0
    ====== ========== ============== =================================

    The reference trainers set the learning rate once per epoch; here it changes every iteration, with stage
    start and end values that meet the published numbers: a warm-up of ``E`` epochs is ``linear`` from
    ``peak / E`` to ``peak`` (``_warmup``), Sawtooth's decoder decay is ``poly`` to the reference's last-epoch
    rate (``_sawtooth_decoder_stages``), and every schedule ends with nnU-Net's ``poly`` decay to 0 over the
    iterations its other stages leave. Stage lengths come from ``warmup_iterations`` (``_head_stages``).

    Args:
        name: one of ``SCHEDULES``: "default", "frozen", "warm_up", "valley", "sawtooth".
        epochs: length of the run in epochs. Defaults to 1000.
        iterations_per_epoch: optimiser steps per epoch. Defaults to 250 (nnU-Net's).
        peak_lr: the learning rate every warm-up reaches and every decay starts from. Defaults to 1e-3 (the
            paper's fine-tuning rate for ResEnc-L; 1e-2 trains from scratch).

    Returns:
        A ``Schedule`` of ``epochs * iterations_per_epoch`` iterations.
    """
    peak_lr = _check_schedule_args(name, epochs, iterations_per_epoch, peak_lr)
    if name == "frozen":  # the encoder never trains: one decoder-only decay over the whole run
        total = epochs * iterations_per_epoch
        return Schedule(name, (Stage("train_decoder", total, "decoder", peak_lr, 0.0, "poly"),))
    head = _head_stages(name, epochs, iterations_per_epoch, peak_lr)
    final = _final_decay_iterations(name, epochs, iterations_per_epoch, head)
    return Schedule(name, head + (Stage("train", final, "all", peak_lr, 0.0, "poly"),))
