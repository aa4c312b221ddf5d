"""The exported bundle's network (scripts/resenc.py) is the project's ResEncUNet: same keys, shapes, function."""

from __future__ import annotations

import pytest
import torch

from custom_nets.export.bundle_scripts.resenc import ResEncUNet as BundleResEncUNet
from custom_nets.export.inference_config import network_kwargs
from custom_nets.nets import PRESETS, resenc_unet


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_state_dict_keys_and_shapes_equal_the_project_network(preset):
    with torch.device("meta"):  # ResEnc-L without allocating its 100 M parameters
        ours = resenc_unet(preset, in_channels=2, num_classes=4).state_dict()
        bundle = BundleResEncUNet(2, 4, **network_kwargs(preset)).state_dict()
    assert list(bundle) == list(ours)
    assert {k: tuple(v.shape) for k, v in bundle.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_same_output_and_torchscript_equal_eager():
    torch.manual_seed(0)
    reference = resenc_unet("tiny", in_channels=2, num_classes=3).eval()
    network = BundleResEncUNet(2, 3, **network_kwargs("tiny")).eval()
    network.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 2, 32, 24, 16)
    with torch.no_grad():
        expected = reference(x)
        assert torch.equal(network(x), expected)
        assert torch.allclose(torch.jit.script(network)(x), expected, atol=1e-6)


def test_shared_encoder_keys_hold_one_tensor():
    network = BundleResEncUNet(1, 2, **network_kwargs("tiny"))
    state = network.state_dict(keep_vars=True)
    key = "encoder.stem.convs.0.conv.weight"
    assert state[key] is state["decoder." + key] is state["encoder.stem.convs.0.all_modules.0.weight"]


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="one value per stage"):
        BundleResEncUNet(1, 2, features=[4, 8], strides=[1, 2, 2], blocks_per_stage=[1, 1])
    with pytest.raises(ValueError, match="in_channels and num_classes"):
        BundleResEncUNet(0, 2, **network_kwargs("tiny"))
