"""VoCo crops: overlap labels against voxel counting, crop contents, determinism, and two training steps."""

import pytest
import torch
from pretext_training import two_sgd_steps

from custom_nets.losses.voco import VoCoLoss
from custom_nets.nets import resenc_unet
from custom_nets.nets.heads import VoCoNet
from custom_nets.nets.pretrained_weights import pretrained_state_dict
from custom_nets.pretext.voco_crops import VoCoCrops, crop_boxes
from custom_nets.transfer import load_pretrained


def base_index_volume(grid, crop):
    """Every voxel of the grid area labelled with the index of its base crop (x-major)."""
    axes = [torch.arange(g * s) // s for g, s in zip(grid, crop)]
    coords = torch.meshgrid(*axes, indexing="ij")
    index = torch.zeros_like(coords[0])
    for c, g in zip(coords, grid):
        index = index * g + c
    return index


@pytest.mark.parametrize("grid, crop", [((2, 2, 1), (16, 16, 16)), ((3, 2, 2), (4, 6, 5)), ((4, 4, 1), (8, 8, 8)), ((2, 3), (6, 4))])
def test_overlap_labels_sum_to_one_and_match_voxel_counting(grid, crop):
    transform = VoCoCrops(grid, crop, num_crops=5)
    image = torch.randn(3, 1, *transform.patch_size)
    views = transform(image, torch.Generator().manual_seed(0))
    overlaps, starts = views["overlaps"], views["crop_starts"]
    k = transform.num_bases
    assert overlaps.shape == (3, 5, k)
    torch.testing.assert_close(overlaps.sum(-1), torch.ones(3, 5))
    labels = base_index_volume(grid, crop)
    for b in range(3):
        for j in range(5):
            corner = starts[b, j].tolist()
            window = labels[tuple(slice(c, c + s) for c, s in zip(corner, crop))]
            counts = torch.bincount(window.flatten(), minlength=k).float() / window.numel()
            torch.testing.assert_close(overlaps[b, j], counts)


def test_crops_hold_the_image_content_in_the_documented_layout():
    transform = VoCoCrops((2, 2, 1), (8, 8, 8), num_crops=3)
    image = torch.randn(2, 2, 16, 16, 8)
    views = transform(image, torch.Generator().manual_seed(1))
    crops = views["input"]
    assert crops.shape == (2 * (4 + 3), 2, 8, 8, 8)
    for b in range(2):
        for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            assert torch.equal(crops[b * 4 + k], image[b, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8, :])
        for n in range(3):
            x, y, z = views["crop_starts"][b, n].tolist()
            assert torch.equal(crops[8 + b * 3 + n], image[b, :, x : x + 8, y : y + 8, z : z + 8])
    assert (views["crop_starts"] >= 0).all() and (views["crop_starts"][..., :2] <= 8).all()
    assert (views["crop_starts"][..., 2] == 0).all()


def test_random_crops_cover_the_grid_positions_and_are_seeded():
    transform = VoCoCrops((2, 2, 1), (4, 4, 4), num_crops=4)
    image = torch.randn(50, 1, 8, 8, 4)
    a = transform(image, torch.Generator().manual_seed(3))
    b = transform(image, torch.Generator().manual_seed(3))
    c = transform(image, torch.Generator().manual_seed(4))
    assert torch.equal(a["input"], b["input"]) and not torch.equal(a["crop_starts"], c["crop_starts"])
    corners = a["crop_starts"][..., :2].flatten(0, 1)
    assert set(corners[:, 0].tolist()) == set(range(5)) and set(corners[:, 1].tolist()) == set(range(5))


def test_wrong_patch_and_box_arguments_are_reported():
    with pytest.raises(ValueError, match=r"set patch_size to \[32, 32, 16\]"):
        VoCoCrops((2, 2, 1), (16, 16, 16))(torch.zeros(1, 1, 32, 32, 32), torch.Generator())
    with pytest.raises(ValueError, match="starts"):
        crop_boxes(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long), (2, 2, 2))


def test_two_training_steps_on_cpu_and_the_weights_load_for_fine_tuning(tmp_path):
    torch.manual_seed(0)
    network = VoCoNet(resenc_unet("tiny"), projection_dim=32, hidden_dim=32)
    pretext, loss_function = VoCoCrops((2, 2, 1), (16, 16, 16), num_crops=4), VoCoLoss()
    image = torch.randn(2, 1, 32, 32, 16)
    outputs = two_sgd_steps(network, pretext, loss_function, image, trained=[network.backbone.encoder.stages[-1]])
    assert all(out.shape == (2 * (4 + 4), 32) for out in outputs)
    path = tmp_path / "model.pt"
    torch.save(pretrained_state_dict(network), path)
    fine_tune = resenc_unet("tiny", num_classes=2)
    load_pretrained(fine_tune, path, scope="encoder")
    torch.testing.assert_close(fine_tune.encoder.state_dict(), network.backbone.encoder.state_dict())
