"""Helpers of the nnU-Net tests: a dataset's plans as nnUNetv2_plan_and_preprocess writes them, a slow re-statement
of nnU-Net's ``load_pretrained_weights`` rules, networks built from plans like nnU-Net builds them, and a fake
nnU-Net results folder. No nnU-Net needed (tests that use the real one import it with importorskip)."""

from __future__ import annotations

import json
import pydoc
from pathlib import Path

import numpy as np
import torch

DATASET = "Dataset123_Brain"
CHANNELS = {"0": "T1", "1": "FLAIR"}
NNUNET_LABELS = {"background": 0, "lesion": 1, "ventricles": 2}


def plain_plans(spacing=(2.0, 0.5, 0.5), channels: int = 2) -> dict:
    """A trimmed nnUNetPlans.json of an anisotropic dataset: nnU-Net's default PlainConvUNet, 5 stages, anisotropic
    kernels and strides (the kind of plans into which our weights do not load)."""
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 5,
            "features_per_stage": [32, 64, 128, 256, 320],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
            "n_conv_per_stage": [2, 2, 2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2, 2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    fullres = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [40, 160, 160],
        "median_image_size_in_voxels": [50, 200, 180],
        "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"] * channels,
        "use_mask_for_norm": [True] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "batch_dice": False,
        "architecture": arch,
    }
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [50, 200, 180],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 12, "patch_size": [160, 160]},
            "3d_fullres": fullres,
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"mean": 100.0 + c, "std": 20.0, "percentile_00_5": -50.0, "percentile_99_5": 400.0 + c,
                     "median": 90.0, "min": -80.0, "max": 900.0}
            for c in range(channels)
        },
    }


def dataset_json(channels=CHANNELS, labels=NNUNET_LABELS) -> dict:
    return {"channel_names": dict(channels), "labels": dict(labels), "numTraining": 4, "file_ending": ".nii.gz"}


def write_dataset(folder: Path, plans: dict | None = None, channels=CHANNELS) -> Path:
    """``$nnUNet_preprocessed/Dataset123_Brain`` with nnUNetPlans.json and dataset.json; returns the plans file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans or plain_plans(channels=len(channels))))
    (folder / "dataset.json").write_text(json.dumps(dataset_json(channels)))
    return folder / "nnUNetPlans.json"


def resolve(plans: dict, name: str) -> dict:
    """nnU-Net's PlansManager inheritance, restated: the parent's entries, updated by the child's."""
    config = dict(plans["configurations"][name])
    if "inherits_from" in config:
        parent = resolve(plans, config["inherits_from"])
        parent.update(config)
        config = parent
    return config


def network_from_plans(architecture: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
    """What nnunetv2.utilities.get_network_from_plans does: locate the dotted classes, build, initialise."""
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls = pydoc.locate(architecture["network_class_name"])
    network = cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=deep_supervision, **kwargs)
    network.apply(network.initialize)
    return network


def restated_load_pretrained_weights(network: torch.nn.Module, fname: str | Path) -> list[str]:
    """nnU-Net v2's ``load_pretrained_weights`` rules, written out slowly: the file is read with torch's default
    loader (weights_only=True since torch 2.6, nnU-Net < 2.6 did not pass the argument); every network key without
    ".seg_layers." must be in ``network_weights`` with the same shape, otherwise an AssertionError names it; then
    every such key is copied. Returns the copied keys."""
    pretrained = torch.load(fname, weights_only=True)["network_weights"]
    model = network.state_dict()
    for key in model:
        if ".seg_layers." in key:
            continue
        assert key in pretrained, f"Key {key} is missing in the pretrained model weights."
        assert model[key].shape == pretrained[key].shape, f"The shape of the parameters of key {key} is not the same."
    copied = {k: v for k, v in pretrained.items() if k in model and ".seg_layers." not in k}
    model.update(copied)
    network.load_state_dict(model)
    return sorted(copied)


def randomise(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Arbitrary weights (stand-in for training): every tensor drawn anew, so that no symmetry hides a bug."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    return network


def write_results(
    folder: Path, plans: dict, configuration: str, network: torch.nn.Module, dataset: dict | None = None,
    fold: int | str = 0, trainer: str = "nnUNetTrainer",
) -> Path:
    """An nnU-Net v2 results folder ``<trainer>__<plans>__<configuration>`` with plans.json, dataset.json and
    ``fold_<f>/checkpoint_final.pth`` holding what nnUNetTrainer.save_checkpoint writes (numpy floats in the log,
    a torch.device in the init arguments)."""
    results = folder / DATASET / f"{trainer}__{plans['plans_name']}__{configuration}"
    (results / f"fold_{fold}").mkdir(parents=True)
    (results / "plans.json").write_text(json.dumps(plans))
    dataset = dataset or dataset_json()
    (results / "dataset.json").write_text(json.dumps(dataset))
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [0.5, 0.51],
                    "dice_per_class_or_region": [[np.float64(0.4), np.float32(0.7)]]},
        "_best_ema": np.float64(0.51),
        "current_epoch": 2,
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                      "device": torch.device("cpu")},
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, results / f"fold_{fold}" / "checkpoint_final.pth")
    return results
