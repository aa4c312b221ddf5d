"""Volume Fusion's Dice + CE against a slow per-sample, per-class loop and hand-computed values."""

import math

import pytest
import torch

from custom_nets.losses.volume_fusion import VolumeFusionLoss


def _slow(logits: torch.Tensor, label: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    batch, classes = logits.shape[:2]
    dice_terms, ce_terms = [], []
    for b in range(batch):
        probabilities = torch.softmax(logits[b].double(), dim=0)
        for c in range(classes):
            p, g = probabilities[c], (label[b, 0] == c).double()
            dice_terms.append(1 - (2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth))
        for voxel in range(label[b, 0].numel()):
            k = int(label[b, 0].flatten()[voxel])
            ce_terms.append(-torch.log(probabilities.flatten(1)[k, voxel]))
    return torch.stack(dice_terms).mean() + torch.stack(ce_terms).mean()


def test_matches_a_slow_loop_on_random_input():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4, 5, 3)
    label = torch.randint(0, 5, (3, 1, 4, 5, 3))
    loss = VolumeFusionLoss()(logits, {"label": label})
    torch.testing.assert_close(loss.double(), _slow(logits, label), rtol=1e-5, atol=1e-6)


def test_matches_the_slow_loop_with_an_absent_class():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 3, 3, 3)
    label = torch.randint(0, 3, (2, 1, 3, 3, 3))  # classes 3 and 4 absent
    loss = VolumeFusionLoss()(logits, {"label": label})
    torch.testing.assert_close(loss.double(), _slow(logits, label), rtol=1e-5, atol=1e-6)


def test_uniform_logits_give_log_k_plus_dice_by_hand():
    label = torch.tensor([0, 1]).view(1, 1, 1, 1, 2)
    logits = torch.zeros(1, 2, 1, 1, 2)  # p = 1/2 everywhere
    # per class: intersection 1/2, sum p = 1, sum g = 1 -> dice ~ 1/2; CE = log 2
    expected = (1 - 0.5) + math.log(2)
    assert VolumeFusionLoss()(logits, {"label": label}).item() == pytest.approx(expected, rel=1e-4)


def test_perfect_prediction_is_near_zero_and_gradients_flow():
    label = torch.randint(0, 5, (2, 1, 4, 4, 4))
    logits = (torch.nn.functional.one_hot(label[:, 0], 5).permute(0, 4, 1, 2, 3).float() * 40).requires_grad_()
    loss = VolumeFusionLoss()(logits, {"label": label})
    assert loss.item() < 1e-3
    loss.backward()
    assert logits.grad is not None


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="label"):
        VolumeFusionLoss()(torch.randn(1, 5, 4, 4, 4), {"label": torch.zeros(1, 1, 4, 4, 2, dtype=torch.int64)})
