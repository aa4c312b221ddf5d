"""Volume Fusion: the class map explains the fused intensities, box statistics, determinism, a CPU train loop."""

import pytest
import torch
from pretext_training import two_sgd_steps

from custom_nets.losses.volume_fusion import VolumeFusionLoss
from custom_nets.nets import resenc_unet
from custom_nets.pretext.volume_fusion import VolumeFusion


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_class_map_reproduces_the_fused_intensities_exactly():
    image = torch.randn(3, 2, 20, 24, 16)
    views = VolumeFusion()(image, _generator(0))
    label = views["label"]
    assert label.shape == (3, 1, 20, 24, 16) and label.dtype == torch.int64
    assert label.min() >= 0 and label.max() <= 4
    alpha = label.float() / 4
    expected = alpha * image + (1 - alpha) * image.roll(1, dims=0)
    assert torch.equal(views["input"], expected)
    # independently of the formula: class 0 is the partner, class 4 the sample itself, class 2 their mean
    partner = image.roll(1, dims=0)
    for k, reference in ((0, partner), (4, image), (2, (image + partner) / 2)):
        where = (label == k).expand_as(image)
        assert where.any()
        torch.testing.assert_close(views["input"][where], reference[where])


def test_every_class_appears_and_the_map_is_made_of_boxes():
    transform = VolumeFusion()
    boxes = transform.draw(16, (32, 32, 32), _generator(1))
    label = transform.class_map(boxes, (32, 32, 32))
    assert set(label.unique().tolist()) == {0, 1, 2, 3, 4}
    # slow oracle: paint the active boxes one by one with Python slicing
    for b in range(4):
        slow = torch.zeros(32, 32, 32, dtype=torch.int64)
        for k in range(int(boxes["count"][b])):
            (x, y, z), (sx, sy, sz) = boxes["starts"][b, k].tolist(), boxes["sizes"][b, k].tolist()
            slow[x : x + sx, y : y + sy, z : z + sz] = int(boxes["classes"][b, k])
        assert torch.equal(label[b, 0], slow)


def test_box_counts_and_sizes_follow_the_configured_ranges():
    transform = VolumeFusion()
    boxes = transform.draw(4000, (160, 160, 160), _generator(2))
    count, starts, sizes = boxes["count"], boxes["starts"], boxes["sizes"]
    assert count.min() == 10 and count.max() == 40
    assert abs(count.float().mean().item() - 25.0) < 0.5  # uniform on {10..40}: mean 25, sd 8.9 / sqrt(4000)
    assert sizes.min() == 8 and sizes.max() == 100
    assert abs(sizes.float().mean().item() - 54.0) < 0.5
    assert starts.min() >= 0 and (starts + sizes).max() <= 160
    classes = boxes["classes"]
    assert torch.bincount(classes.flatten(), minlength=5).float().div(classes.numel()).sub(0.2).abs().max() < 0.01


def test_box_sides_are_clipped_to_a_small_patch():
    boxes = VolumeFusion().draw(500, (32, 12, 8), _generator(3))
    sizes, starts = boxes["sizes"], boxes["starts"]
    assert sizes[..., 0].max() == 32 and sizes[..., 1].max() == 12 and (sizes[..., 2] == 8).all()
    assert ((starts + sizes) <= torch.tensor([32, 12, 8])).all()


def test_same_generator_seed_gives_the_same_views():
    image = torch.randn(2, 1, 16, 16, 16)
    first, second = VolumeFusion()(image, _generator(5)), VolumeFusion()(image, _generator(5))
    other = VolumeFusion()(image, _generator(6))
    assert torch.equal(first["label"], second["label"]) and torch.equal(first["input"], second["input"])
    assert not torch.equal(first["label"], other["label"])


def test_works_in_2d():
    image = torch.randn(2, 1, 24, 24)
    views = VolumeFusion(box_size=(4, 12))(image, _generator(0))
    alpha = views["label"].float() / 4
    assert torch.equal(views["input"], alpha * image + (1 - alpha) * image.roll(1, 0))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size >= 2"):
        VolumeFusion()(torch.randn(1, 1, 8, 8, 8), _generator(0))
    with pytest.raises(ValueError, match="fusion_levels"):
        VolumeFusion(fusion_levels=0)
    with pytest.raises(ValueError, match="num_boxes"):
        VolumeFusion(num_boxes=(5, 2))


def test_two_training_steps_on_cpu_reduce_nothing_to_nan_and_reach_the_encoder():
    torch.manual_seed(0)
    transform = VolumeFusion()
    network = resenc_unet("tiny", in_channels=1, num_classes=transform.num_classes)
    loss_function = VolumeFusionLoss()
    image = torch.randn(2, 1, 32, 32, 32)
    outputs = two_sgd_steps(network, transform, loss_function, image, trained=[network.encoder.stem])
    assert all(out.shape == (2, 5, 32, 32, 32) for out in outputs)
