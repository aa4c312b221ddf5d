"""Checkpoint conversion and pretrained-weight loading (custom_nets.transfer), tiny preset only."""

import argparse
import json
import logging

import pytest
import torch
from torch import nn

from custom_nets.nets import S3D, dense_state_dict, resenc_unet
from custom_nets.transfer import (
    LoadReport,
    encoder_layout,
    export_nnssl,
    load_pretrained,
    nnssl_checkpoint,
    read_checkpoint,
)

STEM, ENCODER = "encoder.stem", "encoder.stages"
IN_PROJ = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")

# Tiny preset, counted by hand from its state dict (each tensor once, duplicate nnU-Net names not counted):
#   stem: conv weight + bias, norm weight + bias                                   = 4
#   residual block: conv1 (4) + conv2 (4)                                          = 8
#   first block of a stage that changes width: + skip 1x1 conv (no bias) + norm (2) = 11
#   stage 0 (1 block, 4 -> 4): 8; stages 1 and 2 (2 blocks): 11 + 8 each; stage 3 (1 block): 11
N_ENCODER = 4 + 8 + (11 + 8) + (11 + 8) + 11  # 61
N_DECODER = 3 * (2 + 4)  # 3 decoder stages: transposed conv weight + bias, one conv-norm (4)
N_SEG_HEAD = 3 * 2  # one 1x1 head per decoder stage


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return resenc_unet("tiny", **kw)


def _randomise(network, seed=1):
    """Random values everywhere (norm weights are 1 and biases 0 at init, which would hide wrong copies)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn_like(p))
    return network


def _nnssl_dict(state, in_channels=1, **plan_overrides):
    """An nnssl checkpoint_final.pth as nnssl writes it (dict plan, training state beside the weights)."""
    plan = {
        "architecture_plans": {"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": None},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind"},
        "pretrain_num_input_channels": in_channels,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": ENCODER,
        "key_to_stem": STEM,
        "keys_to_in_proj": list(IN_PROJ),
        "key_to_lpe": None,
    }
    plan.update(plan_overrides)
    return {
        "network_weights": dict(state),
        "nnssl_adaptation_plan": plan,
        "optimizer_state": {},
        "current_epoch": 1000,
        "trainer_name": "SparkMAETrainer",
    }


def _save(obj, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _assert_equal(network, source_state, prefixes):
    """Every network tensor under ``prefixes`` (all its names) equals the source tensor of the same name."""
    target = network.state_dict()
    keys = [k for k in target if k.startswith(prefixes)]
    assert keys
    for key in keys:
        torch.testing.assert_close(target[key], source_state[key], rtol=0, atol=0, msg=key)


def _assert_fresh(network, fresh_state, prefixes):
    for key, value in network.state_dict().items():
        if key.startswith(prefixes):
            torch.testing.assert_close(value, fresh_state[key], rtol=0, atol=0, msg=key)


ENCODER_PREFIXES = (STEM + ".", ENCODER + ".", "decoder.encoder.")
DECODER_PREFIXES = ("decoder.stages.", "decoder.transpconvs.")


def test_nnssl_checkpoint_loads_every_stem_and_encoder_tensor(tmp_path, caplog):
    source = _randomise(_tiny())
    path = _save(_nnssl_dict(source.state_dict()), tmp_path, "checkpoint_final.pth")
    network = _tiny(seed=3, num_classes=4)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="custom_nets.transfer"):
        report = load_pretrained(network, path)
    _assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    _assert_fresh(network, fresh, DECODER_PREFIXES + ("decoder.seg_layers.",))
    assert report.source_format == "nnssl" and not report.replicated_stem
    assert report.summary() in caplog.text and str(path) in report.summary()


def test_report_counts_for_the_tiny_preset(tmp_path):
    source = _randomise(_tiny())
    report = load_pretrained(_tiny(seed=3), _save(source.state_dict(), tmp_path))
    assert isinstance(report, LoadReport) and report.source_format == "state_dict"
    assert len(report.loaded) == N_ENCODER == 61
    assert all(k.startswith((STEM + ".", ENCODER + ".")) for k in report.loaded)  # canonical names, no duplicates
    reasons = list(report.skipped.values())
    assert reasons.count("not in transfer scope") == N_DECODER
    assert reasons.count("segmentation head is trained anew") == N_SEG_HEAD
    assert len(reasons) == N_DECODER + N_SEG_HEAD and report.missing == []
    summary = report.summary()
    assert "Loaded 61 tensors" in summary and "18 not in transfer scope" in summary
    assert "6 segmentation head is trained anew" in summary


def test_encoder_plus_decoder_loads_decoder_but_never_the_head(tmp_path):
    source = _randomise(_tiny())
    network = _tiny(seed=3)
    head = {k: v.clone() for k, v in network.state_dict().items() if k.startswith("decoder.seg_layers.")}
    report = load_pretrained(network, _save(_nnssl_dict(source.state_dict()), tmp_path), scope="encoder+decoder")
    _assert_equal(network, source.state_dict(), ENCODER_PREFIXES + DECODER_PREFIXES)
    _assert_fresh(network, head, ("decoder.seg_layers.",))
    assert len(report.loaded) == N_ENCODER + N_DECODER
    assert set(report.skipped.values()) == {"segmentation head is trained anew"}


def test_s3d_training_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    s3d = S3D(_randomise(resenc_unet("tiny")), block_size=8)
    path = _save({"network": s3d.state_dict(), "optimizer": {}}, tmp_path, "checkpoint_iter000000010.pt")
    state, fmt = read_checkpoint(path)
    assert fmt == "s3d_training_checkpoint"
    assert not any("mask_tokens" in k or "densify" in k for k in state)
    network = _tiny(seed=3)
    report = load_pretrained(network, path)
    _assert_equal(network, dense_state_dict(s3d), ENCODER_PREFIXES)
    assert "not in the network" not in report.skipped.values()


@pytest.mark.parametrize(
    "wrap,fmt",
    [
        (lambda s: {"network": s, "optimizer": {}, "trainer": {"iteration": 5}}, "training_checkpoint"),
        (lambda s: {"model": s}, "monai_bundle"),
        (lambda s: {"state_dict": s, "epoch": 3}, "monai_bundle"),
        (lambda s: s, "state_dict"),
    ],
)
def test_formats_are_detected(tmp_path, wrap, fmt):
    source = _randomise(_tiny())
    state, found = read_checkpoint(_save(wrap(source.state_dict()), tmp_path))
    assert found == fmt
    assert state.keys() == source.state_dict().keys()


def test_duplicate_names_load_from_either_copy(tmp_path):
    """Without ``decoder.encoder.*`` and with only the ``all_modules.N`` names of every conv and norm, all loads."""
    source = _randomise(_tiny())
    state = {
        k: v.clone()
        for k, v in source.state_dict().items()
        if not k.startswith("decoder.encoder.") and not any(f".{m}." in k for m in ("conv", "norm"))
    }
    assert "encoder.stem.convs.0.all_modules.0.weight" in state and "encoder.stem.convs.0.conv.weight" not in state
    network = _tiny(seed=3)
    report = load_pretrained(network, _save(state, tmp_path))
    _assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    assert len(report.loaded) == N_ENCODER and report.missing == []


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_and_wrapped_network(tmp_path, prefix):
    source = _randomise(_tiny())
    path = _save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path)
    network = _tiny(seed=3)
    report = load_pretrained(nn.DataParallel(network), path)  # unwrapped through .module, like DDP
    _assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    assert len(report.loaded) == N_ENCODER


def test_stem_replication_gives_the_pretrained_response(tmp_path):
    pretrained = _randomise(_tiny())
    network = _tiny(seed=3, in_channels=3)
    report = load_pretrained(network, _save(_nnssl_dict(pretrained.state_dict()), tmp_path))
    assert report.replicated_stem and len(report.loaded) == N_ENCODER
    original = pretrained.state_dict()["encoder.stem.convs.0.conv.weight"]
    replicated = network.state_dict()["encoder.stem.convs.0.conv.weight"]
    assert replicated.shape == (4, 3, 3, 3, 3)
    for c in range(3):
        torch.testing.assert_close(replicated[:, c : c + 1], original / 3, rtol=0, atol=0)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network.encoder.stem(x.repeat(1, 3, 1, 1, 1)), pretrained.encoder.stem(x))
    assert "replicated" in report.summary()


def test_plan_keys_are_read_from_the_nnssl_checkpoint(tmp_path):
    """Without input-projection keys in the plan, the stem may not be replicated: the 3-channel load fails."""
    pretrained = _randomise(_tiny())
    path = _save(_nnssl_dict(pretrained.state_dict(), keys_to_in_proj=[]), tmp_path)
    expected = r"1 of 61 stem/encoder tensors.*\(4, 1, 3, 3, 3\) != \(4, 3, 3, 3, 3\).*in_channels=1"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(_tiny(seed=3, in_channels=3), path)


def test_other_architecture_is_rejected_with_its_keys(tmp_path):
    from monai.networks.nets import SegResNet

    path = _save(SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2).state_dict(), tmp_path)
    with pytest.raises(ValueError) as error:
        load_pretrained(_tiny(), path)
    message = str(error.value)
    assert str(path) in message and "convInit" in message and "no ResEnc encoder" in message
    assert "this project, nnU-Net or nnssl" in message


def test_primus_nnssl_checkpoint_is_rejected(tmp_path):
    """nnssl's Primus plan names its own encoder and stem keys, which hold no ResEnc stages."""
    state = {"down_projection.proj.weight": torch.zeros(8, 1, 8, 8, 8), "eva.blocks.0.mlp.fc1.weight": torch.zeros(8, 8)}
    plan = {"architecture_plans": {"arch_class_name": "PrimusM"}, "key_to_encoder": "eva"}
    plan["key_to_stem"] = "down_projection"
    with pytest.raises(ValueError, match="PrimusM.*no ResEnc encoder"):
        read_checkpoint(_save({"network_weights": state, "nnssl_adaptation_plan": plan}, tmp_path))


def test_preset_mismatch_names_the_checkpoint_preset(tmp_path):
    path = _save(_randomise(_tiny()).state_dict(), tmp_path)
    network = resenc_unet("demo")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_pretrained(network, path)
    message = str(error.value)
    assert "preset 'tiny'" in message and "preset 'demo'" in message and "resenc_unet('tiny'" in message
    assert str(path) in message
    _assert_fresh(network, before, ("",))  # a failed load changes nothing


def test_preset_mismatch_without_strict_gives_a_report(tmp_path):
    source = _randomise(_tiny())
    network = resenc_unet("demo")
    report = load_pretrained(network, _save(source.state_dict(), tmp_path), strict_encoder=False)
    # tiny and demo share the stem and stage 0 (4 channels) and the first block of stage 1 (8 channels)
    assert len(report.loaded) == 4 + 8 + 11
    assert report.skipped["encoder.stages.2.blocks.0.conv1.conv.weight"] == "shape (12, 8, 3, 3, 3) != (16, 8, 3, 3, 3)"
    assert report.skipped["encoder.stages.1.blocks.1.conv1.conv.weight"] == "not in the network"
    assert "encoder.stages.5.blocks.0.conv1.conv.weight" in report.missing
    _assert_equal(network, source.state_dict(), ("encoder.stem.", "encoder.stages.0."))


def test_nothing_loadable_raises_even_without_strict(tmp_path):
    state = {k: v for k, v in _tiny().state_dict().items() if not k.startswith(("encoder.", "decoder.encoder."))}
    state["encoder.stages.0.blocks.0.conv1.conv.weight"] = torch.zeros(4, 4, 5, 5, 5)  # looks like ResEnc, fits nothing
    with pytest.raises(ValueError, match="no encoder tensor would load"):
        load_pretrained(_tiny(), _save(state, tmp_path), strict_encoder=False)


def test_unreadable_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    corrupt.write_bytes(noise.numpy().tobytes())
    with pytest.raises(ValueError, match=r"corrupt\.pt is not a readable torch file"):
        read_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_checkpoint(tmp_path / "nowhere.pt")
    pickled = _save({"network": _tiny().state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path, "pickled.pt")
    with pytest.raises(ValueError, match=r"pickled\.pt is not a plain tensor checkpoint.*weights_only=False"):
        read_checkpoint(pickled)


def test_nnssl_export_round_trip(tmp_path):
    dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from custom_nets.nets import dna_kwargs

    source = _randomise(_tiny())
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
    weights = _save(source.state_dict(), tmp_path, "model.pt")
    out = export_nnssl(weights, tmp_path / "nnssl" / "checkpoint_final.pth")
    assert torch.load(out, weights_only=True)["nnssl_adaptation_plan"] == plan
    network = _tiny(seed=3)
    assert load_pretrained(network, out).source_format == "nnssl"
    _assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    with pytest.raises(ValueError, match="preset 'tiny'.*not preset 'demo'"):
        nnssl_checkpoint(source, preset="demo")


def test_nnunet_weights_give_the_same_output(tmp_path):
    dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from custom_nets.nets import dna_kwargs

    torch.manual_seed(5)
    theirs = _randomise(dna_unet.ResidualEncoderUNet(**dna_kwargs("tiny")), seed=5).eval()
    path = _save(_nnssl_dict(theirs.state_dict()), tmp_path)
    ours = _tiny(seed=3)
    load_pretrained(ours, path, scope="encoder+decoder")
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(ours.encoder(x), theirs.encoder(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # the head is never transferred; copy it by hand to compare whole networks
        ours.decoder.seg_layers.load_state_dict(theirs.decoder.seg_layers.state_dict())
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_encoder_layout_reads_the_preset_from_shapes():
    assert encoder_layout(_tiny().state_dict()) == ((4, 8, 12, 16), (1, 2, 2, 1))
    assert encoder_layout(resenc_unet("demo").state_dict()) == ((4, 8, 16, 32, 64, 64), (1, 1, 2, 2, 2, 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="scope must be one of"):
        load_pretrained(_tiny(), {}, scope="decoder")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_pretrained(_tiny(), {"epoch": 3})


class _EncoderOnlyMethod(nn.Module):
    """A pre-training wrapper whose U-Net decoder gets no gradient (like SimCLR / VoCo / AMAES)."""

    decoder_pretrained = False

    def __init__(self):
        super().__init__()
        self.backbone = resenc_unet("tiny", in_channels=1, num_classes=1)
        self.projection = nn.Linear(16, 8)


def test_pretrained_state_dict_of_each_kind_of_network(tmp_path):
    from custom_nets.transfer import pretrained_state_dict

    unet = resenc_unet("tiny", in_channels=1, num_classes=1)
    assert pretrained_state_dict(unet).keys() == unet.state_dict().keys()
    s3d = S3D(resenc_unet("tiny", in_channels=1, num_classes=1), block_size=8)
    assert pretrained_state_dict(s3d).keys() == dense_state_dict(s3d).keys()
    method = _EncoderOnlyMethod()
    state = pretrained_state_dict(method)
    assert state and all(k.startswith(("encoder.stem", "encoder.stages")) for k in state)
    assert not any("projection" in k for k in state)
    for key, value in state.items():
        assert torch.equal(value, method.backbone.state_dict()[key])
    # the encoder-only export loads for encoder transfer, and encoder+decoder transfer says why it cannot
    torch.save(state, tmp_path / "model.pt")
    target = resenc_unet("tiny", in_channels=2, num_classes=3)
    report = load_pretrained(target, tmp_path / "model.pt", scope="encoder")
    assert len(report.loaded) == N_ENCODER
    with pytest.raises(ValueError, match="no pre-trained decoder.*transfer_scope 'encoder'"):
        load_pretrained(target, tmp_path / "model.pt", scope="encoder+decoder")
