"""Visible-only instance norm and per-stage masks against slow, obvious reference implementations."""

import pytest
import torch
from torch import nn

from custom_nets.masking import BlockMaskGenerator
from custom_nets.nets import InstanceNorm, masked_instance_norm, stage_masks


def slow_masked_norm(x, mask, weight, bias, eps):
    """Gather visible voxels per (sample, channel) with boolean indexing; population variance."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        visible = mask[b, 0] > 0
        for c in range(x.shape[1]):
            values = x[b, c][visible].double()
            mean, var = values.mean(), values.var(unbiased=False)
            normed = (x[b, c].double() - mean) / torch.sqrt(var + eps) * weight[c] + bias[c]
            out[b, c] = torch.where(visible, normed, torch.zeros_like(normed)).to(x.dtype)
    return out


def test_masked_norm_matches_slow_reference_with_a_ratio_per_sample():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8, 8) * 3 + 1.5
    mask = torch.stack([(torch.rand(1, 8, 8, 8) < p).float() for p in (0.1, 0.5, 0.9)])
    weight, bias = torch.randn(4), torch.randn(4)
    expected = slow_masked_norm(x, mask, weight, bias, 1e-5)
    torch.testing.assert_close(masked_instance_norm(x, mask, weight, bias), expected, rtol=1e-5, atol=1e-5)


def test_masked_norm_ignores_masked_values_and_zeroes_them():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 6, 6)
    mask = (torch.rand(2, 1, 6, 6, 6) < 0.4).float()
    garbage = x + (1 - mask) * 1e3 * torch.randn_like(x)
    a, b = masked_instance_norm(x, mask), masked_instance_norm(garbage, mask)
    torch.testing.assert_close(a, b)
    assert (a * (1 - mask)).abs().max() == 0
    # visible voxels are standardised: mean 0, variance 1 per sample and channel
    n = mask.sum((2, 3, 4))
    mean = a.sum((2, 3, 4)) / n
    var = (a.square()).sum((2, 3, 4)) / n
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)


def test_masked_norm_with_no_visible_voxel_gives_zeros():
    x = torch.randn(1, 2, 4, 4, 4)
    out = masked_instance_norm(x, torch.zeros(1, 1, 4, 4, 4), torch.ones(2), torch.full((2,), 5.0))
    assert torch.isfinite(out).all() and out.abs().max() == 0


def test_masked_norm_bf16_keeps_dtype_and_accuracy():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8, 8)
    mask = (torch.rand(2, 1, 8, 8, 8) < 0.5).float()
    out = masked_instance_norm(x.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), masked_instance_norm(x, mask), atol=3e-2, rtol=2e-2)


def test_instance_norm_without_mask_is_torch_instance_norm():
    torch.manual_seed(3)
    ours, reference = InstanceNorm(5), nn.InstanceNorm3d(5, affine=True)
    with torch.no_grad():
        for p in (*ours.parameters(), *reference.parameters()):
            p.copy_(torch.arange(5.0) * 0.3 + 0.5)
    x = torch.randn(2, 5, 6, 7, 8)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    # with an all-ones mask the visible-only norm is the ordinary one
    torch.testing.assert_close(ours(x, torch.ones(2, 1, 6, 7, 8)), reference(x), rtol=1e-5, atol=1e-5)


def test_stage_masks_subsample_whole_blocks_and_leave_coarse_stages_dense():
    mask = BlockMaskGenerator(block_size=8, mask_ratio=0.5)(2, (32, 32, 32), seed=4)
    masks = stage_masks(mask, reductions=(1, 2, 4, 8, 16), block_size=8)
    assert masks[0] is mask and masks[4] is None
    for r, m in zip((2, 4, 8), masks[1:4]):
        # oracle: a stage voxel is visible iff every full-resolution voxel it covers is visible
        pooled = -torch.nn.functional.max_pool3d(-mask, r)
        assert m.shape == pooled.shape
        assert torch.equal(m, pooled)


@pytest.mark.parametrize("block_size", [4, 16])
def test_stage_masks_dense_when_block_not_a_multiple(block_size):
    mask = torch.ones(1, 1, 16, 16, 16)
    masks = stage_masks(mask, reductions=(1, 2, 4, 8), block_size=block_size)
    assert [m is None for m in masks] == [r > block_size for r in (1, 2, 4, 8)]


def test_activation_dtype_follows_autocast_and_runs_on_meta():
    from custom_nets.nets.sparse import activation_dtype

    x = torch.zeros(1, 1, 2, 2, 2)
    assert activation_dtype(x) == torch.float32 and activation_dtype(x.double()) == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert activation_dtype(x) == torch.bfloat16
        assert activation_dtype(torch.zeros(1, device="meta")) == torch.float32  # no autocast on "meta"


def test_stage_masks_cast_once_and_share_one_storage():
    mask = (torch.rand(2, 1, 16, 16, 16) > 0.5).float()
    masks = stage_masks(mask, reductions=(1, 2, 4, 8, 16), block_size=8, dtype=torch.bfloat16)
    assert masks[-1] is None
    assert all(m.dtype == torch.bfloat16 for m in masks[:-1])
    # views of one cast tensor: casting per stage (or per use) would make a new copy each time
    assert len({m.untyped_storage().data_ptr() for m in masks[:-1]}) == 1
    assert torch.equal(masks[2].float(), mask[:, :, ::4, ::4, ::4])
