"""SimCLR views: overlap guarantee, pairing, augmentation statistics, determinism, and two training steps."""

import itertools

import pytest
import torch
from pretext_training import two_sgd_steps

from custom_nets.losses.ntxent import NTXentLoss
from custom_nets.nets import resenc_unet
from custom_nets.nets.heads import ContrastiveEncoder
from custom_nets.nets.pretrained_weights import pretrained_state_dict
from custom_nets.pretext.simclr_views import SimCLRViews, crop_overlap, overlapping_crop_starts
from custom_nets.transfer import load_pretrained


def voxel_overlap(first, second, size):
    """Shared voxels of two boxes counted one by one, as a fraction of the box volume."""
    boxes = [set(itertools.product(*[range(s, s + e) for s, e in zip(corner, size)])) for corner in (first, second)]
    return len(boxes[0] & boxes[1]) / len(boxes[0])


@pytest.mark.parametrize(
    "patch, crop, min_overlap, mean_below",
    [((32, 32, 32), (16, 16, 16), 0.5, 0.9), ((32, 32, 32), (24, 24, 24), 0.5, 0.9),
     ((192, 192, 64), (64, 64, 64), 0.5, 0.9), ((40, 17, 30), (9, 17, 5), 0.7, 1.0), ((32, 32), (16, 16), 0.5, 0.9)],
)
def test_every_pair_overlaps_at_least_the_minimum(patch, crop, min_overlap, mean_below):
    g = torch.Generator().manual_seed(0)
    first, second = overlapping_crop_starts(5000, patch, crop, min_overlap, g, torch.device("cpu"))
    span = torch.tensor(patch) - torch.tensor(crop)
    assert (first >= 0).all() and (second >= 0).all() and (first <= span).all() and (second <= span).all()
    overlap = crop_overlap(first, second, crop)
    assert overlap.min() >= min_overlap
    assert overlap.mean() < mean_below  # the crops really move where the patch leaves room
    if mean_below < 1:
        assert overlap.min() < min_overlap + 0.05  # and the bound is nearly reached
    for i in range(5):  # the closed form agrees with counting voxels
        assert overlap[i].item() == pytest.approx(voxel_overlap(first[i].tolist(), second[i].tolist(), crop))


def test_rows_i_and_i_plus_b_are_crops_of_sample_i():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(3, 2, 32, 32, 32)
    views = SimCLRViews((16, 16, 16), augment=False)(image, g)
    assert views["input"].shape == (6, 2, 16, 16, 16)
    for row in range(6):
        x, y, z = views["crop_starts"][row].tolist()
        expected = image[row % 3, :, x : x + 16, y : y + 16, z : z + 16]
        assert torch.equal(views["input"][row], expected)
    assert (crop_overlap(views["crop_starts"][:3], views["crop_starts"][3:], (16, 16, 16)) >= 0.5).all()


def test_two_dimensional_views_work_too():
    views = SimCLRViews((8, 8))(torch.randn(3, 1, 16, 16), torch.Generator().manual_seed(4))
    assert views["input"].shape == (6, 1, 8, 8)
    assert (crop_overlap(views["crop_starts"][:3], views["crop_starts"][3:], (8, 8)) >= 0.5).all()


def test_views_are_determined_by_the_generator_seed():
    image = torch.randn(2, 1, 32, 32, 32)
    a = SimCLRViews((16, 16, 16))(image, torch.Generator().manual_seed(5))["input"]
    b = SimCLRViews((16, 16, 16))(image, torch.Generator().manual_seed(5))["input"]
    c = SimCLRViews((16, 16, 16))(image, torch.Generator().manual_seed(6))["input"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gamma_keeps_mean_and_std_and_augmentations_keep_the_crop_content_plausible():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8, 8)
    g = torch.Generator().manual_seed(2)
    for invert in (False, True):
        y = SimCLRViews._gamma(x, invert, g)
        torch.testing.assert_close(y.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.std(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(y, x)
    augmented = SimCLRViews((8, 8, 8)).augment_views(x, g)
    assert augmented.shape == x.shape and torch.isfinite(augmented).all()
    changed = (augmented - x).flatten(1).abs().amax(dim=1) > 1e-6
    assert 0.5 < changed.float().mean() < 1.0  # flips / rotations / intensities hit most crops, by chance not all


def test_too_small_patch_is_reported():
    with pytest.raises(ValueError, match="patch_size"):
        SimCLRViews((64, 64, 64))(torch.zeros(1, 1, 32, 32, 32), torch.Generator())
    with pytest.raises(ValueError, match="min_overlap"):
        SimCLRViews(min_overlap=0.0)


def test_two_training_steps_on_cpu_and_the_weights_load_for_fine_tuning(tmp_path):
    torch.manual_seed(0)
    network = ContrastiveEncoder(resenc_unet("tiny"), projection_dim=16)
    pretext, loss_function = SimCLRViews((16, 16, 16)), NTXentLoss(0.5)
    image = torch.randn(4, 1, 32, 32, 32)
    two_sgd_steps(network, pretext, loss_function, image, trained=[network.backbone.encoder.stages[-1]])
    path = tmp_path / "model.pt"
    torch.save(pretrained_state_dict(network), path)
    fine_tune = resenc_unet("tiny", num_classes=3)
    load_pretrained(fine_tune, path, scope="encoder")
    torch.testing.assert_close(fine_tune.encoder.state_dict(), network.backbone.encoder.state_dict())
    with pytest.raises(ValueError, match="decoder"):
        load_pretrained(resenc_unet("tiny", num_classes=3), path, scope="encoder+decoder")
