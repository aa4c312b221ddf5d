"""Periodic validation during fine-tuning: nnU-Net's pseudo Dice on held-out patches, and overlay pictures.

nnU-Net validates at the end of every epoch on patches of the held-out cases (drawn like training patches, with
the same foreground oversampling, without augmentation): it sums true positives, false positives and false
negatives per foreground class over all validation patches, and reports ``2 tp / (2 tp + fp + fn)`` per class
and their mean, the "pseudo Dice". It is a cheap learning curve, not the final result (that is the sliding-window
evaluation of whole test images in ``evaluate.yaml``), and it selects nothing: the final weights are exported.

Pieces, plugged into MONAI's ``SupervisedEvaluator`` (run by ``ValidationHandler`` from the trainer):

- :class:`PseudoDice`, an Ignite metric (the evaluator's ``key_val_metric``);
- :class:`ValidationSummary`, an evaluator handler that writes the pseudo Dice (mean and per class) and a few
  overlay pictures (:func:`overlay_grid`) to TensorBoard at the trainer's iteration, and logs one line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from custom_nets.engine.previews import slice_grid

__all__ = ["CLASS_COLOURS", "PseudoDice", "ValidationSummary", "overlay_grid"]

logger = logging.getLogger(__name__)

# RGB colours of classes 1, 2, ... in the overlays (repeated beyond the sixth).
CLASS_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def _prediction_and_label(output: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, label) of an evaluator output dict; the full-resolution output of a deep-supervision list."""
    pred = output["pred"]
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    return pred, output["label"]


class PseudoDice(Metric):
    """nnU-Net's pseudo Dice: per foreground class, ``2 tp / (2 tp + fp + fn)`` with tp, fp, fn summed over every
    voxel of every validation patch of a run; ``compute`` returns the mean over the classes where it is defined
    (a class absent from all references and predictions is NaN and left out; NaN if none is defined).

    Args:
        num_classes: classes of the label map, background (0) included.
        output_transform: engine output -> (logits (B, num_classes, *spatial) or a deep-supervision list of
            them, label (B, 1, *spatial)). Defaults to reading MONAI's ``pred`` and ``label``.

    Attributes:
        per_class: after ``compute``, the pseudo Dice of classes 1 .. num_classes - 1 (NaN where undefined).
    """

    def __init__(self, num_classes: int, output_transform: Callable = _prediction_and_label) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.per_class: list[float] = []
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, output) -> None:
        logits, label = output
        if isinstance(logits, (list, tuple)):  # deep supervision: the full-resolution output comes first
            logits = logits[0]
        k = self.num_classes
        if logits.shape[1] != k:
            raise ValueError(f"PseudoDice(num_classes={k}) got logits with {logits.shape[1]} channels")
        predicted = logits.detach().argmax(1).flatten().cpu()
        reference = torch.as_tensor(label).detach().reshape(label.shape[0], -1).long().flatten().cpu()
        if predicted.numel() != reference.numel():
            raise ValueError(f"prediction has {predicted.numel()} voxels, label {reference.numel()}: same patch size?")
        pairs = reference.clamp(0, k - 1) * k + predicted  # rows: reference class, columns: predicted class
        self._confusion += torch.bincount(pairs, minlength=k * k).view(k, k)

    def compute(self) -> float:
        confusion = self._confusion.double()
        tp = confusion.diag()[1:]
        fp = confusion.sum(0)[1:] - tp
        fn = confusion.sum(1)[1:] - tp
        denominator = 2 * tp + fp + fn
        dice = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.full_like(tp, math.nan))
        self.per_class = [float(v) for v in dice]
        defined = dice[~torch.isnan(dice)]
        return float(defined.mean()) if defined.numel() else math.nan


def overlay_grid(
    image: torch.Tensor, label: torch.Tensor, prediction: torch.Tensor, opacity: float = 0.5, min_size: int = 128
) -> np.ndarray:
    """An (rows, cols, 3) uint8 RGB picture of one validation patch.

    Columns: the image (first channel, 1st-99th percentile window), the reference classes over it, the predicted
    classes over it. Rows: the central slices along axes 0, 1 and 2. Small patches are enlarged (nearest) so the
    longest side is at least ``min_size`` pixels; panels are separated by 2 black pixels.

    Args:
        image: (C, D, H, W) patch.
        label: (1, D, H, W) or (D, H, W) reference classes.
        prediction: (1, D, H, W) or (D, H, W) predicted classes.
        opacity: weight of the class colour over the image, in [0, 1].
    """
    volume = image.detach().float().cpu()[0].numpy()
    reference = torch.as_tensor(label).detach().cpu().reshape(volume.shape).long().numpy()
    predicted = torch.as_tensor(prediction).detach().cpu().reshape(volume.shape).long().numpy()
    low, high = np.percentile(volume, [1, 99])
    grey = np.clip((volume - low) / max(high - low, 1e-6), 0, 1)
    palette = np.array([(0, 0, 0), *CLASS_COLOURS], dtype=np.float64) / 255.0

    def coloured(classes: np.ndarray) -> np.ndarray:
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        colours = palette[np.where(classes > 0, (classes - 1) % len(CLASS_COLOURS) + 1, 0)]
        mask = (classes > 0)[..., None]
        return np.where(mask, (1 - opacity) * rgb + opacity * colours, rgb)

    panels = [np.repeat(grey[..., None], 3, axis=-1), coloured(reference), coloured(predicted)]
    return slice_grid([(p * 255).round().astype(np.uint8) for p in panels], min_size=min_size)


class ValidationSummary:
    """Evaluator handler: the pseudo Dice and a few overlay pictures of every validation run, on TensorBoard.

    At the end of each run (the evaluator's ``COMPLETED``), at TensorBoard step ``epoch * iterations_per_epoch``
    (the trainer's iteration; ``ValidationHandler`` runs the evaluator with the trainer's epoch) it writes
    ``validation/pseudo_dice`` (mean) and ``validation/pseudo_dice/<class>``, and ``validation/overlay_<n>``:
    the last sample of each of the first ``num_pictures`` batches (the last position of a batch is the one
    forced onto the foreground), as image / reference / prediction. It also logs one line.

    Args:
        metric: the evaluator's :class:`PseudoDice`.
        labels: {class index: name}, from dataset.json (index 0, the background, is not reported).
        iterations_per_epoch: the trainer's epoch length, to place points at the trainer's iteration.
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``, or None (non-main ranks): log only.
        num_pictures: overlay pictures per run. Defaults to 2.
    """

    def __init__(
        self,
        metric: PseudoDice,
        labels: Mapping,
        iterations_per_epoch: int,
        summary_writer=None,
        num_pictures: int = 2,
    ) -> None:
        self.metric = metric
        self.class_names = [str(labels[k]) for k in sorted(labels, key=int) if int(k) != 0]
        self.iterations_per_epoch = int(iterations_per_epoch)
        self.summary_writer = summary_writer
        self.num_pictures = int(num_pictures)
        self._pictures: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._pictures = []

    def _collect(self, engine: Engine) -> None:
        if len(self._pictures) >= self.num_pictures or self.summary_writer is None:
            return
        logits, label = _prediction_and_label(engine.state.output)
        image = engine.state.output["image"]
        self._pictures.append(overlay_grid(image[-1], label[-1], logits[-1].argmax(0)))

    def _write(self, engine: Engine) -> None:
        mean = engine.state.metrics["pseudo_dice"] if "pseudo_dice" in engine.state.metrics else self.metric.compute()
        per_class = self.metric.per_class
        step = engine.state.epoch * self.iterations_per_epoch
        text = ", ".join(f"{n} {v:.4f}" for n, v in zip(self.class_names, per_class))
        logger.info("validation at epoch %d: pseudo Dice %.4f (%s)", engine.state.epoch, mean, text)
        if self.summary_writer is None:
            return
        self.summary_writer.add_scalar("validation/pseudo_dice", mean, step)
        for name, value in zip(self.class_names, per_class):
            self.summary_writer.add_scalar(f"validation/pseudo_dice/{name}", value, step)
        for n, picture in enumerate(self._pictures):
            self.summary_writer.add_image(f"validation/overlay_{n}", picture, step, dataformats="HWC")
        self.summary_writer.flush()

