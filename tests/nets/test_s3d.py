"""The S3D sparse masked autoencoder: invariance to masked content, sparsity, ablation switches, dense export."""

import itertools

import pytest
import torch

from custom_nets.masking import BlockMaskGenerator
from custom_nets.nets import S3D, dense_state_dict, resenc_unet

SWITCHES = list(itertools.product([True, False], repeat=3))


def _model(block_size=8, sparse=True, mask_token=True, densify=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    return S3D(
        resenc_unet("tiny"), block_size=block_size, sparse=sparse, mask_token=mask_token, densify=densify, **kwargs
    )


def _batch(seed=0, ratio=(0.4, 0.8), block_size=8):
    torch.manual_seed(seed)
    image = torch.randn(2, 1, 32, 32, 32)
    mask = BlockMaskGenerator(block_size, ratio)(2, (32, 32, 32), seed=seed)
    return image, mask


@pytest.mark.parametrize("sparse,mask_token,densify", SWITCHES)
def test_reconstruction_does_not_depend_on_masked_input(sparse, mask_token, densify):
    model = _model(sparse=sparse, mask_token=mask_token, densify=densify)
    image, mask = _batch()
    altered = image + (1 - mask) * 100 * torch.randn_like(image)
    with torch.no_grad():
        torch.testing.assert_close(model(image, mask), model(altered, mask), rtol=0, atol=0)


def test_no_gradient_reaches_masked_input_voxels():
    model = _model()
    image, mask = _batch(seed=1)
    image.requires_grad_(True)
    model(image, mask).square().mean().backward()
    assert image.grad[mask.expand_as(image) == 0].abs().max() == 0
    assert image.grad[mask.expand_as(image) == 1].abs().max() > 0


@pytest.mark.parametrize("block_size", [4, 8])
def test_sparse_encoder_keeps_masked_regions_exactly_zero(block_size):
    model = _model(block_size=block_size)
    image, mask = _batch(seed=2, block_size=block_size)
    with torch.no_grad():
        features, masks = model.forward_encoder(image, mask)
    reductions = model.backbone.encoder.reductions
    for feature, stage_mask, r in zip(features, masks, reductions):
        if r <= block_size:
            assert stage_mask is not None
            assert feature.mul(1 - stage_mask).abs().max() == 0
            assert feature.mul(stage_mask).abs().max() > 0
        else:
            assert stage_mask is None  # coarser than the mask grid: dense, no token


def test_dense_encoder_leaks_into_masked_regions_when_sparse_is_off():
    model = _model(sparse=False)
    image, mask = _batch(seed=2)
    with torch.no_grad():
        features, masks = model.forward_encoder(image, mask)
    assert features[0].mul(1 - masks[0]).abs().max() > 0


def test_all_visible_without_densify_equals_the_dense_backbone():
    model = _model(densify=False)
    image, _ = _batch(seed=3)
    ones = torch.ones(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(image, ones), model.backbone(image), rtol=1e-4, atol=1e-5)


def test_ablation_switches_change_the_parameters():
    full = _model(block_size=4)  # stages at 1/1, 1/2, 1/4 are masked; 1/8 is dense
    assert sorted(full.mask_tokens) == ["0", "1", "2"]
    assert sorted(full.densify_convs) == ["1", "2", "3"]  # every stage but full resolution, bottleneck included
    assert sorted(full.densify_norms) == ["1", "2", "3"]
    assert full.mask_tokens["1"].shape == (1, 8, 1, 1, 1)
    assert 0 < full.mask_tokens["1"].abs().max() <= 0.04  # trunc-normal, std 0.02, cut at 2 std
    masked_only = _model(block_size=4, densify_coarse_stages=False)
    assert sorted(masked_only.densify_convs) == ["1", "2"] and sorted(masked_only.mask_tokens) == ["0", "1", "2"]
    no_token = _model(block_size=4, mask_token=False)
    no_densify = _model(block_size=4, densify=False)
    assert len(no_token.mask_tokens) == 0 and len(no_token.densify_convs) == 3
    assert len(no_densify.mask_tokens) == 3 and len(no_densify.densify_convs) == 0
    assert len(_model(block_size=4, densify=False, densify_coarse_stages=True).densify_convs) == 0


def _previous_rule(model, image, mask):
    """Oracle: S3D's forward before coarse stages were densified. Stages without a mask (coarser than the mask
    blocks) went to the decoder untouched; masked stages got norm, token and conv as they still do."""
    features, masks = model.forward_encoder(image, mask)
    dense = []
    for i, (feature, stage_mask) in enumerate(zip(features, masks)):
        if stage_mask is not None:
            key = str(i)
            if key in model.densify_convs:
                feature = model.densify_norms[key](feature, stage_mask)
            if key in model.mask_tokens:
                feature = torch.where(stage_mask > 0, feature, model.mask_tokens[key].to(feature.dtype))
            if key in model.densify_convs:
                feature = model.densify_convs[key](feature)
        dense.append(feature)
    return model.backbone.decoder(dense)


def test_densify_coarse_stages_off_is_the_previous_rule():
    # 4^3 blocks on the tiny preset: stages 1/1, 1/2, 1/4 are masked, the 1/8 bottleneck is coarser
    off, on = _model(block_size=4, densify_coarse_stages=False), _model(block_size=4, seed=1)
    missing, unexpected = on.load_state_dict(off.state_dict(), strict=False)
    # the only difference in parameters is the bottleneck's densify conv; everything else is now shared
    assert unexpected == [] and sorted(missing) == ["densify_convs.3.bias", "densify_convs.3.weight"]
    image, mask = _batch(seed=6, block_size=4)
    with torch.no_grad():
        expected = _previous_rule(on, image, mask)
        torch.testing.assert_close(off(image, mask), expected, rtol=0, atol=0)
        assert (on(image, mask) - expected).abs().max() > 1e-3  # the switch changes the function


def test_coarse_stage_densify_normalises_the_whole_feature_and_has_no_token():
    model = _model(block_size=4)
    image, mask = _batch(seed=7, block_size=4)
    with torch.no_grad():
        features, masks = model.forward_encoder(image, mask)
        assert masks[3] is None  # 1/8 is coarser than the 4^3 blocks: all visible
        out = model.densify_stage(3, features[3], masks[3])
        conv = model.densify_convs["3"]
        expected = conv(torch.nn.functional.instance_norm(features[3], eps=1e-5))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_bottleneck_densify_conv_receives_a_gradient():
    model = _model(block_size=4)  # the tiny preset's 1/8 bottleneck is coarser than 4^3 blocks
    image, mask = _batch(seed=8, block_size=4)
    model(image, mask).square().mean().backward()
    conv = model.densify_convs[str(len(model.backbone.encoder.reductions) - 1)]
    assert conv.weight.grad is not None and conv.weight.grad.abs().max() > 0
    assert conv.bias.grad.abs().max() > 0


def test_mask_token_fills_masked_positions():
    model = _model(densify=False)
    image, mask = _batch(seed=4)
    with torch.no_grad():
        features, masks = model.forward_encoder(image, mask)
        dense = model.densify_stage(1, features[1], masks[1])
    token = model.mask_tokens["1"].view(-1)
    masked = (masks[1][0, 0] == 0).nonzero()[0].tolist()
    torch.testing.assert_close(dense[0, :, masked[0], masked[1], masked[2]], token)


def test_dense_export_loads_strictly_into_dense_networks():
    model = _model()
    model.mask_tokens["0"].data.fill_(3.0)
    state = dense_state_dict(model)
    assert not any("mask_token" in k or "densify" in k for k in state)
    dense = resenc_unet("tiny")
    dense.load_state_dict(state, strict=True)
    torch.testing.assert_close(dense.state_dict()["encoder.stem.convs.0.conv.weight"], model.backbone.encoder.stem.convs[0].conv.weight)
    # from a DDP-style checkpoint too
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    assert dense_state_dict(prefixed).keys() == state.keys()
    dna = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from custom_nets.nets import dna_kwargs

    dna.ResidualEncoderUNet(**dna_kwargs("tiny")).load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match="not an S3D state dict"):
        dense_state_dict(dense.state_dict())


def test_unused_deep_supervision_heads_are_frozen_for_ddp():
    model = _model()
    heads = list(model.backbone.decoder.seg_layers)
    assert all(not p.requires_grad for h in heads[:-1] for p in h.parameters())
    image, mask = _batch()
    model(image, mask).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bad_mask_shape_is_rejected():
    model = _model()
    image, mask = _batch()
    with pytest.raises(ValueError, match="mask must have shape"):
        model(image, mask[:, :, :16])
    with pytest.raises(ValueError, match="ResEncUNet backbone"):
        S3D(torch.nn.Conv3d(1, 1, 1))


def test_compiles_without_graph_breaks_and_matches_eager():
    model = _model()
    image, mask = _batch(seed=5)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    out = compiled(image, mask)
    out.square().mean().backward()
    with torch.no_grad():
        torch.testing.assert_close(out.detach(), model(image, mask), rtol=1e-5, atol=1e-5)
