"""Periodic validation: nnU-Net's pseudo Dice against hand-computed counts, the overlays, the TensorBoard record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from custom_nets.engine.validation import CLASS_COLOURS, PseudoDice, ValidationSummary, overlay_grid


def _logits(classes: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """(B, K, *spatial) logits whose argmax is ``classes`` (B, *spatial)."""
    return torch.nn.functional.one_hot(classes, num_classes).movedim(-1, 1).float()


def test_counts_are_summed_over_patches_before_the_ratio():
    metric = PseudoDice(num_classes=3)
    metric.reset()
    # patch 1: reference 1 1 2 0, prediction 1 0 2 2 -> class 1: tp 1, fn 1; class 2: tp 1, fp 1
    metric.update((_logits(torch.tensor([[[[1, 0, 2, 2]]]])), torch.tensor([[[[[1, 1, 2, 0]]]]])))
    # patch 2 (a list: deep supervision, full resolution first): reference 1 1 1 1, prediction 1 1 1 0 -> class 1:
    # tp 3, fn 1
    metric.update(([_logits(torch.tensor([[[[1, 1, 1, 0]]]]))], torch.tensor([[[[[1, 1, 1, 1]]]]])))
    mean = metric.compute()
    # class 1: 2 * 4 / (2 * 4 + 0 + 2) = 0.8 (a mean of per-patch Dice would be (2/3 + 6/7) / 2 = 0.76);
    # class 2: 2 * 1 / (2 + 1 + 0) = 2/3
    assert metric.per_class == pytest.approx([0.8, 2 / 3])
    assert mean == pytest.approx((0.8 + 2 / 3) / 2)


def test_class_absent_everywhere_is_nan_and_left_out():
    metric = PseudoDice(num_classes=3)
    metric.reset()
    metric.update((_logits(torch.tensor([[[[1, 0]]]])), torch.tensor([[[[[1, 0]]]]])))
    assert metric.compute() == 1.0 and math.isnan(metric.per_class[1])
    empty = PseudoDice(num_classes=2)
    empty.reset()
    empty.update((_logits(torch.zeros(1, 1, 1, 2, dtype=torch.long), 2), torch.zeros(1, 1, 1, 1, 2)))
    assert math.isnan(empty.compute())


def test_wrong_channel_count_is_named():
    metric = PseudoDice(num_classes=4)
    metric.reset()
    with pytest.raises(ValueError, match="num_classes=4"):
        metric.update((_logits(torch.zeros(1, 1, 1, 2, dtype=torch.long), 3), torch.zeros(1, 1, 1, 1, 2)))


def test_overlay_layout_and_colours():
    image = torch.zeros(2, 8, 8, 8)
    image[0, 4:] = 1.0
    label = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    label[0, :, :, :4] = 1
    prediction = torch.full((8, 8, 8), 2, dtype=torch.long)
    picture = overlay_grid(image, label, prediction, opacity=1.0)
    # 8-voxel slices enlarged 16 x to 128 pixels; 3 columns and 3 rows with 2-pixel gaps
    assert picture.shape == (3 * 128 + 4, 3 * 128 + 4, 3) and picture.dtype == np.uint8
    prediction_panel = picture[:128, 2 * 130:]
    assert (prediction_panel == CLASS_COLOURS[1]).all()  # class 2 everywhere, opaque
    reference_panel = picture[:128, 130:258].reshape(-1, 3)
    colours = {tuple(c) for c in reference_panel}
    assert tuple(CLASS_COLOURS[0]) in colours and len(colours) > 1  # class 1 on half of the slice


class _Writer:
    def __init__(self):
        self.scalars, self.images = {}, {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)

    def add_image(self, tag, picture, step, dataformats):
        self.images[tag] = (picture.shape, step, dataformats)

    def flush(self):
        pass


def test_summary_writes_at_the_trainers_iteration():
    batches = [
        {"image": torch.randn(2, 1, 8, 8, 8), "label": torch.ones(2, 1, 8, 8, 8),
         "pred": _logits(torch.ones(2, 8, 8, 8, dtype=torch.long))},
    ] * 3
    engine = Engine(lambda engine, batch: batch)
    metric = PseudoDice(num_classes=3)
    metric.attach(engine, "pseudo_dice")
    writer = _Writer()
    ValidationSummary(metric, {"0": "background", "1": "lesion", "2": "ventricles"}, iterations_per_epoch=250,
                      summary_writer=writer, num_pictures=2).attach(engine)
    engine.state.epoch = 4  # ValidationHandler runs the evaluator with the trainer's epoch
    engine.run(batches, max_epochs=5)
    assert writer.scalars["validation/pseudo_dice"] == (1.0, 5 * 250)
    assert writer.scalars["validation/pseudo_dice/lesion"] == (1.0, 1250)
    assert math.isnan(writer.scalars["validation/pseudo_dice/ventricles"][0])
    assert sorted(writer.images) == ["validation/overlay_0", "validation/overlay_1"]
