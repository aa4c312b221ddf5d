"""Crash-safe, automatically resumed training checkpoints.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a crash during the write leaves a truncated
file that the next start would load. ``ResumableCheckpoint`` writes to a temporary file and renames it
(atomic on POSIX), keeps the newest ``n_saved`` files, and on start loads the newest one, restoring the network,
optimiser, lr scheduler and the trainer's iteration, so re-running the same command continues a crashed run.
It logs "starting from iteration 0" or "resuming from <file> at iteration N"; Ignite's own "Engine run resuming
from iteration 0" line, which MONAI engines print on every start, is dropped (``quiet_ignite_resume_from_zero``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
from ignite.engine import Engine, Events

from custom_nets.data.atomic import atomic_torch_save
from custom_nets.errors import CheckpointError, ConfigError
from custom_nets.distributed import is_main_process
from custom_nets.nets.wrappers import unwrap

__all__ = ["QuietFreshStart", "ResumableCheckpoint", "latest_checkpoint", "quiet_ignite_resume_from_zero",
           "atomic_torch_save", "unwrap"]

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_iter(\d+)\.pt$")


def checkpoints_newest_first(save_dir: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint_iter<N>.pt`` in ``save_dir``, largest N first (empty if there is none)."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in save_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(save_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_iter<N>.pt`` with the largest N in ``save_dir`` (None if there is none)."""
    found = checkpoints_newest_first(save_dir)
    return found[0] if found else None


def _load_newest_readable(save_dir: Path) -> tuple[Path, dict] | None:
    """(path, content) of the newest checkpoint that loads; None if there is none.

    A checkpoint that cannot be read (cut short by a full disk, a copy interrupted by hand) is not deleted: it is
    renamed to ``<name>.unreadable`` on the main process, with a warning naming it and the error, so the run resumes
    from the next older one and nothing is lost.
    """
    candidates = checkpoints_newest_first(save_dir)
    for path in candidates:
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            kept = path.with_name(path.name + ".unreadable")
            if is_main_process():
                path.replace(kept)
            logger.warning(
                "checkpoint %s cannot be read (%s: %s); kept as %s, resuming from the next older checkpoint",
                path, type(err).__name__, str(err).splitlines()[0] if str(err) else "", kept.name,
            )
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in {save_dir} can be read (kept as *.unreadable): start "
            "in another output_dir, or move them away to train from iteration 0 here."
        )
    return None


def _mismatch_message(path: Path, key: str, obj, state, save_dir: Path) -> str:
    """Why ``state`` (entry ``key`` of checkpoint ``path``) does not load into ``obj``, and what to do."""
    message = (
        f"checkpoint {path} does not fit this run's '{key}': it was written with other settings (network preset, "
        "ablation switches, optimiser) or by another version."
    )
    if isinstance(obj, torch.nn.Module) and isinstance(state, dict):
        expected = set(unwrap(obj).state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing:
            message += f" Missing in the checkpoint: {missing[:3]}{' ...' if len(missing) > 3 else ''}."
        if unexpected:
            message += f" Not in this network: {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}."
        if any(k.startswith("densify_convs.") for k in missing + unexpected):
            message += (
                " S3D runs started before the bottleneck was densified resume with --densify_coarse_stages false."
            )
    return message + f" Resume with the run's original settings, or start in another output_dir than {save_dir}."


class _DropIgniteResumeFromZero(logging.Filter):
    """Drop Ignite's "Engine run resuming from iteration 0, ..." record (see ``quiet_ignite_resume_from_zero``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Engine run resuming from iteration 0,")


_RESUME_FILTER = _DropIgniteResumeFromZero()


class QuietFreshStart:
    """Handler for a MONAI engine that resumes nothing (the inference and evaluation bundles' evaluators): its
    start is not logged as "Engine run resuming from iteration 0" (``quiet_ignite_resume_from_zero``)."""

    def attach(self, engine: Engine) -> None:
        quiet_ignite_resume_from_zero(engine)


def quiet_ignite_resume_from_zero(engine: Engine) -> None:
    """Stop MONAI engines from logging "Engine run resuming from iteration 0" on a fresh start.

    MONAI's workflows set ``state.max_epochs`` when they are built, so Ignite's ``run()`` takes every start of
    every MONAI engine (trainer and evaluators) for a resume and logs "Engine run resuming from iteration 0, epoch
    0 until N epochs". The message is wrong on a fresh run and uninformative on a real one (checkpoints are loaded
    after it, at ``STARTED``): ``ResumableCheckpoint`` logs the true start or resume instead. The filter goes on
    the loggers of the engine's class and of every MONAI workflow class (Ignite names an engine's logger after its
    class), so the validation evaluators of the same run are covered too.
    """
    from monai.engines.workflow import Workflow

    name = getattr(getattr(engine, "logger", None), "name", "")
    if not name.endswith("." + type(engine).__name__):
        return  # not an Ignite engine (its logger is "ignite.engine.engine.<class>")
    prefix = name[: -len(type(engine).__name__)]
    classes, stack = {type(engine)}, [Workflow]
    while stack:
        cls = stack.pop()
        classes.add(cls)
        stack.extend(cls.__subclasses__())
    for cls in classes:
        logger_ = logging.getLogger(prefix + cls.__name__)
        if _RESUME_FILTER not in logger_.filters:
            logger_.addFilter(_RESUME_FILTER)


class ResumableCheckpoint:
    """Save every ``interval`` iterations and at the end; resume from the newest checkpoint on start.

    Args:
        save_dir: folder of ``checkpoint_iter<N>.pt`` files.
        save_dict: objects with ``state_dict``/``load_state_dict``, e.g. {"network", "optimizer",
            "lr_scheduler"}; the trainer it is attached to is added as "trainer". Wrapped networks (DDP,
            compiled) are saved unwrapped, so a checkpoint moves between 1 and 8 GPUs.
        interval: iterations between checkpoints. Defaults to 1000.
        n_saved: newest checkpoints kept. Defaults to 2.
        resume: load the newest checkpoint when the run starts. Defaults to True.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, object],
        interval: int = 1000,
        n_saved: int = 2,
        resume: bool = True,
    ) -> None:
        if interval < 1 or n_saved < 1:
            raise ConfigError(
                f"checkpoint interval and n_saved must be >= 1, got {interval} and {n_saved}: set "
                "--checkpoint_interval to a positive number of iterations."
            )
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.interval = int(interval)
        self.n_saved = int(n_saved)
        self.resume = resume
        self._last_saved: int | None = None

    def attach(self, engine: Engine) -> None:
        # The trainer's own state (iteration, epoch) is saved too, so a resumed run continues where it stopped.
        self.save_dict.setdefault("trainer", engine)
        quiet_ignite_resume_from_zero(engine)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def load_latest(self, engine: Engine) -> None:
        loaded = _load_newest_readable(self.save_dir)
        if loaded is None:
            logger.info("no checkpoint in %s: starting from iteration 0", self.save_dir)
            return
        path, checkpoint = loaded
        missing = [k for k in self.save_dict if k not in checkpoint]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} lacks {missing}; it was not written by this trainer. Move it out of "
                f"{self.save_dir} or choose another output_dir."
            )
        max_epochs = engine.state.max_epochs
        for key, obj in self.save_dict.items():
            try:
                unwrap(obj).load_state_dict(checkpoint[key])
            except (RuntimeError, KeyError, ValueError) as err:
                raise CheckpointError(_mismatch_message(path, key, obj, checkpoint[key], self.save_dir)) from err
        if engine.state.epoch > max_epochs:
            raise CheckpointError(
                f"checkpoint {path} is at epoch {engine.state.epoch}, beyond this run's {max_epochs} epochs; "
                "raise max_steps or start in a new output_dir."
            )
        engine.state.max_epochs = max_epochs
        logger.info(
            "resuming from %s at iteration %d (epoch %d of %d)", path, engine.state.iteration, engine.state.epoch,
            max_epochs,
        )

    def save(self, engine: Engine) -> None:
        if not is_main_process():
            return
        path = self.save_dir / f"checkpoint_iter{engine.state.iteration:09d}.pt"
        if path.exists() and engine.state.iteration == self._last_saved:
            return  # the interval save of the final iteration already wrote it
        atomic_torch_save({k: unwrap(v).state_dict() for k, v in self.save_dict.items()}, path)
        older = sorted(p for p in self.save_dir.iterdir() if CHECKPOINT_PATTERN.match(p.name))[: -self.n_saved]
        for p in older:
            p.unlink(missing_ok=True)
        self._last_saved = engine.state.iteration
        logger.info("saved checkpoint %s", path)
