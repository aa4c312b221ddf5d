"""Speed options of the model code, each against the eager float32 path on CPU (tiny preset, 32^3).

channels_last_3d, torch.compile, bf16 autocast, the memory-lean fused masked norm and the sync-free mask
generator must not change what is computed; the benchmark (``custom_nets.benchmark``) measures what they buy.
"""

import math

import pytest
import torch

from custom_nets.masking import BlockMaskGenerator
from custom_nets.nets import S3D, resenc_unet
from custom_nets.nets.sparse import InstanceNorm, masked_instance_norm, masked_instance_norm_fused, set_fused_norm

CL = torch.channels_last_3d


def _model(fused_norm=False, seed=0):
    torch.manual_seed(seed)
    return S3D(resenc_unet("tiny"), block_size=8, fused_norm=fused_norm)


def _batch(seed=0, batch_size=1):
    # batch 1 keeps the suite fast; several mask ratios per batch are covered by the norm-level tests
    torch.manual_seed(seed)
    image = torch.randn(batch_size, 1, 32, 32, 32)
    mask = BlockMaskGenerator(8, (0.4, 0.8))(batch_size, (32, 32, 32), seed=seed)
    return image, mask


def _loss_and_grads(model, image, mask):
    """Masked-MSE-like scalar and the gradients of every trainable parameter, by name."""
    out = model(image, mask)
    loss = ((out.float() - image) ** 2 * (1 - mask)).mean()
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params)
    return out, dict(zip(names, grads))


def _assert_grads_close(a, b, rtol, atol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def _norm_inputs(dtype=torch.float32, size=5, seed=0):
    """4 samples: 10 %, 50 % and 100 % visible, and one with no visible voxel at all."""
    torch.manual_seed(seed)
    x = (torch.randn(4, 3, size, size, size) * 2 + 0.7).to(dtype)
    mask = torch.stack([(torch.rand(1, size, size, size) < p).to(dtype) for p in (0.1, 0.5, 1.1, -1.0)])
    weight, bias = torch.randn(3, dtype=dtype), torch.randn(3, dtype=dtype)
    return x, mask, weight, bias


# ---------------- d. memory-lean masked instance norm ----------------


@pytest.mark.parametrize("affine", [True, False])
def test_fused_norm_gradcheck_in_double(affine):
    x, mask, weight, bias = _norm_inputs(torch.float64, size=3)
    x.requires_grad_(True)
    params = (weight.requires_grad_(True), bias.requires_grad_(True)) if affine else ()

    def fn(x, *wb):
        return masked_instance_norm_fused(x, mask, *wb)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_fused_norm_forward_and_gradients_equal_autograd_version(affine):
    x, mask, weight, bias = _norm_inputs(size=6, seed=1)
    grad_out = torch.randn_like(x)
    results = []
    for norm in (masked_instance_norm, masked_instance_norm_fused):
        leaves = [x.clone().requires_grad_(True)]
        if affine:
            leaves += [weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)]
        out = norm(leaves[0], mask, *leaves[1:])
        results.append((out, torch.autograd.grad(out, leaves, grad_out)))
    (out_a, grads_a), (out_f, grads_f) = results
    torch.testing.assert_close(out_f, out_a, rtol=1e-6, atol=1e-6)
    for g_f, g_a in zip(grads_f, grads_a):
        torch.testing.assert_close(g_f, g_a, rtol=1e-4, atol=1e-5)
    # the sample without a visible voxel gives zeros and zero input gradients, not NaN
    assert out_f[3].abs().max() == 0 and grads_f[0][3].abs().max() == 0
    # masked voxels get no gradient
    assert grads_f[0].mul(1 - mask).abs().max() == 0


def test_fused_norm_in_bf16_keeps_dtype_and_float32_statistics():
    x, mask, weight, bias = _norm_inputs(size=8, seed=2)
    xb = x.bfloat16().requires_grad_(True)
    out = masked_instance_norm_fused(xb, mask, weight, bias)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16 and xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out, masked_instance_norm(x.bfloat16(), mask, weight, bias), rtol=2e-2, atol=2e-2)


def test_set_fused_norm_switches_every_norm_and_keeps_the_state_dict():
    plain, fused = _model(), _model(fused_norm=True)
    norms = [m for m in fused.modules() if isinstance(m, InstanceNorm)]
    assert norms and all(m.fused for m in norms)
    assert not any(m.fused for m in plain.modules() if isinstance(m, InstanceNorm))
    assert plain.state_dict().keys() == fused.state_dict().keys()
    assert set_fused_norm(plain, True) == len(norms)
    assert all(m.fused for m in plain.modules() if isinstance(m, InstanceNorm))


def test_s3d_with_fused_norm_matches_the_autograd_norm():
    image, mask = _batch(seed=3, batch_size=2)
    out_a, grads_a = _loss_and_grads(_model(), image, mask)
    out_f, grads_f = _loss_and_grads(_model(fused_norm=True), image, mask)
    torch.testing.assert_close(out_f, out_a, rtol=1e-5, atol=1e-5)
    _assert_grads_close(grads_f, grads_a, rtol=1e-3, atol=1e-5)


# ---------------- a. channels_last_3d ----------------


@pytest.mark.parametrize("fused_norm", [False, True])
def test_s3d_channels_last_matches_contiguous(fused_norm):
    image, mask = _batch(seed=4)
    out_c, grads_c = _loss_and_grads(_model(fused_norm), image, mask)
    model = _model(fused_norm).to(memory_format=CL)
    out_l, grads_l = _loss_and_grads(model, image.to(memory_format=CL), mask.to(memory_format=CL))
    torch.testing.assert_close(out_l, out_c, rtol=1e-4, atol=1e-5)
    _assert_grads_close(grads_l, grads_c, rtol=1e-3, atol=1e-5)


def test_resenc_channels_last_matches_contiguous():
    torch.manual_seed(5)
    net = resenc_unet("tiny")
    image = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = net(image)
        out = net.to(memory_format=CL)(image.to(memory_format=CL))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# ---------------- b. torch.compile ----------------


def _compiled_matches_eager(backend):
    image, mask = _batch(seed=6)
    eager = _model(fused_norm=True)
    compiled_model = _model(fused_norm=True)
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True, dynamic=False)
    out_e, grads_e = _loss_and_grads(eager, image, mask)
    out_c, grads_c = _loss_and_grads(compiled, image, mask)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-4)
    _assert_grads_close({k.removeprefix("_orig_mod."): v for k, v in grads_c.items()}, grads_e, rtol=1e-3, atol=1e-4)


def test_s3d_with_fused_norm_compiles_fullgraph_and_matches_eager():
    _compiled_matches_eager("aot_eager")


@pytest.mark.slow
def test_s3d_inductor_compile_matches_eager():
    # Inductor generates and builds C++ kernels for forward and backward: about a minute on 2 CPU cores.
    _compiled_matches_eager("inductor")


# ---------------- c. bf16 autocast ----------------


@pytest.mark.parametrize("fused_norm", [False, True])
def test_bf16_autocast_reconstruction_is_close_to_fp32_and_ignores_masked_input(fused_norm):
    model = _model(fused_norm)
    image, mask = _batch(seed=7)
    altered = image + (1 - mask) * 100 * torch.randn_like(image)
    with torch.no_grad():
        expected = model(image, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image, mask)
            out_altered = model(altered, mask)
    assert out.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; the error grows through ~20 layers, so compare relative to the scale
    scale = expected.abs().max()
    assert (out.float() - expected).abs().max() < 0.05 * scale
    torch.testing.assert_close(out_altered, out, rtol=0, atol=0)


# ---------------- e. mask generation ----------------


def reference_masks(generator: BlockMaskGenerator, batch_size, spatial_size, seed):
    """The mask generator as it was before the sync-free rewrite (argsort twice, repeat_interleave per axis)."""
    gen = torch.Generator().manual_seed(seed)
    grid = generator.grid_size(spatial_size)
    n_blocks = math.prod(grid)
    ratio = generator.low + (generator.high - generator.low) * torch.rand(batch_size, 1, generator=gen)
    n_masked = torch.round(ratio * n_blocks)
    rank = torch.rand(batch_size, n_blocks, generator=gen).argsort(dim=1).argsort(dim=1)
    visible = (rank >= n_masked).to(torch.float32).view(batch_size, 1, *grid)
    for axis, size in enumerate(spatial_size):
        visible = visible.repeat_interleave(generator.block_size, dim=axis + 2).narrow(axis + 2, 0, size)
    return visible.contiguous()


@pytest.mark.parametrize(
    "block_size,ratio,spatial_size",
    [(16, (0.6, 0.9), (160, 160, 160)), (8, 0.75, (32, 32, 32)), (5, (0.2, 0.5), (12, 17, 9)), (3, 0.5, (7, 10))],
)
def test_mask_generator_draws_the_same_masks_as_before(block_size, ratio, spatial_size):
    generator = BlockMaskGenerator(block_size, ratio)
    for seed in (0, 1, 12345):
        mask = generator(3, spatial_size, seed=seed)
        assert mask.dtype == torch.float32 and mask.is_contiguous()
        assert torch.equal(mask, reference_masks(generator, 3, spatial_size, seed))


def test_mask_generator_fixed_pattern():
    # computed with the implementation before the rewrite: one entry per 2x2 block, 1 = visible
    mask = BlockMaskGenerator(block_size=2, mask_ratio=(0.3, 0.7))(3, (4, 6), seed=7)
    expected = [[[1, 0, 1], [0, 1, 0]], [[1, 1, 1], [0, 0, 1]], [[0, 1, 0], [1, 0, 1]]]
    assert mask[:, 0, ::2, ::2].int().tolist() == expected
    assert torch.equal(mask, mask[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_mask_generation_never_reads_tensor_values_on_the_host():
    # On the meta device tensors have shapes but no values: any .item(), nonzero or Python branch on a value
    # raises, so a pass proves the generator queues its GPU work without waiting for it.
    generator = BlockMaskGenerator(16, (0.6, 0.9))
    n_blocks = math.prod(generator.grid_size((160, 160, 160)))
    ratio = torch.empty(6, 1, device="meta")
    noise = torch.empty(6, n_blocks, device="meta")
    mask = generator.mask_from_noise(ratio, noise, (160, 160, 160))
    assert mask.device.type == "meta" and mask.shape == (6, 1, 160, 160, 160) and mask.dtype == torch.float32
    with pytest.raises(ValueError, match="one number per block"):
        generator.mask_from_noise(ratio, noise[:, :10], (160, 160, 160))
