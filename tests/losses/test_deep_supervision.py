"""nnU-Net's deep-supervision weights against hand-computed values, and inside MONAI's DeepSupervisionLoss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DeepSupervisionLoss
from torch import nn

from custom_nets.losses import deep_supervision_weights


def test_five_outputs_give_nnunets_weights():
    # 1, 1/2, 1/4, 1/8 and 0 for the coarsest, divided by their sum 15/8
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(5) == pytest.approx([0.5333, 0.2667, 0.1333, 0.0667, 0.0], abs=1e-4)


@pytest.mark.parametrize("n, expected", [(1, [1.0]), (2, [1.0, 0.0]), (3, [2 / 3, 1 / 3, 0.0])])
def test_few_outputs(n, expected):
    assert deep_supervision_weights(n) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_bad_counts_name_the_fix(bad):
    with pytest.raises(ValueError, match="seg_layers"):
        deep_supervision_weights(bad)


class _MeanOfPrediction(nn.Module):
    """A stand-in loss whose value at each level is the mean of that level's prediction."""

    def forward(self, prediction, target):
        return prediction.mean()


def test_monai_loss_with_these_weights_sums_to_one_loss_scale():
    outputs = [torch.full((1, 2, 16 // 2**i, 16 // 2**i, 16 // 2**i), float(i + 1)) for i in range(5)]
    target = torch.zeros(1, 1, 16, 16, 16)
    loss = DeepSupervisionLoss(_MeanOfPrediction(), weights=deep_supervision_weights(5))
    # (8 * 1 + 4 * 2 + 2 * 3 + 1 * 4 + 0 * 5) / 15 = 26 / 15
    assert loss(outputs, target).item() == pytest.approx(26 / 15)
    # MONAI's default "exp" mode: 1 * 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4 + 0.0625 * 5 = 3.5625
    assert DeepSupervisionLoss(_MeanOfPrediction())(outputs, target).item() == pytest.approx(3.5625)
