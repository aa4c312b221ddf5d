"""The s3d_pretrain bundle end to end: outputs, resume after a crash, DDP on CPU, command-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from custom_nets.engine import latest_checkpoint
from custom_nets.nets import resenc_unet

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIGS = REPO / "bundles" / "s3d_pretrain" / "configs"
TRAIN = str(PRETRAIN_CONFIGS / "train.yaml")
MULTI_GPU = str(PRETRAIN_CONFIGS / "multi_gpu_train.yaml")


def _workflow(overrides, config_files=(TRAIN,)):
    wf = ConfigWorkflow(config_file=list(config_files), workflow_type="train", logging_file=False, **overrides)
    wf.initialize()
    return wf


def _record_lr(trainer, log):
    @trainer.on(Events.ITERATION_STARTED)
    def _(engine):
        log.append((engine.state.iteration, engine.optimizer.param_groups[0]["lr"]))


def test_training_writes_weights_checkpoints_logs_and_pictures(tiny_overrides):
    wf = _workflow(tiny_overrides)
    wf.run()
    wf.finalize()
    out = Path(tiny_overrides["output_dir"])
    # dense ResEnc weights that load strictly into the fine-tuning network and into nnU-Net's class
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    resenc_unet("tiny").load_state_dict(state, strict=True)
    network = wf.parser.get_parsed_content("network")
    torch.testing.assert_close(state["encoder.stem.convs.0.conv.weight"], network.backbone.encoder.stem.convs[0].conv.weight)
    # newest two checkpoints kept, named by iteration
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "checkpoint_iter000000002.pt",
        "checkpoint_iter000000004.pt",
    ]
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == [
        "reconstruction_iter000000002.png",
        "reconstruction_iter000000004.png",
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    lrs = [e.value for e in events.Scalars("train/lr")]
    # poly schedule per iteration, logged after the scheduler step: 1e-2 * (1 - k / 4) ** 0.9
    assert lrs == pytest.approx([1e-2 * (1 - k / 4) ** 0.9 for k in range(1, 5)], rel=1e-5)
    assert "reconstruction" in events.Tags()["images"]
    # the Throughput handler's window (log_interval 1 here) next to the loss; no peak memory on CPU
    assert [e.step for e in events.Scalars("train/samples_per_s")] == [1, 2, 3, 4]
    assert all(e.value > 0 for e in events.Scalars("train/samples_per_s") + events.Scalars("train/step_ms"))
    assert all(0 <= e.value <= 1 for e in events.Scalars("train/data_wait_share"))
    assert "train/peak_memory_gib" not in events.Tags()["scalars"]


def test_resume_after_a_crash_continues_at_the_same_iteration_and_lr(tiny_overrides, tmp_path, error_chain):
    steps = dict(tiny_overrides, max_steps=6)
    reference_lr: list = []
    wf = _workflow(dict(steps, output_dir=str(tmp_path / "uninterrupted")))
    _record_lr(wf.parser.get_parsed_content("train#trainer"), reference_lr)
    wf.run()

    crashed_lr: list = []
    wf = _workflow(steps)
    trainer = wf.parser.get_parsed_content("train#trainer")
    _record_lr(trainer, crashed_lr)

    @trainer.on(Events.ITERATION_COMPLETED(once=5))
    def crash(engine):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError) as info:
        wf.run()
    assert "simulated crash" in error_chain(info.value)
    ckpt_dir = Path(steps["output_dir"]) / "checkpoints"
    assert latest_checkpoint(ckpt_dir).name == "checkpoint_iter000000004.pt"
    saved = torch.load(latest_checkpoint(ckpt_dir), weights_only=True)

    resumed_lr: list = []
    wf = _workflow(steps)
    trainer = wf.parser.get_parsed_content("train#trainer")
    _record_lr(trainer, resumed_lr)
    restored = {}

    @trainer.on(Events.ITERATION_STARTED(once=5))
    def snapshot(engine):
        restored["network"] = {k: v.clone() for k, v in engine.network.state_dict().items()}
        restored["momentum"] = [s["momentum_buffer"].clone() for s in engine.optimizer.state.values()]

    wf.run()
    assert [i for i, _ in resumed_lr] == [5, 6]
    assert trainer.state.iteration == 6
    combined = crashed_lr[:4] + resumed_lr
    assert [i for i, _ in combined] == [i for i, _ in reference_lr] == [1, 2, 3, 4, 5, 6]
    assert [lr for _, lr in combined] == pytest.approx([lr for _, lr in reference_lr], rel=1e-12)
    for key, value in saved["network"].items():
        torch.testing.assert_close(restored["network"][key], value)
    saved_momentum = [s["momentum_buffer"] for s in saved["optimizer"]["state"].values()]
    assert len(saved_momentum) == len(restored["momentum"]) > 0
    for a, b in zip(restored["momentum"], saved_momentum):
        torch.testing.assert_close(a, b)


def _record_batches(trainer, log):
    """Per iteration, a checksum of the batch's patches (which images, crops and augmentations were drawn)."""

    @trainer.on(Events.ITERATION_STARTED)
    def _(engine):
        log[engine.state.iteration] = float(engine.state.batch["image"].double().sum())


def test_a_resumed_run_does_not_replay_the_data_and_a_run_is_reproducible(tiny_overrides, tmp_path, error_chain):
    def crash(engine):
        raise RuntimeError("simulated crash")

    def run(name, crash_at=None):
        batches: dict = {}
        wf = _workflow(dict(tiny_overrides, output_dir=str(tmp_path / name)))
        trainer = wf.parser.get_parsed_content("train#trainer")
        _record_batches(trainer, batches)
        if crash_at is not None:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=crash_at), crash)
        try:
            wf.run()
        except RuntimeError as err:
            assert "simulated crash" in error_chain(err)
        return batches

    uninterrupted = run("a")
    assert run("b") == uninterrupted  # same seed, same batches
    crashed = run("c", crash_at=3)  # checkpoint at iteration 2
    assert crashed == {k: uninterrupted[k] for k in (1, 2, 3)}
    resumed = run("c")
    assert sorted(resumed) == [3, 4]
    # restarted from the same seed, the loader would draw the first segment's batches again
    assert set(resumed.values()).isdisjoint([crashed[1], crashed[2]])


def test_missing_dataset_dir_names_the_path_and_the_fix(tiny_overrides, tmp_path, error_chain):
    missing = tmp_path / "no_such_folder"
    wf = _workflow(dict(tiny_overrides, dataset_dir=str(missing)))
    with pytest.raises(Exception) as info:
        wf.run()
    message = error_chain(info.value)
    assert str(missing) in message and "dataset_dir" in message


def _cli(args, env_extra=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _cli_overrides(overrides):
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    return args


@pytest.mark.slow
def test_command_line_training_entry_and_typo_check(tiny_overrides):
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN]
    done = _cli(args + _cli_overrides(dict(tiny_overrides, max_steps=2, iterations_per_epoch=2)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "view curves with: tensorboard --logdir" in done.stdout + done.stderr
    typo = _cli(args + _cli_overrides(tiny_overrides) + ["--max_step", "2"])
    assert typo.returncode != 0
    assert "unknown setting '--max_step'" in typo.stderr and "--max_steps" in typo.stderr


@pytest.mark.slow
def test_two_process_ddp_on_cpu_with_gloo(tiny_overrides):
    out = Path(tiny_overrides["output_dir"])
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", f"['{TRAIN}','{MULTI_GPU}']",
    ]
    done = _cli(args + _cli_overrides(dict(tiny_overrides, max_steps=2, iterations_per_epoch=2)))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    resenc_unet("tiny").load_state_dict(state, strict=True)
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["checkpoint_iter000000002.pt"]
    checkpoint = torch.load(out / "checkpoints" / "checkpoint_iter000000002.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in checkpoint["network"])  # loads on 1 GPU as well


def test_anonymization_masks_are_used_when_some_images_have_one(demo_datalist, tiny_overrides, tmp_path):
    """Half the images carry an anonymization mask; the rest get an all-zero one, so batches collate."""
    import json

    import nibabel as nib
    import numpy as np

    entries = json.loads(Path(demo_datalist).read_text())["training"]
    base = Path(demo_datalist).parent
    for entry in entries[:2]:
        image = nib.load(base / entry["image"])
        mask = np.zeros(image.shape, np.uint8)
        mask[: image.shape[0] // 4] = 1  # a "defaced" slab
        path = tmp_path / f"anon_{Path(entry['image']).name}"
        nib.save(nib.Nifti1Image(mask, image.affine), path)
        entry["image"] = str(base / entry["image"])
        entry["anonymization_mask"] = str(path)
    for entry in entries[2:]:
        entry["image"] = str(base / entry["image"])
    datalist = tmp_path / "with_masks.json"
    datalist.write_text(json.dumps({"training": entries}))
    overrides = dict(
        tiny_overrides, dataset_dir=str(datalist), cache_dir=str(tmp_path / "cache"), use_anonymization_mask=True,
        max_steps=2, iterations_per_epoch=2,
    )
    wf = _workflow(overrides)
    seen = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output["loss"].item()))
    wf.run()
    assert len(seen) == 2 and all(np.isfinite(seen))
    cached = wf.parser.get_parsed_content("datalist")
    assert sum("anonymization_mask" in e for e in cached) == 2


def test_speed_switches_train_the_same_first_step(tiny_overrides, tmp_path):
    """fused norm + channels_last + torch.compile give the same first-iteration loss as the plain eager run."""
    losses = {}
    for name, extra in {
        "plain": {},
        "fast": {"fused_norm": True, "channels_last": True, "compile": True, "compile_kwargs": {"backend": "aot_eager"}},
    }.items():
        overrides = dict(tiny_overrides, output_dir=str(tmp_path / name), max_steps=2, iterations_per_epoch=2, **extra)
        wf = _workflow(overrides)
        trainer = wf.parser.get_parsed_content("train#trainer")
        seen = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, seen=seen: seen.append(float(e.state.output["loss"])))
        wf.run()
        losses[name] = seen
        resenc_unet("tiny").load_state_dict(torch.load(tmp_path / name / "models" / "model.pt", weights_only=True))
    assert losses["fast"][0] == pytest.approx(losses["plain"][0], rel=1e-4)


def test_patch_is_rotated_and_scaled_from_image_context_bilinear_by_default_cubic_on_request():
    from monai.bundle import ConfigParser

    from custom_nets.data import RandAffineCropd, RandPatchCenterd

    cases = ((False, None, ["bilinear"]), (True, None, ["bilinear", "nearest"]), (True, "cubic", ["cubic", "nearest"]))
    for masks, interpolation, modes in cases:
        parser = ConfigParser()
        parser.read_config(TRAIN)
        parser["use_anonymization_mask"] = masks
        if interpolation is not None:
            parser["image_interpolation"] = interpolation
        transforms = parser.get_parsed_content("train#preprocessing").transforms
        names = [type(t).__name__ for t in transforms]
        # the centre first, then one resampling that cuts, rotates and scales; no crop-then-rotate
        assert "RandSpatialCropd" not in names and "RandRotated" not in names and "RandZoomd" not in names
        centre, spatial = transforms[names.index("RandPatchCenterd")], transforms[names.index("RandAffineCropd")]
        assert isinstance(centre, RandPatchCenterd) and centre.label_key is None
        assert isinstance(spatial, RandAffineCropd)
        assert names.index("RandAffineCropd") == names.index("RandPatchCenterd") + 1
        assert spatial.modes == modes and list(spatial.keys) == ["image", "anonymization_mask"][: len(modes)]
        assert (spatial.prob_rotation, spatial.rotation_range, spatial.prob_scaling, spatial.scale_range) == (
            0.2, 0.5236, 0.2, (0.7, 1.4))


def test_any_max_steps_works_with_the_demo_epoch_length(tiny_overrides):
    """--max_steps 3 on the demo (40 iterations per epoch): one short epoch, the poly schedule and the final
    checkpoint end at iteration 3."""
    overrides = {k: v for k, v in tiny_overrides.items() if k != "iterations_per_epoch"}
    overrides["max_steps"] = 3
    wf = _workflow(overrides, (TRAIN, str(PRETRAIN_CONFIGS / "demo.yaml")))
    trainer, lrs = wf.parser.get_parsed_content("train#trainer"), []
    _record_lr(trainer, lrs)
    wf.run()
    wf.finalize()
    assert wf.parser.get_parsed_content("iterations_per_epoch") == 40 and trainer.state.epoch == 1
    assert [i for i, _ in lrs] == [1, 2, 3] and trainer.state.iteration == 3
    assert [lr for _, lr in lrs] == pytest.approx([1e-2 * (1 - k / 3) ** 0.9 for k in range(3)], rel=1e-6)
    out = Path(overrides["output_dir"])
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "checkpoint_iter000000002.pt",
        "checkpoint_iter000000003.pt",
    ]
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == [
        "reconstruction_iter000000002.png",
        "reconstruction_iter000000003.png",
    ]
    saved = torch.load(out / "checkpoints" / "checkpoint_iter000000003.pt", weights_only=True)["trainer"]
    assert saved["iteration"] == 3 and saved["max_epochs"] == 1 and saved["epoch_length"] == 40
    resenc_unet("tiny").load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True), strict=True)
