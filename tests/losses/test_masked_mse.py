"""Masked MSE against hand-computed values."""

import pytest
import torch

from custom_nets.losses import MaskedMSELoss


def test_hand_computed_value():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    target = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 1, 4)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 1, 4)  # voxels 1 and 2 masked
    # ((2 - 0)^2 + (3 - 1)^2) / 2 = 4
    assert MaskedMSELoss()(pred, target, mask).item() == pytest.approx(4.0)
    assert MaskedMSELoss("sum")(pred, target, mask).item() == pytest.approx(8.0)


def test_anonymized_voxels_are_excluded():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    target = torch.zeros(1, 1, 1, 1, 4)
    mask = torch.zeros(1, 1, 1, 1, 4)  # all masked
    anonymized = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 1, 4)
    # only voxels 0 and 1 count: (1 + 4) / 2
    assert MaskedMSELoss()(pred, target, mask, anonymized).item() == pytest.approx(2.5)


def test_batch_mean_over_all_masked_voxels_against_a_loop():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4)
    mask = (torch.rand(3, 1, 4, 4, 4) < 0.3).float()
    errors = [((pred[b, c] - target[b, c]) ** 2)[mask[b, 0] == 0] for b in range(3) for c in range(2)]
    expected = torch.cat(errors).mean()
    torch.testing.assert_close(MaskedMSELoss()(pred, target, mask), expected)


def test_no_masked_voxel_gives_zero_and_a_gradient():
    pred = torch.randn(1, 1, 2, 2, 2, requires_grad=True)
    loss = MaskedMSELoss()(pred, torch.zeros_like(pred), torch.ones(1, 1, 2, 2, 2))
    loss.backward()
    assert loss.item() == 0 and pred.grad is not None


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="differ"):
        MaskedMSELoss()(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 3), torch.zeros(1, 1, 2, 2, 2))
