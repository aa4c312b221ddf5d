"""Pretrained-weight loading (custom_nets.transfer.load_pretrained) and its report, tiny preset only."""

import logging

import pytest
import torch
from transfer_cases import (
    DECODER_PREFIXES,
    ENCODER,
    ENCODER_PREFIXES,
    N_DECODER,
    N_ENCODER,
    N_SEG_HEAD,
    STEM,
    assert_equal,
    assert_fresh,
    nnssl_dict,
    randomise,
    save,
    tiny,
)

from custom_nets.nets import resenc_unet
from custom_nets.transfer import LoadReport, load_pretrained


def test_nnssl_checkpoint_loads_every_stem_and_encoder_tensor(tmp_path, caplog):
    source = randomise(tiny())
    path = save(nnssl_dict(source.state_dict()), tmp_path, "checkpoint_final.pth")
    network = tiny(seed=3, num_classes=4)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="custom_nets.transfer"):
        report = load_pretrained(network, path)
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    assert_fresh(network, fresh, DECODER_PREFIXES + ("decoder.seg_layers.",))
    assert report.source_format == "nnssl" and not report.replicated_stem
    assert report.summary() in caplog.text and str(path) in report.summary()


def test_report_counts_for_the_tiny_preset(tmp_path):
    source = randomise(tiny())
    report = load_pretrained(tiny(seed=3), save(source.state_dict(), tmp_path))
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
    source = randomise(tiny())
    network = tiny(seed=3)
    head = {k: v.clone() for k, v in network.state_dict().items() if k.startswith("decoder.seg_layers.")}
    report = load_pretrained(network, save(nnssl_dict(source.state_dict()), tmp_path), scope="encoder+decoder")
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES + DECODER_PREFIXES)
    assert_fresh(network, head, ("decoder.seg_layers.",))
    assert len(report.loaded) == N_ENCODER + N_DECODER
    assert set(report.skipped.values()) == {"segmentation head is trained anew"}


def test_duplicate_names_load_from_either_copy(tmp_path):
    """Without ``decoder.encoder.*`` and with only the ``all_modules.N`` names of every conv and norm, all loads."""
    source = randomise(tiny())
    state = {
        k: v.clone()
        for k, v in source.state_dict().items()
        if not k.startswith("decoder.encoder.") and not any(f".{m}." in k for m in ("conv", "norm"))
    }
    assert "encoder.stem.convs.0.all_modules.0.weight" in state and "encoder.stem.convs.0.conv.weight" not in state
    network = tiny(seed=3)
    report = load_pretrained(network, save(state, tmp_path))
    assert_equal(network, source.state_dict(), ENCODER_PREFIXES)
    assert len(report.loaded) == N_ENCODER and report.missing == []


def test_stem_replication_gives_the_pretrained_response(tmp_path):
    pretrained = randomise(tiny())
    network = tiny(seed=3, in_channels=3)
    report = load_pretrained(network, save(nnssl_dict(pretrained.state_dict()), tmp_path))
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
    pretrained = randomise(tiny())
    path = save(nnssl_dict(pretrained.state_dict(), keys_to_in_proj=[]), tmp_path)
    expected = r"1 of 61 stem/encoder tensors.*\(4, 1, 3, 3, 3\) != \(4, 3, 3, 3, 3\).*in_channels=1"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(tiny(seed=3, in_channels=3), path)


def test_preset_mismatch_names_the_checkpoint_preset(tmp_path):
    path = save(randomise(tiny()).state_dict(), tmp_path)
    network = resenc_unet("demo")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_pretrained(network, path)
    message = str(error.value)
    assert "preset 'tiny'" in message and "preset 'demo'" in message and "resenc_unet('tiny'" in message
    assert str(path) in message
    assert_fresh(network, before, ("",))  # a failed load changes nothing


def test_preset_mismatch_without_strict_gives_a_report(tmp_path):
    source = randomise(tiny())
    network = resenc_unet("demo")
    report = load_pretrained(network, save(source.state_dict(), tmp_path), strict_encoder=False)
    # tiny and demo share the stem and stage 0 (4 channels) and the first block of stage 1 (8 channels)
    assert len(report.loaded) == 4 + 8 + 11
    assert report.skipped["encoder.stages.2.blocks.0.conv1.conv.weight"] == "shape (12, 8, 3, 3, 3) != (16, 8, 3, 3, 3)"
    assert report.skipped["encoder.stages.1.blocks.1.conv1.conv.weight"] == "not in the network"
    assert "encoder.stages.5.blocks.0.conv1.conv.weight" in report.missing
    assert_equal(network, source.state_dict(), ("encoder.stem.", "encoder.stages.0."))


def test_nothing_loadable_raises_even_without_strict(tmp_path):
    state = {k: v for k, v in tiny().state_dict().items() if not k.startswith(("encoder.", "decoder.encoder."))}
    state["encoder.stages.0.blocks.0.conv1.conv.weight"] = torch.zeros(4, 4, 5, 5, 5)  # looks like ResEnc, fits nothing
    with pytest.raises(ValueError, match="no encoder tensor would load"):
        load_pretrained(tiny(), save(state, tmp_path), strict_encoder=False)


def test_nnunet_weights_give_the_same_output(tmp_path):
    dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from custom_nets.nets import dna_kwargs

    torch.manual_seed(5)
    theirs = randomise(dna_unet.ResidualEncoderUNet(**dna_kwargs("tiny")), seed=5).eval()
    path = save(nnssl_dict(theirs.state_dict()), tmp_path)
    ours = tiny(seed=3)
    load_pretrained(ours, path, scope="encoder+decoder")
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(ours.encoder(x), theirs.encoder(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # the head is never transferred; copy it by hand to compare whole networks
        ours.decoder.seg_layers.load_state_dict(theirs.decoder.seg_layers.state_dict())
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scope must be one of"):
        load_pretrained(tiny(), {}, scope="decoder")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_pretrained(tiny(), {"epoch": 3})


def test_a_plan_is_checked_first_and_copies_only_when_applied(tmp_path, caplog):
    from custom_nets.transfer import plan_transfer

    source = randomise(tiny())
    network = tiny(seed=3, in_channels=2)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    plan = plan_transfer(network, save(source.state_dict(), tmp_path))
    assert plan.report.replicated_stem and len(plan.report.loaded) == N_ENCODER
    assert_fresh(network, fresh, ("",))  # matched and checked, nothing copied
    with caplog.at_level(logging.INFO, logger="custom_nets.transfer"):
        assert plan.apply() is plan.report and plan.apply() is plan.report
    assert caplog.text.count("Loaded 61 tensors") == 1  # applied (and logged) once
    key = "encoder.stages.2.blocks.1.conv2.conv.weight"
    torch.testing.assert_close(network.state_dict()[key], source.state_dict()[key], rtol=0, atol=0)
    stem = "encoder.stem.convs.0.conv.weight"
    torch.testing.assert_close(network.state_dict()[stem][:, 1:], source.state_dict()[stem] / 2, rtol=0, atol=0)
