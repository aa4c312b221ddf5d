"""A model trained in nnU-Net v2 -> a MONAI model-zoo bundle: the bundle's network computes what nnU-Net's network
computes (on nnU-Net's axis order), the inference config carries nnU-Net's spacing, patch size, normalisation and
labels, and what the bundle cannot run is refused with the file and the value."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from custom_nets.export.inference_config import normalisation_transforms
from custom_nets.export.nnunet_import import import_nnunet, model_info_from_nnunet, ras_axes
from custom_nets.export.nnunet_plans import S3D_CONFIGURATION, s3d_plans
from nnunet_helpers import DATASET, dataset_json, network_from_plans, plain_plans, randomise, resolve, write_results

pytest.importorskip("dynamic_network_architectures.architectures.unet")

RESULTS = f"nnUNetTrainer__nnUNetPlans_s3d__{S3D_CONFIGURATION}"


def _plans(reader="SimpleITKIO", transpose=(0, 1, 2), spacing=None, patch=None, schemes=None, masks=None) -> dict:
    """Plans as ``nnunet_plans`` writes them for the tiny preset (32^3), with the entries a test changes."""
    plans = s3d_plans(plain_plans(), "tiny", "nnUNetPlans_s3d", patch_size=32)
    plans["image_reader_writer"] = reader
    plans["transpose_forward"] = list(transpose)
    entry = plans["configurations"][S3D_CONFIGURATION]
    for key, value in (("spacing", spacing), ("patch_size", patch), ("normalization_schemes", schemes), ("use_mask_for_norm", masks)):
        if value is not None:
            entry[key] = value
    return plans


def _results_without_weights(tmp_path: Path, plans: dict, dataset: dict | None = None, configuration=S3D_CONFIGURATION) -> Path:
    folder = tmp_path / DATASET / f"nnUNetTrainer__{plans['plans_name']}__{configuration}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset or dataset_json()))
    return folder


def _bundle_network(bundle: Path) -> torch.nn.Module:
    """The exported bundle's own network: scripts/resenc.py with the inference config's arguments and model.pt."""
    spec = importlib.util.spec_from_file_location("imported_bundle_resenc", bundle / "scripts" / "resenc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    kwargs = {k: config["network_def"][k] for k in ("features", "strides", "blocks_per_stage", "decoder_convs_per_stage")}
    network = module.ResEncUNet(config["in_channels"], len(config["labels"]), **kwargs)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True), strict=True)
    return network.eval()


@pytest.fixture(scope="module", params=[("SimpleITKIO", (0, 1, 2)), ("NibabelIOWithReorient", (1, 0, 2))], ids=["sitk", "transposed"])
def imported(request, tmp_path_factory):
    """(bundle folder, nnU-Net's inference network, RAS axis of each nnU-Net axis, the plans)."""
    reader, transpose = request.param
    plans = _plans(reader, transpose, spacing=[0.8, 3.0, 1.0], patch=[16, 24, 32])
    architecture = resolve(plans, S3D_CONFIGURATION)["architecture"]
    trained = randomise(network_from_plans(architecture, 2, 3, deep_supervision=True))
    tmp = tmp_path_factory.mktemp("nnunet")
    results = write_results(tmp / "results", plans, S3D_CONFIGURATION, trained)
    bundle = import_nnunet(results, tmp / "zoo", fold=0, name="brain_nnunet", version="1.2.3")
    inference = network_from_plans(architecture, 2, 3, deep_supervision=False)
    inference.load_state_dict(trained.state_dict())
    axes = {(0, 1, 2): (2, 1, 0), (1, 0, 2): (1, 2, 0)}[transpose]  # by hand: sitk order (z, y, x), transposed
    return bundle, inference.eval(), axes, plans


def test_bundle_network_equals_nnunet_network(imported):
    bundle, nnunet, axes, _ = imported
    ours = _bundle_network(bundle)
    x = torch.randn(1, 2, 16, 24, 32, generator=torch.Generator().manual_seed(1))  # RAS (x, y, z)
    to_nnunet = (0, 1, *[2 + a for a in axes])  # nnU-Net axis j is RAS axis axes[j]
    back = (0, 1, *[2 + axes.index(a) for a in range(3)])
    with torch.no_grad():
        expected = nnunet(x.permute(to_nnunet)).permute(back)
        got = ours(x)
        unpermuted = nnunet(x)  # what a bundle without the axis mapping would compute
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - unpermuted).abs().max() > 1e-2  # the mapping matters: this test would see it missing


def test_inference_config_holds_nnunet_preprocessing_in_ras_order(imported):
    bundle, _, axes, _ = imported
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    # plans spacing [0.8, 3.0, 1.0] / patch [16, 24, 32] on nnU-Net's axes, put on the RAS axes by hand
    expected_spacing, expected_patch = {(2, 1, 0): ([1.0, 3.0, 0.8], [32, 24, 16]), (1, 2, 0): ([1.0, 0.8, 3.0], [32, 16, 24])}[axes]
    assert config["spacing"] == expected_spacing and config["patch_size"] == expected_patch
    assert config["labels"] == {"0": "background", "1": "lesion", "2": "ventricles"}
    assert config["modalities"] == ["T1", "FLAIR"] and config["in_channels"] == 2
    assert config["network_def"]["features"] == [4, 8, 12, 16] and config["network_def"]["blocks_per_stage"] == [1, 2, 2, 1]
    assert {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True} in config["preprocessing"]["transforms"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == "1.2.3" and meta["changelog"] == {"1.2.3": "imported from nnU-Net v2"}
    assert meta["name"] == f"nnU-Net v2 ResEnc U-Net ({DATASET}, {S3D_CONFIGURATION}, fold 0)"
    assert meta["data_source"] == (
        f"{DATASET}, trained with nnU-Net v2 (trainer nnUNetTrainer, plans nnUNetPlans_s3d, configuration "
        "3d_fullres_s3d, fold 0)"
    )
    assert meta["references"][0].startswith("Isensee, F., Jaeger, P. F.")
    assert (bundle.parent / "brain_nnunet_v1.2.3.zip").is_file()


def test_ras_axes_by_hand():
    assert ras_axes({"image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2]}, {}) == (2, 1, 0)
    assert ras_axes({"image_reader_writer": "NibabelIO", "transpose_forward": [2, 0, 1]}, {}) == (0, 2, 1)
    overwritten = {"overwrite_image_reader_writer": "Tiff3DIO"}
    with pytest.raises(ValueError, match="uses image_reader_writer 'Tiff3DIO'"):
        ras_axes({"image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2]}, overwritten)


@pytest.mark.parametrize(
    "schemes,masks,expected",
    [
        (["ZScoreNormalization"] * 2, [True, True], {"modality": "mri"}),
        (["ZScoreNormalization"] * 2, [False, False], {"modality": "mri", "nonzero": False}),
        (["CTNormalization"] * 2, [False, False], {"modality": "ct", "statistics": {"channels": [
            {"low": -50.0, "high": 400.0, "mean": 100.0, "std": 20.0},
            {"low": -50.0, "high": 401.0, "mean": 101.0, "std": 20.0}]}}),
    ],
    ids=["zscore_mask", "zscore", "ct"],
)
def test_normalisation_schemes(tmp_path, schemes, masks, expected):
    info, _ = model_info_from_nnunet(_results_without_weights(tmp_path, _plans(schemes=schemes, masks=masks)))
    assert info["normalisation"] == expected


def test_zscore_without_mask_normalises_every_voxel():
    assert normalisation_transforms({"modality": "mri", "nonzero": False}) == [
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False, "channel_wise": True}
    ]


def test_ignore_label_is_dropped(tmp_path):
    dataset = dataset_json(labels={"background": 0, "lesion": 1, "ventricles": 2, "ignore": 3})
    info, _ = model_info_from_nnunet(_results_without_weights(tmp_path, _plans(), dataset))
    assert info["labels"] == {"0": "background", "1": "lesion", "2": "ventricles"}


def _refused(tmp_path, plans=None, dataset=None, configuration=S3D_CONFIGURATION) -> str:
    folder = _results_without_weights(tmp_path, plans or _plans(), dataset, configuration)
    with pytest.raises(ValueError) as error:
        model_info_from_nnunet(folder)
    return str(error.value)


def test_unsupported_models_are_refused_naming_file_and_value(tmp_path):
    plans_file = "plans.json configuration"
    message = _refused(tmp_path / "plain", plain_plans(), configuration="3d_fullres")
    assert plans_file in message and "'3d_fullres' builds network_class_name 'dynamic_network_architectures.architectures.unet.PlainConvUNet'" in message

    cascade = _plans()
    cascade["configurations"][S3D_CONFIGURATION]["previous_stage"] = "3d_lowres"
    assert "is a cascade stage (previous_stage '3d_lowres')" in _refused(tmp_path / "cascade", cascade)

    two_d = _plans()
    two_d["configurations"][S3D_CONFIGURATION]["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv2d"
    assert "has conv_op 'torch.nn.modules.conv.Conv2d' (a 2D configuration)" in _refused(tmp_path / "2d", two_d)

    anisotropic = _plans()
    anisotropic["configurations"][S3D_CONFIGURATION]["architecture"]["arch_kwargs"]["strides"] = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert "has strides [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]; the bundle's network needs the same stride on every axis" in _refused(tmp_path / "aniso", anisotropic)

    wider = _plans()
    wider["configurations"][S3D_CONFIGURATION]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 24, 32]
    assert "features [8, 16, 24, 32], strides [1, 2, 2, 2], blocks [1, 2, 2, 1], decoder convs [1, 1, 1], which is none of our presets" in _refused(tmp_path / "wide", wider)

    regions = dataset_json(labels={"background": 0, "whole": [1, 2], "core": 2})
    assert "dataset.json defines regions" in _refused(tmp_path / "regions", _plans(), regions)

    mixed = _plans(schemes=["CTNormalization", "ZScoreNormalization"], masks=[False, False])
    assert "has normalization_schemes ['CTNormalization', 'ZScoreNormalization'] with use_mask_for_norm [False, False]" in _refused(tmp_path / "mixed", mixed)


def test_checkpoints_that_do_not_fit_or_pickle_code_are_refused(tmp_path):
    plans = _plans()
    architecture = resolve(plans, S3D_CONFIGURATION)["architecture"]
    four_classes = network_from_plans(architecture, 2, 4)  # dataset.json has 3 labels
    results = write_results(tmp_path / "results", plans, S3D_CONFIGURATION, four_classes)
    with pytest.raises(ValueError, match="fold_0/checkpoint_final.pth does not fit the network of .*plans.json configuration '3d_fullres_s3d' \\(2 channels, 3 labels\\): 0 tensors missing, 6 with another shape"):
        import_nnunet(results, tmp_path / "zoo")
    with pytest.raises(FileNotFoundError, match="fold_3/checkpoint_final.pth does not exist \\(folds present: \\['fold_0'\\]\\)"):
        import_nnunet(results, tmp_path / "zoo", fold=3)
    checkpoint = torch.load(results / "fold_0" / "checkpoint_final.pth", weights_only=False)
    checkpoint["trainer"] = copy.Error("a pickled Python object")  # any class outside numpy's data types
    torch.save(checkpoint, results / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ValueError, match="cannot be read with weights_only=True \\(copy.Error\\)"):
        import_nnunet(results, tmp_path / "zoo")


@pytest.mark.slow
def test_command_line_import(tmp_path):
    import subprocess
    import sys

    plans = _plans()
    network = randomise(network_from_plans(resolve(plans, S3D_CONFIGURATION)["architecture"], 2, 3))
    results = write_results(tmp_path / "results", plans, S3D_CONFIGURATION, network, fold="all")
    done = subprocess.run(
        [sys.executable, "-m", "custom_nets", "import_nnunet", str(results), str(tmp_path / "zoo"), "--fold", "all",
         "--name", "brain"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(tmp_path / "zoo" / "brain")
    exported = torch.load(tmp_path / "zoo" / "brain" / "models" / "model.pt", weights_only=True)
    kernel = network.state_dict()["encoder.stem.convs.0.conv.weight"]  # SimpleITK order: z and x swap
    torch.testing.assert_close(exported["encoder.stem.convs.0.conv.weight"], kernel.permute(0, 1, 4, 3, 2), rtol=0, atol=0)


def test_resenc_l_as_nnunets_planner_writes_it_is_our_preset():
    from custom_nets.export.nnunet_import import bundle_preset

    planner = {  # nnUNetPlannerResEncL's architecture entry for isotropic data (tuples become JSON lists)
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
            "n_conv_per_stage_decoder": [1, 1, 1, 1, 1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    assert bundle_preset(planner, "plans.json") == "resenc_l"
    planner["arch_kwargs"]["nonlin_kwargs"] = {"inplace": True, "negative_slope": 0.2}
    with pytest.raises(ValueError, match="plans.json has nonlin_kwargs=\\{'inplace': True, 'negative_slope': 0.2\\}"):
        bundle_preset(planner, "plans.json")
