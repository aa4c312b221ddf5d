"""Block masks: exact masked-block counts, per-sample ratio draws, block layout, reproducibility."""

import math

import pytest
import torch

from custom_nets.masking import BlockMaskGenerator, parse_mask_ratio


def _block_view(mask, block):
    b, _, d, h, w = mask.shape
    return mask.view(b, d // block, block, h // block, block, w // block, block)


def test_fixed_ratio_masks_exactly_that_many_blocks_per_sample():
    mask = BlockMaskGenerator(16, 0.75)(4, (160, 160, 160), seed=0)
    assert mask.shape == (4, 1, 160, 160, 160) and mask.dtype == torch.float32
    blocks = _block_view(mask, 16)
    # every block is uniform
    assert torch.equal(blocks.amin(dim=(2, 4, 6)), blocks.amax(dim=(2, 4, 6)))
    grid = blocks.amin(dim=(2, 4, 6))  # (B, 10, 10, 10)
    assert grid.shape == (4, 10, 10, 10)
    assert (grid == 0).sum(dim=(1, 2, 3)).tolist() == [750] * 4  # round(0.75 * 1000)
    # different samples get different layouts
    assert not torch.equal(grid[0], grid[1])


def test_bottleneck_aligned_32_blocks():
    mask = BlockMaskGenerator(32, 0.6)(2, (160, 160, 160), seed=1)
    grid = _block_view(mask, 32).amin(dim=(2, 4, 6))
    assert grid.shape == (2, 5, 5, 5)
    assert (grid == 0).sum(dim=(1, 2, 3)).tolist() == [75, 75]


def test_ratio_range_is_drawn_per_sample():
    gen = BlockMaskGenerator(8, (0.6, 0.9))
    mask = gen(256, (32, 32, 32), seed=2)  # 64 blocks per sample
    ratios = 1 - mask.mean(dim=(1, 2, 3, 4))
    assert ratios.min() >= 0.6 - 1 / 64 and ratios.max() <= 0.9 + 1 / 64
    assert ratios.std() > 0.05  # not one ratio for the whole batch
    assert abs(ratios.mean().item() - 0.75) < 0.02  # U[0.6, 0.9] has mean 0.75, std 0.087; 256 draws


def test_partial_border_blocks_and_anisotropic_patches():
    mask = BlockMaskGenerator(16, 0.5)(1, (40, 24, 16), seed=3)
    assert mask.shape == (1, 1, 40, 24, 16)
    assert BlockMaskGenerator(16).grid_size((40, 24, 16)) == (3, 2, 1)
    # voxels 32..39 along the first axis belong to the third (partial) block: uniform there
    border = mask[0, 0, 32:40, 0:16, :]
    assert border.min() == border.max()


def test_reproducible_by_seed():
    gen = BlockMaskGenerator(16, (0.6, 0.9))
    a, b, c = gen(2, (64, 64, 64), seed=7), gen(2, (64, 64, 64), seed=7), gen(2, (64, 64, 64), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad", [1.0, -0.1, (0.9, 0.6), (0.1, 0.2, 0.3)])
def test_invalid_ratios_are_rejected(bad):
    with pytest.raises(ValueError, match="mask_ratio"):
        parse_mask_ratio(bad)


def test_invalid_block_size_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        BlockMaskGenerator(0)


def test_expected_grid_count():
    assert math.prod(BlockMaskGenerator(16).grid_size((160, 160, 160))) == 1000


@pytest.mark.parametrize("ratio", [0.9, (0.8, 0.95)])
def test_at_least_one_block_stays_visible_on_a_coarse_grid(ratio):
    # 2 blocks per sample: round(0.9 * 2) = 2 would mask the whole patch; one block must stay visible
    generator = BlockMaskGenerator(8, ratio)
    mask = generator(64, (16, 8, 8), seed=4)
    grid = _block_view(mask, 8).amin(dim=(2, 4, 6))  # (B, 2, 1, 1), every block uniform
    assert torch.equal(grid, _block_view(mask, 8).amax(dim=(2, 4, 6)))
    assert (grid == 1).sum(dim=(1, 2, 3)).tolist() == [1] * 64
    assert 0 < grid[:, 0].sum() < 64  # which block stays visible is still random


def test_single_block_grid_is_left_visible():
    mask = BlockMaskGenerator(16, 0.75)(3, (16, 16, 16), seed=0)
    assert mask.min() == 1
