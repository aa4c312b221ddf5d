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
    step = bb.build_step("voco", "tiny", "cpu", num_steps=1)
    assert step.settings == {"patch_size": [32, 32, 16], "batch_size": 2}
    assert tuple(step.image.shape) == (2, 1, 32, 32, 16)
    before = [p.detach().clone() for p in step.trainer.network.parameters() if p.requires_grad]
    step.trainer.run()
    after = [p for p in step.trainer.network.parameters() if p.requires_grad]
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


def test_dense_anchor_is_nnunets_network_in_the_s3d_bundle_with_its_optimiser_clip_and_a_plain_mse():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    from custom_nets.engine import PretextIteration
    from custom_nets.nets import S3D

    s3d = bb.build_step("s3d", "tiny", "cpu", num_steps=1)
    dense = bb.build_step(bb.DENSE_ANCHOR, "tiny", "cpu", num_steps=1, overrides={"grad_clip_norm": 5.0})
    assert isinstance(s3d.trainer.network, S3D) and isinstance(dense.trainer.network, ResidualEncoderUNet)
    assert isinstance(dense.iteration, PretextIteration) and dense.iteration.grad_clip_norm == 5.0
    assert dense.iteration.amp is s3d.iteration.amp
    hyper = ("lr", "momentum", "nesterov", "weight_decay")
    for a, b in zip(s3d.trainer.optimizer.param_groups, dense.trainer.optimizer.param_groups):
        assert {k: a[k] for k in hyper} == {k: b[k] for k in hyper}
    assert type(s3d.trainer.optimizer) is type(dense.trainer.optimizer) is torch.optim.SGD
    assert {id(p) for p in dense.trainer.network.parameters()} == {
        id(p) for g in dense.trainer.optimizer.param_groups for p in g["params"]
    }
    # the step's loss is the mean squared error of the network's reconstruction of its input, before the update
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(dense.trainer.network(dense.image), dense.image)
    dense.trainer.run()
    torch.testing.assert_close(dense.trainer.state.output["loss"], expected, rtol=1e-5, atol=1e-6)


def test_overrides_reach_the_network_the_step_and_the_trainer():
    step = bb.build_step(
        "s3d", "tiny", "cpu", overrides={"channels_last": True, "fused_norm": True, "amp": False, "block_size": 4}
    )
    weight = next(p for p in step.trainer.network.parameters() if p.ndim == 5)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert step.iteration.channels_last and step.iteration.amp is False
    assert step.trainer.network.block_size == 4 and step.iteration.pretext.masks.block_size == 4
    assert step.trainer.compile is False and step.trainer.data_loader[0]["image"] is step.image


def test_time_trainer_times_only_the_iterations_after_warm_up():
    step = bb.build_step("models_genesis", "tiny", "cpu", num_steps=5)
    started = []
    from ignite.engine import Events

    step.trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    times, window, peak = bb.time_trainer(step.trainer, warmup=2, device="cpu")
    assert started == [1, 2, 3, 4, 5] and len(times) == 3
    assert all(t > 0 for t in times) and window >= sum(times) / 1e3 and peak >= 0
