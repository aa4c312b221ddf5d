"""Pooling, projection MLPs and the contrastive / multi-task wrappers around the ResEnc U-Net."""

import pytest
import torch

from custom_nets.nets import resenc_unet
from custom_nets.nets.heads import ContrastiveEncoder, GlobalPool, ProjectionHead, SwinUNETRStyleNet, VoCoNet


def test_global_pool_is_the_concatenation_of_per_stage_means():
    torch.manual_seed(0)
    features = [torch.randn(2, c, s, s, s) for c, s in ((3, 8), (5, 4), (7, 2))]
    pooled = GlobalPool((3, 5, 7))(features)
    expected = torch.stack(
        [torch.tensor([float(f[b, c].sum()) / f[b, c].numel() for f in features for c in range(f.shape[1])]) for b in range(2)]
    )
    torch.testing.assert_close(pooled, expected)
    bottleneck = GlobalPool((3, 5, 7), stages=(-1,))
    assert bottleneck.out_features == 7
    torch.testing.assert_close(bottleneck(features), features[2].mean(dim=(2, 3, 4)))
    with pytest.raises(ValueError, match="stages"):
        GlobalPool((3, 5), stages=(2,))


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_projection_head_layers(norm):
    head = ProjectionHead(6, 10, 4, num_layers=3, norm=norm)
    assert [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)] == [10, 10, 4]
    assert head(torch.randn(5, 6)).shape == (5, 4)
    with pytest.raises(ValueError, match="norm"):
        ProjectionHead(6, 10, 4, norm="group")


@pytest.mark.parametrize("wrapper", [ContrastiveEncoder, VoCoNet])
def test_contrastive_wrappers_read_widths_from_the_encoder_and_train_only_it(wrapper):
    backbone = resenc_unet("tiny", in_channels=2, features=(3, 5, 6, 9))
    net = wrapper(backbone, projection_dim=7, hidden_dim=11)
    assert net.pool.out_features == 3 + 5 + 6 + 9
    out = net(torch.randn(4, 2, 16, 16, 16))
    assert out.shape == (4, 7) and wrapper.decoder_pretrained is False
    out.square().sum().backward()
    assert backbone.encoder.stem.convs[0].conv.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in backbone.decoder.stages.parameters())
    assert all(p.requires_grad for p in backbone.encoder.parameters())


def test_swinunetr_style_net_outputs_and_checks():
    backbone = resenc_unet("tiny", in_channels=1, num_classes=1)
    net = SwinUNETRStyleNet(backbone, projection_dim=6)
    out = net(torch.randn(2, 1, 16, 16, 16))
    assert out["reconstruction"].shape == (2, 1, 16, 16, 16)
    assert out["rotation"].shape == (2, 4) and out["embedding"].shape == (2, 6)
    assert net.rotation_head.in_features == backbone.encoder.feature_channels[-1]
    assert SwinUNETRStyleNet.decoder_pretrained is True
    assert backbone.decoder.seg_layers[-1].weight.requires_grad
    assert not any(p.requires_grad for p in backbone.decoder.seg_layers[0].parameters())
    with pytest.raises(ValueError, match="num_classes"):
        SwinUNETRStyleNet(resenc_unet("tiny", in_channels=1, num_classes=3))
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 12, 16, 16))
