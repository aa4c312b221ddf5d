"""Our weights as nnssl checkpoints (custom_nets.transfer.nnssl_export) and the preset read from shapes."""

import json

import pytest
import torch
from transfer_cases import ENCODER, ENCODER_PREFIXES, IN_PROJ, STEM, assert_equal, randomise, save, tiny

from custom_nets.nets import resenc_unet
from custom_nets.transfer import encoder_layout, export_nnssl, load_pretrained, nnssl_checkpoint


def test_nnssl_export_round_trip(tmp_path):
    dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from custom_nets.nets import dna_kwargs

    source = randomise(tiny())
    checkpoint = nnssl_checkpoint(source, preset="tiny")
    plan = checkpoint["nnssl_adaptation_plan"]
    json.dumps(plan)  # JSON-friendly, as nnssl stores it beside the weights
    assert plan["architecture_plans"]["arch_class_name"] == "ResidualEncoderUNet"
    assert plan["architecture_plans"]["arch_kwargs"]["features_per_stage"] == [4, 8, 12, 16]
    assert plan["pretrain_num_input_channels"] == 1 and plan["recommended_downstream_patchsize"] == [160, 160, 160]
    assert (plan["key_to_encoder"], plan["key_to_stem"], tuple(plan["keys_to_in_proj"])) == (ENCODER, STEM, IN_PROJ)
    # nnssl users build nnU-Net's network and load the weights strictly
    theirs = dna_unet.ResidualEncoderUNet(**dna_kwargs("tiny"))
    theirs.load_state_dict(checkpoint["network_weights"], strict=True)
    # and the file form, written from our final weights file, reads back as nnssl
    weights = save(source.state_dict(), tmp_path, "model.pt")
    out = export_nnssl(weights, tmp_path / "nnssl" / "checkpoint_final.pth")
    assert torch.load(out, weights_only=True)["nnssl_adaptation_plan"] == plan
    network = tiny(seed=3)
    assert load_pretrained(network, out).source_format == "nnssl"
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    with pytest.raises(ValueError, match="preset 'tiny'.*not preset 'demo'"):
        nnssl_checkpoint(source, preset="demo")


def test_encoder_layout_reads_the_preset_from_shapes():
    assert encoder_layout(tiny().state_dict()) == ((4, 8, 12, 16), (1, 2, 2, 1))
    assert encoder_layout(resenc_unet("demo").state_dict()) == ((4, 8, 16, 32, 64, 64), (1, 1, 2, 2, 2, 2))


def test_preset_names_and_nnssl_architecture_of_a_preset():
    from custom_nets.transfer import describe_encoder, nnssl_arch_kwargs, preset_name

    assert preset_name((4, 8, 12, 16), (1, 2, 2, 1)) == "tiny" and preset_name((4, 8), (1, 1)) is None
    tiny_encoder = ((4, 8, 12, 16), (1, 2, 2, 1))
    assert describe_encoder(*tiny_encoder) == "preset 'tiny' (features (4, 8, 12, 16), blocks (1, 2, 2, 1))"
    assert describe_encoder((4, 8), (1, 1)) == "features (4, 8), blocks (1, 1), which is no preset in PRESETS"
    kwargs = nnssl_arch_kwargs("tiny")
    assert kwargs["features_per_stage"] == [4, 8, 12, 16] and kwargs["n_blocks_per_stage"] == [1, 2, 2, 1]
    assert kwargs["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kwargs["conv_op"] == "torch.nn.modules.conv.Conv3d" and kwargs["kernel_sizes"] == [[3, 3, 3]] * 4
