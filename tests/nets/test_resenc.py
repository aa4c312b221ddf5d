"""The dense ResEnc U-Net against nnU-Net's own implementation (dynamic_network_architectures) as the oracle."""

import pytest
import torch

from custom_nets.nets import PRESETS, ResEncUNet, dna_kwargs, resenc_unet

dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")


def _pair(preset, **kw):
    torch.manual_seed(0)
    ours = resenc_unet(preset, **kw)
    theirs = dna_unet.ResidualEncoderUNet(**dna_kwargs(preset, **kw))
    return ours, theirs


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_state_dict_keys_and_shapes_equal_nnunet(preset):
    ours, theirs = _pair(preset)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_resenc_l_parameter_count_matches_paper():
    ours = resenc_unet("resenc_l")
    n_encoder = sum(p.numel() for p in ours.encoder.parameters())
    n_decoder = sum(p.numel() for name, p in ours.decoder.named_parameters() if not name.startswith("encoder."))
    assert sum(p.numel() for p in ours.parameters()) == 102_348_965  # 102.35 M (1 in / 1 out)
    assert abs(n_encoder / 1e6 - 90.4) < 0.15  # paper: "90.4 M"; exact: 90.30 M
    assert abs(n_decoder / 1e6 - 12.0) < 0.1


@pytest.mark.parametrize("preset,size,deep_supervision", [("tiny", 32, False), ("tiny", 32, True), ("demo", 64, False)])
def test_same_weights_same_output_both_directions(preset, size, deep_supervision):
    ours, theirs = _pair(preset, in_channels=2, num_classes=3, deep_supervision=deep_supervision)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 2, size, size, size)
    with torch.no_grad():
        out_a, out_b = ours(x), theirs(x)
    out_a = out_a if deep_supervision else [out_a]
    out_b = out_b if deep_supervision else [out_b]
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the other way round: nnU-Net weights into ours
    fresh = resenc_unet(preset, in_channels=2, num_classes=3, deep_supervision=deep_supervision)
    fresh.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)


def test_gradients_match_nnunet():
    ours, theirs = _pair("tiny")
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    ours(x).square().mean().backward()
    theirs(x).square().mean().backward()
    ga = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ga[name].grad, p.grad, rtol=1e-5, atol=1e-7)


def test_runs_in_2d():
    net = ResEncUNet(in_channels=1, num_classes=2, features=(4, 8, 8), strides=(1, 2, 2), blocks_per_stage=(1, 1, 1), spatial_dims=2)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)


def test_bad_input_sizes_say_what_to_do():
    net = resenc_unet("tiny")
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 30, 32, 32))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1"):
        net(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="unknown network preset 'resenc_xl'"):
        resenc_unet("resenc_xl")
    with pytest.raises(ValueError, match="one value per stage"):
        ResEncUNet(features=(4, 8), strides=(1, 2, 2), blocks_per_stage=(1, 1))
