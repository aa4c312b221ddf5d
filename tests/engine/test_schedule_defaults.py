"""What a fine-tuning run gets unless set: the peak learning rate and the schedule follow the weights."""

from __future__ import annotations

import pytest

from custom_nets.engine import default_peak_lr, default_schedule


@pytest.mark.parametrize(
    "checkpoint, peak_lr, schedule",
    [
        ("runs/pretrain/models/model.pt", 1e-3, "sawtooth"),  # paper: 1e-3 from pre-trained weights
        (None, 1e-2, "default"),  # nnU-Net from scratch
        ("", 1e-2, "default"),  # an empty --pretrained_checkpoint is no checkpoint
    ],
)
def test_defaults_follow_the_weights(checkpoint, peak_lr, schedule):
    assert default_peak_lr(checkpoint) == peak_lr
    assert default_schedule(checkpoint) == schedule
