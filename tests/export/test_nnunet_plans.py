"""Our pre-trained weights into nnU-Net v2: the written plans configuration builds our network in nnU-Net, and the
written weights pass nnU-Net's load_pretrained_weights (the real one when nnunetv2 is installed, a slow
re-statement of its rules always) for 1 and 2 input channels."""

from __future__ import annotations

import json

import pytest
import torch

from custom_nets.export.nnunet_plans import S3D_CONFIGURATION, write_nnunet_plans
from custom_nets.nets import resenc_unet
from nnunet_helpers import (
    DATASET,
    network_from_plans,
    plain_plans,
    resolve,
    restated_load_pretrained_weights,
    write_dataset,
)

dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")

STEM = ("encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pre-trained tiny ResEnc U-Net (1 channel, as pre-training writes it) with arbitrary weights."""
    torch.manual_seed(0)
    network = resenc_unet("tiny")
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("pretrain") / "model.pt"
    torch.save(network.state_dict(), path)
    return path, network.state_dict()


def _written(tmp_path, pretrained_path, channels: dict):
    plans_file = write_dataset(tmp_path / DATASET, channels=channels)
    result = write_nnunet_plans(plans_file, pretrained_path, patch_size=32)
    plans = json.loads(open(result["plans"]).read())
    return result, plans


@pytest.mark.parametrize("channels", [{"0": "T1"}, {"0": "T1", "1": "FLAIR"}])
def test_plans_build_a_network_whose_state_dict_matches_the_weights(tmp_path, pretrained, channels):
    result, plans = _written(tmp_path, pretrained[0], channels)
    config = resolve(plans, S3D_CONFIGURATION)
    network = network_from_plans(config["architecture"], len(channels), 3)
    weights = torch.load(result["weights"], weights_only=True)["network_weights"]
    expected = {k: v.shape for k, v in network.state_dict().items() if ".seg_layers." not in k}
    assert list(weights) == list(expected)  # key for key, in nnU-Net's order
    assert {k: v.shape for k, v in weights.items()} == expected
    assert isinstance(network, dna_unet.ResidualEncoderUNet)


def test_plans_entry_is_the_pretraining_layout_and_inherits_the_rest(tmp_path, pretrained):
    result, plans = _written(tmp_path, pretrained[0], {"0": "T1", "1": "FLAIR"})
    original = plain_plans()
    assert result["plans"] == str(tmp_path / DATASET / "nnUNetPlans_s3d.json")
    assert result["weights"] == str(tmp_path / DATASET / "nnUNetPlans_s3d__3d_fullres_s3d.pth")
    assert plans["plans_name"] == "nnUNetPlans_s3d"
    assert {k: v for k, v in plans.items() if k not in ("plans_name", "configurations")} == {
        k: v for k, v in original.items() if k not in ("plans_name", "configurations")
    }
    assert plans["configurations"]["3d_fullres"] == original["configurations"]["3d_fullres"]
    entry = plans["configurations"][S3D_CONFIGURATION]
    assert entry["inherits_from"] == "3d_fullres"
    assert entry["data_identifier"] == "nnUNetPlans_s3d_3d_fullres_s3d"
    assert entry["spacing"] == [1.0, 1.0, 1.0] and entry["patch_size"] == [32, 32, 32] and entry["batch_size"] == 2
    assert entry["median_image_size_in_voxels"] == [100.0, 100.0, 90.0]  # [50, 200, 180] voxels at [2, .5, .5] mm
    kwargs = entry["architecture"]["arch_kwargs"]
    assert kwargs["features_per_stage"] == [4, 8, 12, 16] and kwargs["n_blocks_per_stage"] == [1, 2, 2, 1]
    assert kwargs["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kwargs["kernel_sizes"] == [[3, 3, 3]] * 4 and kwargs["n_conv_per_stage_decoder"] == [1, 1, 1]
    resolved = resolve(plans, S3D_CONFIGURATION)
    assert resolved["normalization_schemes"] == ["ZScoreNormalization"] * 2 and resolved["use_mask_for_norm"] == [True] * 2
    assert result["commands"] == [
        "nnUNetv2_preprocess -d 123 -plans_name nnUNetPlans_s3d -c 3d_fullres_s3d",
        f"nnUNetv2_train 123 3d_fullres_s3d 0 -p nnUNetPlans_s3d -pretrained_weights {result['weights']}",
    ]
    # the dataset's own plans file is left as it was
    assert json.loads((tmp_path / DATASET / "nnUNetPlans.json").read_text()) == original


@pytest.mark.parametrize("n_channels", [1, 2])
def test_restated_nnunet_loader_loads_every_tensor(tmp_path, pretrained, n_channels):
    channels = {str(c): f"m{c}" for c in range(n_channels)}
    result, plans = _written(tmp_path, pretrained[0], channels)
    network = network_from_plans(resolve(plans, S3D_CONFIGURATION)["architecture"], n_channels, 3)
    copied = restated_load_pretrained_weights(network, result["weights"])
    source, loaded = pretrained[1], network.state_dict()
    assert copied == sorted(k for k in loaded if ".seg_layers." not in k)
    for key in copied:
        if key.endswith(STEM):  # also under the decoder.encoder.* names of the same tensor
            # kernel replicated over the channels and divided by their number
            expected = source[key].repeat(1, n_channels, 1, 1, 1) / n_channels
        else:
            expected = source[key]
        torch.testing.assert_close(loaded[key], expected, rtol=0, atol=0, msg=key)


def test_raw_checkpoint_fails_nnunet_loader_where_the_user_saw_it(tmp_path, pretrained):
    """The reported problem, restated: our 1-channel weights as they are do not load into a 2-channel network, nor
    into the dataset's own (5-stage, anisotropic) plans."""
    raw = tmp_path / "raw.pth"
    torch.save({"network_weights": pretrained[1]}, raw)
    two_channel = network_from_plans(_tiny_architecture(), 2, 3)
    with pytest.raises(AssertionError, match="encoder.stem.convs.0.conv.weight is not the same"):
        restated_load_pretrained_weights(two_channel, raw)
    default = network_from_plans(plain_plans()["configurations"]["3d_fullres"]["architecture"], 1, 3)
    with pytest.raises(AssertionError, match="missing in the pretrained model weights"):
        restated_load_pretrained_weights(default, raw)


def _tiny_architecture():
    from custom_nets.export.nnunet_plans import architecture_plans

    return architecture_plans("tiny")


@pytest.mark.parametrize("n_channels", [1, 2])
def test_real_nnunet_loader(tmp_path, pretrained, n_channels):
    real = pytest.importorskip("nnunetv2.run.load_pretrained_weights")
    channels = {str(c): f"m{c}" for c in range(n_channels)}
    result, plans = _written(tmp_path, pretrained[0], channels)
    network = network_from_plans(resolve(plans, S3D_CONFIGURATION)["architecture"], n_channels, 3)
    real.load_pretrained_weights(network, result["weights"])
    reference = network_from_plans(resolve(plans, S3D_CONFIGURATION)["architecture"], n_channels, 3)
    restated_load_pretrained_weights(reference, result["weights"])
    ours, theirs = network.state_dict(), reference.state_dict()
    for key in ours:
        if ".seg_layers." not in key:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    raw = tmp_path / "raw.pth"
    torch.save({"network_weights": pretrained[1]}, raw)
    if n_channels == 2:  # the real loader refuses the raw weights where the restatement does
        with pytest.raises(AssertionError, match="not the same"):
            real.load_pretrained_weights(network_from_plans(_tiny_architecture(), 2, 3), raw)


def test_real_nnunet_builds_the_network_from_the_written_plans(tmp_path, pretrained):
    real = pytest.importorskip("nnunetv2.utilities.get_network_from_plans")
    result, plans = _written(tmp_path, pretrained[0], {"0": "T1", "1": "FLAIR"})
    arch = resolve(plans, S3D_CONFIGURATION)["architecture"]
    network = real.get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 2, 3, deep_supervision=True
    )
    weights = torch.load(result["weights"], weights_only=True)["network_weights"]
    expected = {k: v.shape for k, v in network.state_dict().items() if ".seg_layers." not in k}
    assert {k: v.shape for k, v in weights.items()} == expected


def test_encoder_only_checkpoint_gets_a_fresh_decoder(tmp_path, pretrained):
    encoder_only = tmp_path / "encoder.pt"
    torch.save({k: v for k, v in pretrained[1].items() if k.startswith("encoder.")}, encoder_only)
    plans_file = write_dataset(tmp_path / DATASET, channels={"0": "T1"})
    result = write_nnunet_plans(plans_file, encoder_only, patch_size=32)
    network = network_from_plans(_tiny_architecture(), 1, 3)
    n_tensors = len([k for k in network.state_dict() if ".seg_layers." not in k])
    n_encoder = len({v.data_ptr() for k, v in pretrained[1].items() if k.startswith("encoder.")})  # distinct tensors
    assert result["notes"] == [
        f"preset 'tiny', {n_tensors} tensors ({n_encoder} distinct ones pre-trained)",
        "the checkpoint has no pre-trained decoder: the decoder starts from nnU-Net's He initialisation",
    ]
    restated_load_pretrained_weights(network, result["weights"])
    loaded = network.state_dict()
    torch.testing.assert_close(loaded["encoder.stages.1.blocks.0.conv1.conv.weight"],
                               pretrained[1]["encoder.stages.1.blocks.0.conv1.conv.weight"], rtol=0, atol=0)
    # He init: zero biases, so not the pre-trained (random normal) decoder
    assert torch.count_nonzero(loaded["decoder.transpconvs.0.bias"]) == 0


def test_errors_name_the_file_and_the_fix(tmp_path, pretrained):
    folder = tmp_path / DATASET
    plans_file = write_dataset(folder)
    with pytest.raises(ValueError, match="patch_size \\[100, 100, 100\\] is not a multiple of 8.*use e.g. \\[96, 96, 96\\]"):
        write_nnunet_plans(plans_file, pretrained[0], patch_size=100)
    with pytest.raises(ValueError, match="is a folder; pass one of its plans files \\(\\['dataset.json', 'nnUNetPlans.json'\\]\\)"):
        write_nnunet_plans(folder, pretrained[0])
    two_d = plain_plans()
    del two_d["configurations"]["3d_fullres"]
    (folder / "nnUNetPlans.json").write_text(json.dumps(two_d))
    with pytest.raises(ValueError, match="nnUNetPlans.json has no '3d_fullres' configuration \\(configurations: \\['2d'\\]\\)"):
        write_nnunet_plans(plans_file, pretrained[0], patch_size=32)
    write_dataset(folder)
    first = write_nnunet_plans(plans_file, pretrained[0], patch_size=32)
    with pytest.raises(ValueError, match="nnUNetPlans_s3d.json already has a configuration '3d_fullres_s3d'"):
        write_nnunet_plans(first["plans"], pretrained[0], patch_size=32)
    with pytest.raises(ValueError, match="would overwrite"):
        write_nnunet_plans(plans_file, pretrained[0], plans_name="nnUNetPlans")


def test_command_line_prints_the_next_commands(tmp_path, pretrained):
    import subprocess
    import sys

    plans_file = write_dataset(tmp_path / DATASET)
    done = subprocess.run(
        [sys.executable, "-m", "custom_nets", "nnunet_plans", str(plans_file), str(pretrained[0]), "--patch_size", "32"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    weights = tmp_path / DATASET / "nnUNetPlans_s3d__3d_fullres_s3d.pth"
    assert done.stdout.strip().splitlines()[-2:] == [
        "  nnUNetv2_preprocess -d 123 -plans_name nnUNetPlans_s3d -c 3d_fullres_s3d",
        f"  nnUNetv2_train 123 3d_fullres_s3d 0 -p nnUNetPlans_s3d -pretrained_weights {weights}",
    ]
    assert weights.is_file()
