"""The s3d_finetune bundle end to end on synthetic labeled MRIs with the tiny network preset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_runs import run_workflow as _run
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from custom_nets.data import ForegroundOversampledDataset
from custom_nets.nets import S3D, resenc_unet
from custom_nets.transfer import nnssl_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / n) for n in ("train.yaml", "evaluate.yaml", "inference.yaml"))


@pytest.fixture
def overrides(finetune_cache, tmp_path):
    return {
        "dataset_dir": None,
        "cache_dir": finetune_cache,
        "output_dir": str(tmp_path / "run"),
        "network_preset": "tiny",
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "epochs": 4,
        "iterations_per_epoch": 2,
        "num_workers": 0,
        "validation_iterations": 2,
        "device": "cpu",
    }


def _encoder(state):
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def test_scratch_training_then_evaluation_in_the_original_geometry(overrides):
    wf = ConfigWorkflow(config_file=[TRAIN], workflow_type="train", logging_file=False, **overrides)
    wf.initialize()
    trainer, network = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("network")
    optimizer = wf.parser.get_parsed_content("optimizer")
    steps = []  # (lr, every parameter trainable and updated) after each optimiser step

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        updated = all(p.requires_grad and p.grad is not None for p in network.parameters())
        steps.append((optimizer.param_groups[0]["lr"], updated))

    wf.run()
    wf.finalize()
    out = Path(overrides["output_dir"])
    info = json.loads((out / "models" / "model_info.json").read_text())
    assert info["labels"] == {"0": "background", "1": "lesion", "2": "ventricles"} and info["num_channels"] == 2
    assert wf.parser.get_parsed_content("peak_lr") == 1e-2  # from scratch
    # nnU-Net's scratch recipe: the whole network from the first step, poly decay 1e-2 * (1 - t / 8) ** 0.9 over the
    # 4 x 2 iterations: 0.01, 0.00887, 0.00772, 0.00655, 0.00536, 0.00412, 0.00287, 0.00154
    assert info["schedule"] == "default"
    expected = [1e-2 * (1 - t / 8) ** 0.9 for t in range(8)]
    assert [lr for lr, _ in steps] == pytest.approx(expected) and expected[-1] == pytest.approx(0.0015389, abs=1e-7)
    assert all(updated for _, updated in steps)
    # one pseudo-Dice point per epoch, at the trainer's iteration, with overlay pictures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("validation/pseudo_dice")] == [2, 4, 6, 8]
    assert {"validation/pseudo_dice/lesion", "validation/pseudo_dice/ventricles"} <= set(events.Tags()["scalars"])
    assert {"validation/overlay_0", "validation/overlay_1"} <= set(events.Tags()["images"])
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["train"]) + len(splits["test"]) == 12 and not set(splits["train"]) & set(splits["test"])

    ev = _run([TRAIN, EVALUATE], mirror_axes=[], **overrides)
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["n_cases"] == len(splits["test"]) and summary["classes"] == ["lesion", "ventricles"]
    assert 0.0 <= summary["mean_dsc"] <= 1.0
    for case in ev.parser.get_parsed_content("eval_cases"):
        prediction = nib.load(out / "predictions" / f"{case['case']}.nii.gz")
        label = nib.load(case["label"])
        assert prediction.shape == label.shape  # back in the original geometry
        np.testing.assert_allclose(prediction.affine, label.affine, atol=1e-4)
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


@pytest.mark.parametrize("source", ["s3d_training_checkpoint", "nnssl"])
def test_frozen_schedule_keeps_the_transferred_encoder(overrides, tmp_path, source):
    torch.manual_seed(0)
    pretrained = resenc_unet("tiny")
    if source == "nnssl":
        checkpoint = nnssl_checkpoint(pretrained.state_dict(), preset="tiny")
    else:
        s3d = S3D(resenc_unet("tiny"), block_size=8)
        s3d.backbone.load_state_dict(pretrained.state_dict())
        checkpoint = {"network": s3d.state_dict(), "optimizer": {}}
    path = tmp_path / "pretrained.pth"
    torch.save(checkpoint, path)
    wf = _run([TRAIN], schedule="frozen", pretrained_checkpoint=str(path), **overrides)
    report = wf.parser.get_parsed_content("transfer_report")
    assert report.replicated_stem  # 2 modalities, 1-channel pre-training
    assert wf.parser.get_parsed_content("peak_lr") == 1e-3
    trained = torch.load(Path(overrides["output_dir"]) / "models" / "model.pt", weights_only=True)
    expected = _encoder(pretrained.state_dict())
    stem = "encoder.stem.convs.0.conv.weight"
    for key, value in _encoder(trained).items():
        if key.startswith("encoder.stem.convs.0.conv.") or key.startswith("encoder.stem.convs.0.all_modules.0."):
            continue  # replicated over 2 channels (and trainable): checked below
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    replicated = torch.cat([expected[stem] / 2] * 2, dim=1)
    assert trained[stem].shape == replicated.shape
    decoder_key = "decoder.stages.0.convs.0.conv.weight"
    assert not torch.equal(trained[decoder_key], pretrained.state_dict()[decoder_key])


def test_wrong_checkpoint_fails_loudly(overrides, tmp_path, error_chain):
    path = tmp_path / "demo_preset.pt"
    torch.save(resenc_unet("demo").state_dict(), path)
    with pytest.raises(Exception) as info:
        _run([TRAIN], pretrained_checkpoint=str(path), **overrides)
    message = error_chain(info.value)
    assert "demo" in message and str(path) in message


def test_low_data_keeps_n_training_cases(overrides):
    wf = ConfigWorkflow(config_file=[TRAIN], workflow_type="train", logging_file=False, low_data=3, **overrides)
    wf.initialize()
    assert len(wf.parser.get_parsed_content("train_entries")) == 3


def test_inference_config_alone_segments_new_images(overrides, tmp_path):
    _run([TRAIN], **dict(overrides, epochs=2, iterations_per_epoch=2))
    out = Path(overrides["output_dir"])
    source = Path(overrides["cache_dir"]) / "demo_source" / "dataset.json"
    _run(
        [INFERENCE], checkpoint=str(out / "models" / "model.pt"), input_dir=str(source),
        output_dir=str(tmp_path / "predicted"), mirror_axes=[], device="cpu",
    )
    test_entries = json.loads(source.read_text())["test"]
    written = sorted((tmp_path / "predicted").glob("*.nii.gz"))
    assert len(written) == len(test_entries)
    first_image = nib.load(source.parent / test_entries[0]["image"][0])
    assert nib.load(written[0]).shape == first_image.shape


def test_the_recipe_is_nnunets(overrides):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update(overrides)
    assert parser.get_parsed_content("schedule") == "default" and parser.get_parsed_content("peak_lr") == 1e-2
    parser["pretrained_checkpoint"] = "weights.pt"  # the schedule follows the weights unless --schedule is given
    assert parser.get_parsed_content("schedule") == "sawtooth" and parser.get_parsed_content("peak_lr") == 1e-3
    parser["pretrained_checkpoint"] = None

    # deep supervision: the tiny preset's 3 outputs weigh 1, 1/2, 0 normalised; Dice per sample
    loss = parser.get_parsed_content("loss")
    assert loss.weights == pytest.approx([2 / 3, 1 / 3, 0.0]) and loss.loss.dice.batch is False
    # He init: zero biases, identity residual blocks
    network = parser.get_parsed_content("network")
    assert all((m.bias == 0).all() for m in network.modules() if isinstance(m, torch.nn.Conv3d) and m.bias is not None)
    assert (network.encoder.stages[1].blocks[1].conv2.norm.weight == 0).all()
    parser["he_init"] = False  # PyTorch's default (the CPU demo's choice): non-zero biases, residual norms at 1
    parser.parse()
    network = parser.get_parsed_content("network")
    assert (network.encoder.stages[1].blocks[1].conv2.norm.weight == 1).all()
    assert (network.encoder.stem.convs[0].conv.bias != 0).any()

    dataset = parser.get_parsed_content("train#dataset")
    assert isinstance(dataset, ForegroundOversampledDataset) and dataset.oversample_foreground_percent == 0.33
    transforms = parser.get_parsed_content("train#preprocessing").transforms
    spatial = transforms[3]
    assert (spatial.prob_rotation, spatial.rotation_range, spatial.prob_scaling, spatial.scale_range) == (
        0.2, 0.5236, 0.2, (0.7, 1.4)) and spatial.modes == ["cubic", "label"]
    assert (transforms[4].prob, transforms[4].rand_gaussian_noise.std) == (0.1, 0.1)
    # the per-channel intensity transforms, as tests/data/test_intensity_augment.py measures them
    channelwise = [(type(t.transform).__name__, t.prob, t.p_per_channel) for t in transforms[5:11]]
    assert channelwise == [
        ("RandGaussianSmooth", 0.2, 0.5), ("RandScaleIntensity", 0.15, 1.0), ("RandScaleIntensityFixedMean", 0.15, 1.0),
        ("RandSimulateLowResolution", 0.25, 0.5), ("RandGamma", 0.1, 1.0), ("RandGamma", 0.3, 1.0),
    ]
    assert [t.transform.invert_image for t in transforms[9:11]] == [True, False]
    assert all(t.transform.retain_stats for t in transforms[9:11])
    assert [(type(t).__name__, t.flipper.spatial_axis, t.prob) for t in transforms[11:]] == [
        ("RandFlipd", a, 0.5) for a in (0, 1, 2)
    ]
