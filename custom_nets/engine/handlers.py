"""Ignite handlers for pre-training runs: progress bar, learning-rate curve, pictures of the views, weight export,
run length.

Each has ``attach(engine)`` so bundle configs list them in ``train#handlers`` next to MONAI's own handlers.
Everything that writes files is a no-op on DDP ranks other than 0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom_nets.data.atomic import atomic_torch_save, atomic_write_text
from custom_nets.errors import ConfigError
from custom_nets.nets.wrappers import unwrap
from custom_nets.distributed import is_main_process
from custom_nets.engine.iterations import network_inputs
from custom_nets.engine.previews import PANELS, preview_grid, pretext_grid, save_png
from custom_nets.engine.throughput import THROUGHPUT_KEYS

__all__ = [
    "WriteJSON", "GradientClipping", "ProgressBar", "TensorBoardScalars", "PretextPreview", "ExportWeights", "RunSummary",
    "StopAtMaxSteps",
]

MASK = "mask"

logger = logging.getLogger(__name__)


def _scalar(value) -> float:
    """A loss as a Python float; tensors are detached first (``float`` of a tensor that requires grad warns)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class GradientClipping:
    """Clip the global gradient norm after backward and before the optimiser step of MONAI's default train step.

    Attached to ``IterationEvents.BACKWARD_COMPLETED``. With MONAI's AMP grad scaler the gradients are unscaled
    first, so the threshold applies to true gradients (nnU-Net clips at 12).

    Args:
        max_norm: largest allowed L2 norm of all gradients together. Defaults to 12.
    """

    def __init__(self, max_norm: float = 12.0) -> None:
        if max_norm <= 0:
            raise ConfigError(
                f"gradient clipping max_norm must be > 0, got {max_norm}: set --grad_clip_norm > 0 (nnU-Net: 12)."
            )
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


class ProgressBar:
    """Ignite's tqdm progress bar over iterations, showing the loss and the speed; only on rank 0.

    Next to the loss it shows the entries of ``engine.state.metrics`` named in ``metric_names`` that are present
    (by default the ``Throughput`` handler's samples/s, step time, data-wait share and, on CUDA, peak memory).

    Args:
        output_key: key of ``engine.state.output`` shown in the bar. Defaults to "loss".
        interval: refresh every this many iterations (each refresh reads the loss from the GPU). Defaults to 1.
        metric_names: keys of ``engine.state.metrics`` shown when present. Defaults to ``THROUGHPUT_KEYS``.
    """

    def __init__(
        self, output_key: str = "loss", interval: int = 1, metric_names: Sequence[str] = THROUGHPUT_KEYS
    ) -> None:
        self.output_key = output_key
        self.interval = max(int(interval), 1)
        self.metric_names = tuple(metric_names)

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        try:
            from ignite.handlers import ProgressBar as IgniteProgressBar
        except ImportError:  # pytorch-ignite 0.4.x (MONAI 1.5's pin) has it in contrib only
            from ignite.contrib.handlers import ProgressBar as IgniteProgressBar

        IgniteProgressBar(persist=True).attach(
            engine,
            output_transform=lambda out: self.postfix(engine, out),
            event_name=Events.ITERATION_COMPLETED(every=self.interval),
        )

    def postfix(self, engine: Engine, output: dict) -> dict[str, float]:
        """The values shown: the loss, then the present metrics of ``metric_names``."""
        shown = {self.output_key: _scalar(output[self.output_key])}
        shown.update({k: float(engine.state.metrics[k]) for k in self.metric_names if k in engine.state.metrics})
        return shown


class TensorBoardScalars:
    """Write the training loss, the learning rate and the speed to TensorBoard every ``interval`` iterations.

    Tags ``train/loss`` (``engine.state.output["loss"]`` of that iteration), ``train/lr`` (first parameter group)
    and ``train/<name>`` for each entry of ``metric_names`` present in ``engine.state.metrics`` (by default the
    ``Throughput`` handler's latest window: ``train/samples_per_s``, ``train/step_ms``, ``train/data_wait_share``,
    ``train/peak_memory_gib``; the bundles give both handlers ``log_interval``). With ``summary_writer=None``
    (DDP ranks other than 0) it does nothing.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` shared with the other TensorBoard handlers.
        optimizer: the trained optimiser.
        interval: iterations between points (each point reads the loss from the GPU). Defaults to 10.
        metric_names: keys of ``engine.state.metrics`` written when present. Defaults to ``THROUGHPUT_KEYS``.
    """

    def __init__(
        self,
        summary_writer,
        optimizer: torch.optim.Optimizer,
        interval: int = 10,
        metric_names: Sequence[str] = THROUGHPUT_KEYS,
    ) -> None:
        self.writer, self.optimizer, self.interval = summary_writer, optimizer, max(int(interval), 1)
        self.metric_names = tuple(metric_names)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        # a run shorter than the interval, or ending between two points, still shows its last loss and lr
        engine.add_event_handler(Events.COMPLETED, self._final)

    def _final(self, engine: Engine) -> None:
        if engine.state.output is not None and engine.state.iteration % self.interval:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        if self.writer is None:
            return
        step = engine.state.iteration
        self.writer.add_scalar("train/loss", _scalar(engine.state.output["loss"]), step)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
        for name in self.metric_names:
            if name in engine.state.metrics:
                self.writer.add_scalar(f"train/{name}", float(engine.state.metrics[name]), step)


class _PeriodicPicture:
    """Every ``interval`` iterations and at the end of training, on the main process, save a picture as PNG and
    optionally to TensorBoard."""

    def __init__(self, output_dir: str | os.PathLike, interval: int, summary_writer, tag: str) -> None:
        self.output_dir = Path(output_dir)
        self.interval = max(int(interval), 1)
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        # a run shorter than the interval, or ending between two pictures, still shows its final state
        engine.add_event_handler(Events.COMPLETED, self._final)

    def _final(self, engine: Engine) -> Path | None:
        if engine.state.output is None or engine.state.iteration % self.interval == 0:
            return None
        return self(engine)

    def picture(self, output: dict) -> tuple[np.ndarray, list[str]]:
        """(uint8 picture, column names) of ``engine.state.output``."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> Path | None:
        if not is_main_process():
            return None
        picture, columns = self.picture(engine.state.output)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{self.tag}_iter{engine.state.iteration:09d}.png"
        save_png(picture, path)
        if self.writer is not None:
            self.writer.add_image(self.tag, picture[None], engine.state.iteration)
            self.writer.add_text(f"{self.tag}/columns", " | ".join(columns), engine.state.iteration)
        return path


class PretextPreview(_PeriodicPicture):
    """Every ``interval`` iterations, save a PNG (and a TensorBoard image) of the first sample of any pre-training
    method's views; rows are the axial, coronal and sagittal central slices.

    - Masked-image modelling, where the network takes the mask as an input (S3D, the dense MAE): columns input /
      masked input / reconstruction / target on masked voxels (``previews.preview_grid``), files
      ``<output_dir>/reconstruction_iter<N>.png``.
    - Every other pretext: network input / output / target, where the output and target are volumes of the input's
      size (``previews.pretext_grid``; contrastive methods show their input views only), files
      ``<output_dir>/pretext_iter<N>.png``.

    A dict output is shown through its ``output_key`` entry.

    Args:
        output_dir: folder for the PNG files.
        interval: iterations between pictures. Defaults to 1000.
        summary_writer: optional TensorBoard writer; the picture goes under the file's tag.
        pretext: the run's pretext transform; its ``network_inputs`` say whether the network takes a mask.
            Defaults to None (one network input).
        output_key: entry of a dict output to show (e.g. "reconstruction"). Defaults to "reconstruction".
        target_key: entry of ``engine.state.output`` holding the target. Defaults to "target".
        tag: file-name prefix and TensorBoard tag. Defaults to None: "reconstruction" or "pretext" as above.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        interval: int = 1000,
        summary_writer=None,
        pretext=None,
        output_key: str = "reconstruction",
        target_key: str = "target",
        tag: str | None = None,
    ) -> None:
        self.masked_input = MASK in network_inputs(pretext)
        if tag is None:
            tag = "reconstruction" if self.masked_input else "pretext"
        super().__init__(output_dir, interval, summary_writer, tag=tag)
        self.output_key = output_key
        self.target_key = target_key

    def picture(self, output: dict) -> tuple[np.ndarray, list[str]]:
        pred = output.get("pred")
        if isinstance(pred, dict):
            pred = pred.get(self.output_key)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        if self.masked_input:
            return preview_grid(output["input"][0], output[MASK][0], pred[0]), list(PANELS)

        def first(t):
            return t[0] if isinstance(t, torch.Tensor) and t.ndim >= 4 else None

        return pretext_grid(output["input"][0], first(pred), first(output.get(self.target_key)))


class ExportWeights:
    """At the end of training, save the network's weights in the fine-tuning format, atomically.

    For S3D the file holds the dense ResEnc state dict (mask tokens and densify convs dropped), which loads
    strictly into ``ResEncUNet`` and nnU-Net's ``ResidualEncoderUNet``.

    Args:
        network: the trained network (wrappers are removed).
        path: output file, e.g. ``<output_dir>/models/model.pt``.
        convert: function from the unwrapped network to the state dict to save. Defaults to ``state_dict()``.
    """

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, convert: Callable | None = None) -> None:
        self.network, self.path, self.convert = network, Path(path), convert

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> Path | None:
        if not is_main_process():
            return None
        net = unwrap(self.network)
        state = self.convert(net) if self.convert is not None else net.state_dict()
        atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, self.path)
        logger.info("saved weights for fine-tuning to %s", self.path)
        return self.path


class WriteJSON:
    """At the end of training, write a JSON file (e.g. what inference needs to know about the model).

    Args:
        path: output file, written atomically.
        content: JSON-serialisable dict (tuples become lists, integer keys become strings).
    """

    def __init__(self, path: str | os.PathLike, content: dict) -> None:
        self.path, self.content = Path(path), content

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> Path | None:
        import json

        if not is_main_process():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.content, indent=2, default=str))
        return self.path


class RunSummary:
    """Log, at start and end, where the run writes its checkpoints, weights, TensorBoard logs and pictures.

    Args:
        paths: label -> path, e.g. {"checkpoints": ..., "tensorboard": ..., "previews": ..., "weights": ...}.
    """

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = {k: os.path.abspath(str(v)) for k, v in paths.items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.report, "writing")
        engine.add_event_handler(Events.COMPLETED, self.report, "finished")

    def report(self, engine: Engine, stage: str) -> None:
        if not is_main_process():
            return
        lines = [f"{stage} at iteration {engine.state.iteration}:"]
        lines += [f"  {label:<12} {path}" for label, path in self.paths.items()]
        if "tensorboard" in self.paths:
            lines.append(f"  view curves with: tensorboard --logdir {self.paths['tensorboard']}")
        logger.info("\n".join(lines))


class StopAtMaxSteps:
    """End training after exactly ``max_steps`` iterations, also in the middle of an epoch.

    Ignite counts whole epochs of ``epoch_length`` iterations. The pre-training bundles run
    ``ceil(max_steps / iterations_per_epoch)`` epochs (``config.epochs_for``) and this handler ends the last one at
    iteration ``max_steps`` (``engine.terminate_epoch``: the last epoch is shorter, ``EPOCH_COMPLETED`` and
    ``COMPLETED`` fire as usual, so the final checkpoint, weights and pictures are written). When ``max_steps`` is a
    whole number of epochs it does nothing: Ignite stops there on its own.

    A resumed run that already reached ``max_steps`` ends before its first iteration; one resumed beyond it (a
    lower ``--max_steps`` than the run was started with) stops with a message.

    Args:
        max_steps: iterations of the whole run (not of this start).
    """

    def __init__(self, max_steps: int) -> None:
        if int(max_steps) < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}: set --max_steps to a number of iterations.")
        self.max_steps = int(max_steps)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.check_start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.stop_when_done)

    def check_start(self, engine: Engine) -> None:
        """At an epoch start (after ``ResumableCheckpoint`` restored the iteration): end a finished run at once."""
        iteration = engine.state.iteration
        if iteration > self.max_steps:
            raise ConfigError(
                f"the run resumed at iteration {iteration}, beyond max_steps={self.max_steps}: set --max_steps "
                f"{iteration} or more, or start in a new output_dir."
            )
        if iteration == self.max_steps:
            engine.terminate()

    def stop_when_done(self, engine: Engine) -> None:
        state = engine.state
        if state.iteration >= self.max_steps and state.iteration < state.epoch_length * state.max_epochs:
            engine.terminate_epoch()
