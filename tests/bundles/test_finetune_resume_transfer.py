"""The fine-tuning bundle resumed after a crash: its own weights, not the pre-trained ones, and the schedule's
trainable parts at the resumed iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from custom_nets.nets import resenc_unet

TRAIN = str(Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "train.yaml")


def _workflow(**overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=[TRAIN], workflow_type="train", logging_file=False, **overrides)
    wf.initialize()
    return wf


@pytest.mark.slow
def test_resumed_sawtooth_run_keeps_its_weights_and_trains_the_encoder(finetune_cache, tmp_path, error_chain):
    torch.manual_seed(0)
    pretrained = resenc_unet("tiny").state_dict()
    torch.save(pretrained, tmp_path / "model.pt")
    overrides = {
        "dataset_dir": None, "cache_dir": finetune_cache, "output_dir": str(tmp_path / "run"),
        "network_preset": "tiny", "patch_size": [32, 32, 32], "batch_size": 2, "num_workers": 0, "device": "cpu",
        "validation_iterations": 1, "validation_interval": 4, "epochs": 4, "iterations_per_epoch": 2,
        "checkpoint_interval": 2, "schedule": "sawtooth", "pretrained_checkpoint": str(tmp_path / "model.pt"),
    }
    # sawtooth over 8 iterations: decoder-only steps 1-2, whole network from step 3 (fresh optimiser), steps 4-8
    first = _workflow(**overrides)

    @first.parser.get_parsed_content("train#trainer").on(Events.ITERATION_COMPLETED(once=5))
    def crash(engine):
        raise RuntimeError("simulated crash after step 5")

    with pytest.raises(RuntimeError) as crashed:  # MONAI wraps the error of the run expression
        first.run()
    assert "simulated crash after step 5" in error_chain(crashed.value)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_iter000000004.pt", weights_only=True)
    key = "encoder.stages.1.blocks.0.conv1.conv.weight"
    assert not torch.equal(checkpoint["network"][key], pretrained[key])  # steps 3-4 trained the encoder

    second = _workflow(**overrides)
    trainer, network = second.parser.get_parsed_content("train#trainer"), second.parser.get_parsed_content("network")
    seen = {}

    @trainer.on(Events.STARTED)  # after every STARTED handler of the config
    def after_start(engine):
        seen["iteration"] = engine.state.iteration
        seen["state"] = {k: v.clone() for k, v in network.state_dict().items()}

    @trainer.on(Events.ITERATION_STARTED)
    def encoder_trains(engine):
        weight = network.encoder.stages[1].blocks[0].conv1.conv.weight
        seen.setdefault("encoder_trains", []).append(weight.requires_grad)

    second.run()
    second.finalize()
    assert seen["iteration"] == 4
    for name, value in checkpoint["network"].items():  # the run's own weights, not the pre-trained ones
        torch.testing.assert_close(seen["state"][name], value, rtol=0, atol=0, msg=name)
    assert seen["encoder_trains"] == [True] * 4  # steps 5-8 belong to the whole-network stage
    assert second.parser.get_parsed_content("transfer_report").replicated_stem  # 2 modalities, 1-channel weights
