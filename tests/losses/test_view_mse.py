"""ViewMSELoss (Models Genesis: every voxel; AMAES: masked voxels) against slow loops and hand values."""

import pytest
import torch

from custom_nets.losses.view_mse import ViewMSELoss


def test_every_voxel_matches_a_slow_loop():
    torch.manual_seed(0)
    outputs, target = torch.randn(2, 3, 4, 3, 5), torch.randn(2, 3, 4, 3, 5)
    total, count = 0.0, 0
    for value, expected in zip(outputs.flatten().tolist(), target.flatten().tolist()):
        total, count = total + (value - expected) ** 2, count + 1
    loss = ViewMSELoss()(outputs, {"target": target})
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_masked_voxels_only_match_a_slow_loop():
    torch.manual_seed(1)
    outputs, target = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4)
    mask = (torch.rand(3, 1, 4, 4, 4) < 0.4).float()  # 1 = visible
    total, count = 0.0, 0
    for b in range(3):
        for c in range(2):
            for index in range(64):
                if mask[b, 0].flatten()[index] == 0:
                    total += float(outputs[b, c].flatten()[index] - target[b, c].flatten()[index]) ** 2
                    count += 1
    loss = ViewMSELoss(mask_key="mask")(outputs, {"target": target, "mask": mask})
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_hand_computed_values():
    outputs = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    target = torch.zeros(1, 1, 1, 1, 4)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 1, 4)
    assert ViewMSELoss()(outputs, {"target": target}).item() == pytest.approx(30 / 4)
    assert ViewMSELoss(mask_key="mask")(outputs, {"target": target, "mask": mask}).item() == pytest.approx(20 / 2)


def test_other_target_key_and_gradient():
    outputs = torch.randn(1, 1, 2, 2, 2, requires_grad=True)
    loss = ViewMSELoss(target_key="original")(outputs, {"original": torch.zeros(1, 1, 2, 2, 2)})
    loss.backward()
    torch.testing.assert_close(outputs.grad, 2 * outputs.detach() / 8)


def test_channel_mismatch_names_the_fix():
    with pytest.raises(ValueError, match="num_classes = in_channels"):
        ViewMSELoss()(torch.randn(1, 2, 2, 2, 2), {"target": torch.randn(1, 1, 2, 2, 2)})
