"""The baselines bundle: every method pre-trains two steps on CPU with the tiny preset and its weights load into
the fine-tuning bundle; a method file changes the method, and data and optimisation are S3D's by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from bundle_runs import run_workflow as _run
from monai.bundle import ConfigParser, ConfigWorkflow

from custom_nets.benchmark_baselines import TINY_SETTINGS, method_files
from custom_nets.nets import resenc_unet

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundles" / "baselines" / "configs"
S3D_TRAIN = str(ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml")
S3D_MULTI_GPU = str(ROOT / "bundles" / "s3d_pretrain" / "configs" / "multi_gpu_train.yaml")
FINETUNE = str(ROOT / "bundles" / "s3d_finetune" / "configs" / "train.yaml")

# Per method, from its paper: whether it trains the U-Net decoder (then its model.pt also carries decoder weights).
# A method file not listed here is tested as well (ALL_METHODS), against its network's own decoder_pretrained. The
# tiny-scale settings a CPU run needs (views cut from 32^3 patches) are the benchmark's TINY_SETTINGS.
METHODS = {
    "dense_mae": True,
    "models_genesis": True,
    "volume_fusion": True,
    "amaes": False,
    "simclr": False,
    "voco": False,
    "swinunetr": True,
}
# Columns of the preview pictures: input / masked input / reconstruction / target for dense MAE, input / output /
# target for methods whose output and target are volumes, the input alone for contrastive methods.
PREVIEW_COLUMNS = {"dense_mae": 4, "simclr": 1, "voco": 1}
ALL_METHODS = method_files(CONFIGS)
# Stem + encoder tensors of the tiny preset (counted in tests/test_transfer.py).
N_ENCODER = 61


def test_every_method_file_is_tested():
    files = {p.stem for p in CONFIGS.glob("*.yaml")} - {"common", "multi_gpu_train", "scratch"}
    assert files == set(ALL_METHODS) and set(METHODS) <= files, "a method file must set `method`"


# What a method file may set besides the method itself (network_def, pretext, loss and their own settings): the
# paper's per-method changes. Everything else of data and optimisation comes from S3D's train.yaml unchanged.
S3D_SETTINGS = {
    "max_steps", "batch_size", "patch_size", "target_spacing", "image_interpolation", "quality_thresholds",
    "max_image_quality_score", "modalities", "num_workers", "cache_dir", "use_anonymization_mask", "learning_rate",
    "momentum", "weight_decay", "poly_exponent", "grad_clip_norm", "amp", "iterations_per_epoch", "network_preset",
    "in_channels", "seed", "deterministic", "device", "checkpoint_interval", "preview_interval", "log_interval",
    "optimizer", "lr_scheduler", "network", "train", "initialize", "run", "finalize",
}
PAPER_CHANGES = {
    "amaes": {"learning_rate", "weight_decay", "optimizer", "lr_scheduler"},  # AdamW + warm-up cosine (AMAES)
    "volume_fusion": {"learning_rate"},  # 1e-3 (OpenMind's tuned value)
    "simclr": {"batch_size", "patch_size"},  # OpenMind's 32 patches of 192x192x64
    "voco": {"patch_size"},  # the 4x4x1 grid of 64^3 crops
}


def _value(v, depth=0):
    """A comparable description of an instantiated transform: its class and public attributes, recursively."""
    skip = {"R", "overrides"}
    if hasattr(v, "__dict__") and not isinstance(v, (type, torch.dtype)) and depth < 4:
        return (type(v).__name__, {k: _value(x, depth + 1) for k, x in sorted(vars(v).items()) if k not in skip and not k.startswith("_")})
    if isinstance(v, (list, tuple)):
        return [_value(x, depth + 1) for x in v]
    return repr(v)


def _describe(parser):
    parser["use_anonymization_mask"] = False  # the one setting that follows the data: no datalist is read here
    return [_value(t) for t in parser.get_parsed_content("train#preprocessing", instantiate=True).transforms]


def _method_keys(method: str) -> set[str]:
    return set(ConfigParser.load_config_file(CONFIGS / f"{method}.yaml"))


def test_method_files_change_only_the_method_and_the_papers_settings():
    for method in ALL_METHODS:
        keys = _method_keys(method)
        assert {"method", "output_dir"} <= keys, method
        assert ConfigParser.load_config_file(CONFIGS / f"{method}.yaml")["method"] == method
        top = {k for k in keys if "#" not in k}
        assert top & S3D_SETTINGS == PAPER_CHANGES.get(method, set()), method
        assert all(k == "train#preview#target_key" for k in keys if "#" in k), method  # no other nested override


@pytest.mark.parametrize("method", ALL_METHODS)
def test_data_and_optimisation_resolve_to_those_of_s3d(method):
    ours, s3d = ConfigParser(), ConfigParser()
    ours.read_config([S3D_TRAIN, str(CONFIGS / f"{method}.yaml")])
    s3d.read_config(S3D_TRAIN)
    changed = PAPER_CHANGES.get(method, set())
    for key in sorted(S3D_SETTINGS - changed - {"train", "network", "initialize", "run", "finalize", "device", "cache_dir"}):
        assert ours[key] == s3d[key], (method, key)
    for section in ("preprocessing", "dataset", "sampler", "dataloader", "handlers", "trainer", "iteration", "inferer"):
        assert ours["train"][section] == s3d["train"][section], (method, section)
    assert ours["initialize"] == s3d["initialize"] and ours["run"] == s3d["run"]
    if not changed & {"patch_size", "batch_size"}:  # the instantiated pipeline too, transform by transform
        assert _describe(ours) == _describe(s3d), method
    if not changed & {"learning_rate", "optimizer"}:
        for key in ("learning_rate", "momentum", "weight_decay", "poly_exponent", "grad_clip_norm", "max_steps"):
            assert ours.get_parsed_content(key) == s3d.get_parsed_content(key), (method, key)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_two_training_steps_and_the_weights_load_into_finetuning(method, tiny_overrides, finetune_cache, tmp_path):
    overrides = {k: v for k, v in tiny_overrides.items() if k != "block_size"}
    overrides.update({"max_steps": 2, "iterations_per_epoch": 2, "preview_interval": 1, **TINY_SETTINGS.get(method, {})})
    workflow = _run([S3D_TRAIN, str(CONFIGS / f"{method}.yaml")], **overrides)
    declared = getattr(workflow.parser.get_parsed_content("network_def"), "decoder_pretrained", True)
    decoder_pretrained = METHODS.get(method, declared)
    out = Path(overrides["output_dir"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_iter000000002.pt"]
    pictures = sorted((out / "previews").glob("*.png"))
    assert len(pictures) == 2
    columns = PREVIEW_COLUMNS.get(method, 3)
    with Image.open(pictures[-1]) as picture:  # 128-pixel panels (small patches are enlarged), 2-pixel gaps
        assert picture.width == columns * 128 + (columns - 1) * 2, (method, picture.size)
    info = json.loads((out / "models" / "pretraining.json").read_text())
    assert info["method"] == method and info["decoder_pretrained"] is decoder_pretrained
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    reference = resenc_unet("tiny", in_channels=1, num_classes=1).state_dict()
    encoder_keys = {k for k in reference if k.startswith(("encoder.stem", "encoder.stages"))}
    assert encoder_keys <= set(weights)
    assert any(k.startswith("decoder.stages") for k in weights) is decoder_pretrained
    assert all(weights[k].shape == reference[k].shape for k in encoder_keys)
    # the pretext task trains the encoder: every encoder parameter has a non-zero optimiser state (momentum / Adam
    # moments) after two steps, and model.pt holds the trained values
    network = workflow.parser.get_parsed_content("network")
    trainable = [(n, p) for n, p in network.named_parameters() if p.requires_grad]
    state = torch.load(out / "checkpoints" / "checkpoint_iter000000002.pt", weights_only=True)["optimizer"]["state"]
    encoder = [i for i, (n, _) in enumerate(trainable) if ".encoder.stages." in "." + n]
    assert encoder and all(any(v.abs().sum() > 0 for v in state[i].values() if v.ndim) for i in encoder)
    # exactly the methods that leave trainable parameters without gradient (an unused decoder or deep-supervision
    # heads) set find_unused_parameters: DDP (multi_gpu_train.yaml) would wait for those gradients at the next step,
    # and searching for them costs a graph traversal per step where there are none
    unused = [n for n, p in trainable if p.grad is None]
    assert bool(unused) is workflow.parser.get_parsed_content("find_unused_parameters"), (method, unused[:3])
    for name, param in trainable:
        dense = name.split("backbone.", 1)[-1]
        if dense in weights:
            assert torch.equal(weights[dense], param.detach().cpu()), name

    # the fine-tuning bundle loads it with the same command as an S3D checkpoint (2 modalities: stem replicated)
    parser = ConfigParser()
    parser.read_config(FINETUNE)
    parser.update(
        {
            "dataset_dir": None, "cache_dir": finetune_cache, "output_dir": str(tmp_path / "finetune"),
            "network_preset": "tiny", "patch_size": [32, 32, 32], "device": "cpu",
            "pretrained_checkpoint": str(out / "models" / "model.pt"),
        }
    )
    report = parser.get_parsed_content("transfer_report")
    assert len(report.loaded) == N_ENCODER and report.replicated_stem
    network = parser.get_parsed_content("network")
    for key in encoder_keys - {"encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight"}:
        assert torch.equal(network.state_dict()[key], weights[key]), key


def test_two_process_ddp_on_cpu_for_an_encoder_only_method(tiny_overrides):
    """SimCLR through torchrun: the unused U-Net decoder must not stall DDP, rank 0 writes the encoder weights."""
    import os
    import subprocess
    import sys

    overrides = {k: v for k, v in tiny_overrides.items() if k != "block_size"}
    overrides.update({"max_steps": 2, "iterations_per_epoch": 2, **TINY_SETTINGS["simclr"]})
    configs = [S3D_TRAIN, str(CONFIGS / "simclr.yaml"), S3D_MULTI_GPU]
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "training", "--config_file", str(configs).replace(" ", ""),
    ]
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = Path(overrides["output_dir"])
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    assert weights and all(k.startswith(("encoder.stem", "encoder.stages")) for k in weights)
    checkpoint = torch.load(out / "checkpoints" / "checkpoint_iter000000002.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in checkpoint["network"])


def test_amaes_resumes_after_a_crash_with_its_adamw_and_warmup_cosine_state(tiny_overrides, tmp_path, error_chain):
    """AMAES has its own optimiser and schedule: a crashed run resumes at the same iteration, lr and Adam moments."""
    from ignite.engine import Events

    from custom_nets.engine import latest_checkpoint

    overrides = {k: v for k, v in tiny_overrides.items() if k != "block_size"}
    overrides.update({"max_steps": 6, "iterations_per_epoch": 2, "checkpoint_interval": 2, "warmup_epochs": 1})
    files = [S3D_TRAIN, str(CONFIGS / "amaes.yaml")]

    def workflow(output_dir):
        wf = ConfigWorkflow(config_file=files, workflow_type="train", logging_file=False, **dict(overrides, output_dir=output_dir))
        wf.initialize()
        trainer, lrs = wf.parser.get_parsed_content("train#trainer"), []
        trainer.add_event_handler(
            Events.ITERATION_STARTED, lambda e: lrs.append((e.state.iteration, e.optimizer.param_groups[0]["lr"]))
        )
        return wf, trainer, lrs

    wf, _, reference = workflow(str(tmp_path / "uninterrupted"))
    wf.run()
    run_dir = str(tmp_path / "crashed")
    wf, trainer, crashed = workflow(run_dir)

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def crash(engine):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError) as info:
        wf.run()
    assert "simulated crash" in error_chain(info.value)
    saved = torch.load(latest_checkpoint(Path(run_dir) / "checkpoints"), weights_only=True)
    assert latest_checkpoint(Path(run_dir) / "checkpoints").name == "checkpoint_iter000000002.pt"

    wf, trainer, resumed = workflow(run_dir)
    restored = {}
    trainer.add_event_handler(
        Events.ITERATION_STARTED(once=3),
        lambda e: restored.update(moments=[s["exp_avg"].clone() for s in e.optimizer.state.values()]),
    )
    wf.run()
    assert [i for i, _ in resumed] == [3, 4, 5, 6]
    combined = crashed[:2] + resumed
    assert [lr for _, lr in combined] == pytest.approx([lr for _, lr in reference], rel=1e-12)
    assert len({lr for _, lr in reference}) > 2  # warm-up then cosine: the lr really changes
    saved_moments = [s["exp_avg"] for s in saved["optimizer"]["state"].values()]
    assert len(saved_moments) == len(restored["moments"])
    assert all(torch.equal(a, b) for a, b in zip(saved_moments, restored["moments"]))
