"""The per-method step benchmark builds every row from the bundle configs and reports consistent numbers."""

import pytest
import torch

from custom_nets import benchmark_baselines as bb
from custom_nets.nets import resenc_unet


def test_a_baseline_row_is_the_bundles_network_timed_with_its_pretext():
    row = bb.measure_method("models_genesis", steps=2, warmup=1)
    assert row["patch_size"] == [32, 32, 32] and row["batch_size"] == 2
    # the network is the bundle's: a tiny ResEnc U-Net with one output channel
    assert row["parameters"] == sum(p.numel() for p in resenc_unet("tiny", in_channels=1, num_classes=1).parameters())
    assert row["step_ms"] > 0 and row["pretext_ms"] is not None and row["pretext_ms"] > 0
    assert row["samples_per_s"] == pytest.approx(2 / row["step_ms"] * 1e3, rel=1e-2)


def test_the_step_really_trains_the_network():
    trainer, iteration, image, settings = bb.build_step("voco", "tiny", "cpu", num_steps=1)
    assert settings == {"patch_size": [32, 32, 16], "batch_size": 2} and tuple(image.shape) == (2, 1, 32, 32, 16)
    before = [p.detach().clone() for p in trainer.network.parameters() if p.requires_grad]
    trainer.run()
    after = [p for p in trainer.network.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_table_ratios_are_relative_to_s3d():
    rows = [
        {"method": "s3d", "patch_size": [32] * 3, "batch_size": 2, "step_ms": 200.0, "samples_per_s": 10.0, "pretext_ms": None},
        {"method": "simclr", "patch_size": [32] * 3, "batch_size": 2, "step_ms": 50.0, "samples_per_s": 40.0, "pretext_ms": 4.25},
    ]
    table = bb.markdown(rows).splitlines()
    assert table[2] == "| s3d | 32x32x32 | 2 | 200.0 | 10.00 | 1.00 | - |"
    assert table[3] == "| simclr | 32x32x32 | 2 | 50.0 | 40.00 | 4.00 | 4.2 |"


def test_unknown_method_and_scale_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        bb.run("mae3d")
    with pytest.raises(ValueError, match="scale"):
        bb.build_step("voco", "tiny", "cpu", scale="huge")
