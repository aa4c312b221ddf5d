"""nnU-Net's He initialisation: the std of every convolution, zero biases, identity residual blocks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from custom_nets.nets import resenc_unet
from custom_nets.nets.initialization import he_init

GAIN = math.sqrt(2.0 / (1.0 + 1e-2**2))  # Kaiming's gain for leaky ReLU with a = 1e-2


def _convs(network):
    return [(n, m) for n, m in network.named_modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]


def test_every_layers_std_is_gain_over_sqrt_fan_in():
    torch.manual_seed(0)
    network = he_init(resenc_unet("demo", in_channels=2, num_classes=3, deep_supervision=True))
    convs = _convs(network)
    assert len(convs) == 40  # stem 1, encoder 2 x 10 blocks + 4 skip projections, decoder 5 x 3
    for name, module in convs:
        w = module.weight
        fan_in = w.shape[1] * w[0, 0].numel()  # PyTorch's fan-in: weight.size(1) x kernel volume
        expected = GAIN / math.sqrt(fan_in)
        tolerance = 5 / math.sqrt(2 * w.numel())  # relative standard error of a sample std, 5 sigma
        assert abs(w.std().item() / expected - 1) < tolerance, name
        assert abs(w.mean().item()) < 5 * expected / math.sqrt(w.numel()), name
        assert module.bias is None or (module.bias == 0).all(), name


@pytest.mark.parametrize(
    "layer, fan_in",
    [(nn.Conv3d(32, 64, 3), 32 * 27), (nn.ConvTranspose3d(64, 32, 2, 2), 32 * 8)],  # transposed: output channels
)
def test_hand_computed_std_of_one_large_layer(layer, fan_in):
    torch.manual_seed(1)
    he_init(layer)
    # 0.0481 for the 3^3 conv from 32 channels, 0.0884 for the 2^3 transposed conv to 32 channels
    assert layer.weight.std().item() == pytest.approx(GAIN / math.sqrt(fan_in), rel=0.02)
    assert (layer.bias == 0).all()


def test_residual_blocks_start_as_identities_and_other_norms_are_untouched():
    network = he_init(resenc_unet("tiny"))
    zeroed, kept = 0, 0
    for name, module in network.named_modules():
        if hasattr(module, "conv2") and hasattr(module, "skip"):
            assert (module.conv2.norm.weight == 0).all() and (module.conv2.norm.bias == 0).all(), name
            zeroed += 1
    for name, param in network.named_parameters():
        if ".norm.weight" in name and ".conv2.norm." not in name:
            assert (param == 1).all(), name
            kept += 1
    assert zeroed == sum((1, 2, 2, 1)) and kept > 0  # one per residual block of the tiny preset
    # with every residual branch at zero, a block only passes its shortcut on
    block = network.encoder.stages[1].blocks[1]
    x = torch.randn(1, 8, 4, 4, 4)
    assert torch.allclose(block(x), nn.functional.leaky_relu(x, 1e-2))


def test_same_draws_as_nnunets_own_init():
    dna = pytest.importorskip("dynamic_network_architectures.initialization.weight_init")
    ours, theirs = resenc_unet("tiny"), resenc_unet("tiny")
    torch.manual_seed(2)
    he_init(ours, zero_residual_norms=False)
    torch.manual_seed(2)
    theirs.apply(dna.InitWeights_He(1e-2))  # nnU-Net applies it module by module, children first
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name


def test_negative_slope_is_checked():
    with pytest.raises(ValueError, match="1e-2"):
        he_init(nn.Conv3d(1, 1, 1), negative_slope=-1.0)
