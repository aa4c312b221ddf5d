"""SwinUNETR-style views: rotation labels, cut-out regions, pairing, determinism, and two training steps."""

import pytest
import torch
from pretext_training import two_sgd_steps

from custom_nets.losses.swinunetr_ssl import SwinUNETRSSLLoss
from custom_nets.nets import resenc_unet
from custom_nets.nets.heads import SwinUNETRStyleNet
from custom_nets.nets.pretrained_weights import pretrained_state_dict
from custom_nets.pretext.swinunetr_views import SwinUNETRViews, random_boxes_mask, rotate90
from custom_nets.transfer import load_pretrained


@pytest.mark.parametrize("shape, plane", [((6, 2, 5, 5, 3), (0, 1)), ((6, 1, 4, 3, 4), (0, 2)), ((6, 1, 3, 4, 4), (2, 1)), ((6, 2, 4, 4), (0, 1))])
def test_rotate90_matches_torch_rot90_per_sample(shape, plane):
    image = torch.randn(shape)
    k = torch.tensor([0, 1, 2, 3, -1, 5])
    expected = torch.stack([torch.rot90(image[b], int(k[b]), dims=(1 + plane[0], 1 + plane[1])) for b in range(6)])
    assert torch.equal(rotate90(image, k, plane), expected)
    with pytest.raises(ValueError, match="square plane"):
        rotate90(torch.zeros(1, 1, 4, 5, 4), torch.zeros(1, dtype=torch.long), (0, 1))


def test_rotation_labels_undo_the_rotation_and_rows_i_and_i_plus_b_come_from_sample_i():
    image = torch.randn(3, 1, 16, 16, 8)
    views = SwinUNETRViews()(image, torch.Generator().manual_seed(0))
    assert views["rotation"].dtype == torch.long and set(views["rotation"].tolist()) <= {0, 1, 2, 3}
    restored = rotate90(views["target"], -views["rotation"], (0, 1))
    assert torch.equal(restored, torch.cat([image, image]))
    many = SwinUNETRViews()(torch.randn(40, 1, 4, 4, 4), torch.Generator().manual_seed(1))["rotation"]
    assert set(many.tolist()) == {0, 1, 2, 3}


def test_only_the_cut_out_voxels_differ_from_the_target():
    image = torch.randn(4, 1, 32, 32, 32)
    views = SwinUNETRViews()(image, torch.Generator().manual_seed(2))
    cutout = views["cutout"].bool()
    changed = views["input"] != views["target"]
    assert not (changed & ~cutout).any()  # outside the boxes the input is the target
    assert changed[cutout].float().mean() > 0.99  # inside, noise or another sample's content
    fraction = views["cutout"].mean(dim=(1, 2, 3, 4))
    largest_box = 0.25**3
    assert (fraction <= 2 * (0.3 + largest_box)).all() and (fraction > 0).all()


def test_box_budget_statistics():
    g = torch.Generator().manual_seed(3)
    mask = random_boxes_mask(400, (32, 32, 32), 0.3, (0.05, 0.25), 128, g, torch.device("cpu"))
    fraction = mask.float().mean(dim=(1, 2, 3, 4))
    # Union <= placed box volume < budget + one box <= 0.3 + 0.25^3; budgets ~ U(0, 0.3) have mean 0.15,
    # overlaps between boxes make the union a bit smaller.
    assert fraction.max() <= 0.3 + 0.25**3
    assert 0.10 < fraction.mean() < 0.15
    assert (fraction < 0.03).any() and (fraction > 0.25).any()
    none = random_boxes_mask(5, (16, 16, 16), 0.0, (0.05, 0.25), 8, g, torch.device("cpu"))
    assert not none.any()


def test_views_are_determined_by_the_generator_seed():
    image = torch.randn(2, 1, 16, 16, 16)
    a = SwinUNETRViews()(image, torch.Generator().manual_seed(7))
    b = SwinUNETRViews()(image, torch.Generator().manual_seed(7))
    c = SwinUNETRViews()(image, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["input"], c["input"])


def test_two_training_steps_on_cpu_and_the_weights_load_for_fine_tuning(tmp_path):
    torch.manual_seed(0)
    network = SwinUNETRStyleNet(resenc_unet("tiny", num_classes=1), projection_dim=16)
    pretext, loss_function = SwinUNETRViews(), SwinUNETRSSLLoss()
    image = torch.randn(2, 1, 16, 16, 16)
    backbone = network.backbone
    two_sgd_steps(network, pretext, loss_function, image, trained=[backbone.encoder.stages[-1], backbone.decoder.stages[0]])
    path = tmp_path / "model.pt"
    torch.save(pretrained_state_dict(network), path)
    fine_tune = resenc_unet("tiny", num_classes=3)
    load_pretrained(fine_tune, path, scope="encoder+decoder")
    torch.testing.assert_close(fine_tune.decoder.stages.state_dict(), network.backbone.decoder.stages.state_dict())


def test_two_dimensional_views_work_too():
    image = torch.randn(3, 2, 16, 16)
    views = SwinUNETRViews()(image, torch.Generator().manual_seed(9))
    assert views["input"].shape == (6, 2, 16, 16) and views["cutout"].shape == (6, 1, 16, 16)
    assert torch.equal(rotate90(views["target"], -views["rotation"]), torch.cat([image, image]))
