"""Random boxes on the device: uniform integers, placement inside the patch, rasterisation vs slicing."""

import pytest
import torch

from custom_nets.pretext.boxes import box_mask, draw_boxes, uniform_int


def test_uniform_int_covers_the_inclusive_range_uniformly():
    low, high = torch.full((60000,), 3), torch.full((60000,), 7)
    values = uniform_int(low, high, torch.Generator().manual_seed(0))
    counts = torch.bincount(values, minlength=8)[3:].float() / values.numel()
    assert values.min() == 3 and values.max() == 7
    assert (counts - 0.2).abs().max() < 0.01
    assert torch.equal(uniform_int(torch.tensor([4]), torch.tensor([4]), torch.Generator()), torch.tensor([4]))


def test_boxes_keep_the_margin_when_they_fit_and_stay_inside_otherwise():
    starts, sizes = draw_boxes(3000, 2, (20, 12), [(2, 10), (10, 12)], torch.Generator().manual_seed(1), margin=3)
    ends = starts + sizes
    assert sizes[..., 0].min() == 2 and sizes[..., 0].max() == 10 and sizes[..., 1].min() == 10
    assert starts[..., 0].min() == 3 and ends[..., 0].max() == 17  # axis 0: every box fits with the margin
    assert starts[..., 1].min() >= 0 and ends[..., 1].max() <= 12  # axis 1: too large for it, still inside


def test_box_mask_matches_slicing():
    starts, sizes = draw_boxes(5, 1, (9, 7, 8), [(1, 9), (1, 7), (1, 8)], torch.Generator().manual_seed(2))
    mask = box_mask(starts[:, 0], sizes[:, 0], (9, 7, 8))
    for b in range(5):
        expected = torch.zeros(9, 7, 8, dtype=torch.bool)
        (x, y, z), (sx, sy, sz) = starts[b, 0].tolist(), sizes[b, 0].tolist()
        expected[x : x + sx, y : y + sy, z : z + sz] = True
        assert torch.equal(mask[b, 0], expected)


def test_side_range_outside_the_patch_is_refused():
    with pytest.raises(ValueError, match="clip the side range"):
        draw_boxes(1, 1, (8,), [(4, 9)], torch.Generator())
