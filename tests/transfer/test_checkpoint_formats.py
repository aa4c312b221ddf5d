"""Checkpoint formats: every reader of custom_nets.transfer.formats, and files none of them reads."""

import argparse

import pytest
import torch
from torch import nn
from transfer_cases import ENCODER_PREFIXES, N_ENCODER, assert_equal, randomise, save, tiny

from custom_nets.nets import S3D, dense_state_dict, resenc_unet
from custom_nets.transfer import load_pretrained, read_checkpoint


def test_s3d_training_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    s3d = S3D(randomise(resenc_unet("tiny")), block_size=8)
    path = save({"network": s3d.state_dict(), "optimizer": {}}, tmp_path, "checkpoint_iter000000010.pt")
    state, fmt = read_checkpoint(path)
    assert fmt == "s3d_training_checkpoint"
    assert not any("mask_tokens" in k or "densify" in k for k in state)
    network = tiny(seed=3)
    report = load_pretrained(network, path)
    assert_equal(network, dense_state_dict(s3d), ENCODER_PREFIXES)
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
    source = randomise(tiny())
    state, found = read_checkpoint(save(wrap(source.state_dict()), tmp_path))
    assert found == fmt
    assert state.keys() == source.state_dict().keys()


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_and_wrapped_network(tmp_path, prefix):
    source = randomise(tiny())
    path = save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path)
    network = tiny(seed=3)
    report = load_pretrained(nn.DataParallel(network), path)  # unwrapped through .module, like DDP
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    assert len(report.loaded) == N_ENCODER


def test_other_architecture_is_rejected_with_its_keys(tmp_path):
    from monai.networks.nets import SegResNet

    path = save(SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2).state_dict(), tmp_path)
    with pytest.raises(ValueError) as error:
        load_pretrained(tiny(), path)
    message = str(error.value)
    assert str(path) in message and "convInit" in message and "no ResEnc encoder" in message
    assert "this project, nnU-Net or nnssl" in message


def test_primus_nnssl_checkpoint_is_rejected(tmp_path):
    """nnssl's Primus plan names its own encoder and stem keys, which hold no ResEnc stages."""
    state = {"down_projection.proj.weight": torch.zeros(8, 1, 8, 8, 8), "eva.blocks.0.mlp.fc1.weight": torch.zeros(8, 8)}
    plan = {"architecture_plans": {"arch_class_name": "PrimusM"}, "key_to_encoder": "eva"}
    plan["key_to_stem"] = "down_projection"
    with pytest.raises(ValueError, match="PrimusM.*no ResEnc encoder"):
        read_checkpoint(save({"network_weights": state, "nnssl_adaptation_plan": plan}, tmp_path))


def test_unreadable_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    corrupt.write_bytes(noise.numpy().tobytes())
    with pytest.raises(ValueError, match=r"corrupt\.pt is not a readable torch file"):
        read_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_checkpoint(tmp_path / "nowhere.pt")
    pickled = save({"network": tiny().state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path, "pickled.pt")
    with pytest.raises(ValueError, match=r"pickled\.pt is not a plain tensor checkpoint.*weights_only=False"):
        read_checkpoint(pickled)


def test_readers_are_asked_in_registry_order():
    from custom_nets.transfer import READERS

    assert [r.name for r in READERS] == [
        "nnssl", "s3d_training_checkpoint", "training_checkpoint", "monai_bundle", "state_dict",
    ]
    state = randomise(tiny()).state_dict()
    # a file that several readers accept goes to the first one
    assert read_checkpoint({"network_weights": state, "model": state})[1] == "nnssl"
    assert read_checkpoint({"network": state, **state})[1] == "training_checkpoint"


def test_a_file_no_reader_accepts_lists_what_each_expects():
    with pytest.raises(ValueError) as error:
        read_checkpoint({"epoch": 3, "weights": "elsewhere"})
    assert str(error.value) == (
        "checkpoint <state dict> holds no state dict: its top-level keys are epoch, weights; expected "
        "'network_weights' (nnssl), 'network' (training checkpoint), 'model'/'state_dict' (MONAI) or a plain state "
        "dict. only ResEnc U-Net checkpoints from this project, nnU-Net or nnssl are supported."
    )


def test_a_new_format_is_one_reader_in_the_registry(tmp_path, monkeypatch):
    """A format of another framework ({"ema_weights": ..., "step": N}, prefixed keys) read by one added reader."""
    from custom_nets.transfer import READERS, Layout, Reader
    from custom_nets.transfer import reading

    source = randomise(tiny())
    path = save({"ema_weights": {"net." + k: v for k, v in source.state_dict().items()}, "step": 7}, tmp_path)
    with pytest.raises(ValueError, match="holds no state dict"):
        read_checkpoint(path)
    reader = Reader(
        name="ema_checkpoint",
        holds="'ema_weights' (EMA checkpoint)",
        detect=lambda checkpoint: "ema_weights" in checkpoint,
        unpack=lambda checkpoint: ({k[len("net."):]: v for k, v in checkpoint["ema_weights"].items()}, Layout()),
    )
    monkeypatch.setattr(reading, "READERS", READERS + (reader,))
    state, fmt = read_checkpoint(path)
    assert fmt == "ema_checkpoint" and state.keys() == source.state_dict().keys()
    network = tiny(seed=3)
    report = load_pretrained(network, path)
    assert report.source_format == "ema_checkpoint" and len(report.loaded) == N_ENCODER
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
