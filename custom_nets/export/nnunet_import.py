"""A model trained with nnU-Net v2 as a MONAI model-zoo bundle, through the same exporter as our fine-tuning runs.

An nnU-Net results folder (``$nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>/``) holds
``plans.json``, ``dataset.json`` and ``fold_<f>/checkpoint_final.pth``. ``import_nnunet`` reads them, writes the
run folder that ``custom_nets.export.export_bundle`` expects (``models/model.pt`` + ``models/model_info.json``)
into a temporary folder and exports it, so the bundle has exactly the layout of an exported fine-tuning run.

What is taken from nnU-Net, and how:

* network: the configuration's ``ResidualEncoderUNet`` when it is one of our presets (3x3x3 kernels, the same
  stride on every axis; ``3d_fullres_s3d`` from ``python -m custom_nets nnunet_plans`` always is). Anything else
  is refused with the file and the value: PlainConvUNet, other blocks, 2D, the cascade, anisotropic strides.
* axis order: nnU-Net feeds the network the image array as its NIfTI readers return it (z, y, x: SimpleITK's
  order, which its nibabel readers copy), transposed by the plans' ``transpose_forward``; the bundle feeds it in
  RAS order (x, y, z). The conv kernels are permuted accordingly, which for isotropic kernels and strides gives
  exactly the nnU-Net network on the permuted input (for images whose voxel axes are the RAS axes up to flips, as
  in axial scans; the "WithReorient" readers make that so in nnU-Net). Spacing and patch size are permuted the
  same way.
* intensity normalisation: ``ZScoreNormalization`` (with ``use_mask_for_norm``: over the non-zero voxels, else
  over the whole cropped image) or ``CTNormalization`` with the plans' foreground statistics (0.5 / 99.5
  percentiles, mean, std), the same for every channel; other schemes are refused.
* labels and channel names: dataset.json (``labels`` name -> value, ``channel_names``); region-based training
  is refused, an ``ignore`` label is dropped (nnU-Net predicts no channel for it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from custom_nets.export.inference_config import network_kwargs
from custom_nets.export.nnunet_plans import resolve_configuration
from custom_nets.export.package import _REPO_BUNDLE, export_bundle, state_dict_mismatches
from custom_nets.nets.resenc import PRESETS
from custom_nets.transfer import nnssl_arch_kwargs as _nnssl_arch_kwargs

__all__ = [
    "READER_AXES",
    "read_nnunet_checkpoint",
    "bundle_preset",
    "ras_axes",
    "permute_spatial",
    "model_info_from_nnunet",
    "import_nnunet",
]

logger = logging.getLogger(__name__)

#: For each nnU-Net image reader of NIfTI files: the RAS axis (0 = x, 1 = y, 2 = z) of each axis of the array it
#: returns. All of them return SimpleITK's (z, y, x) order (nnunetv2/imageio).
READER_AXES = {
    "SimpleITKIO": (2, 1, 0),
    "SimpleITKIOWithReorient": (2, 1, 0),
    "NibabelIO": (2, 1, 0),
    "NibabelIOWithReorient": (2, 1, 0),
}
#: nnU-Net's defaults for the network arguments that plans may leave out.
_ARCH_DEFAULTS = {"dropout_op": None, "dropout_op_kwargs": None, "stem_channels": None, "block": None, "bottleneck_channels": None}
#: arch_kwargs whose value must equal our network's (compared after normalising the dotted names).
_FIXED_KWARGS = ("conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "nonlin", "nonlin_kwargs")
_CLASS_ALIASES = {  # the dotted names nnU-Net writes -> the ones dna_kwargs produces
    "torch.nn.LeakyReLU": "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.InstanceNorm3d": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "torch.nn.Conv3d": "torch.nn.modules.conv.Conv3d",
}
_REFUSED = "only 3D ResidualEncoderUNet configurations of one of our presets become a bundle"
_PLANS_HINT = "train with the configuration that `python -m custom_nets nnunet_plans` writes (3d_fullres_s3d)"
NNUNET_REFERENCES = [
    "Isensee, F., Jaeger, P. F., Kohl, S. A. A., Petersen, J., Maier-Hein, K. H. nnU-Net: a self-configuring method "
    "for deep learning-based biomedical image segmentation. Nature Methods 18, 203-211 (2021). "
    "https://doi.org/10.1038/s41592-020-01008-z",
    "Isensee, F., et al. nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation. MICCAI "
    "2024. https://arxiv.org/abs/2404.09556",
]


# --------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass an nnU-Net v2 results folder "
            "($nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>) holding plans.json and dataset.json."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); copy it again from the nnU-Net results.") from err


def _numpy_globals() -> list:
    """The numpy types an nnU-Net checkpoint pickles (logged Dice values are numpy floats): data, never code."""
    import numpy as np
    import numpy.dtypes as dtypes

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Any] = [core.scalar, core._reconstruct, np.ndarray, np.dtype]
    # checkpoints written with numpy 1.x name the module numpy.core
    allowed += [(core.scalar, "numpy.core.multiarray.scalar"), (core._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def read_nnunet_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of an nnU-Net checkpoint, allowing numpy numbers and nothing else."""
    if not path.is_file():
        folds = sorted(p.name for p in path.parent.parent.glob("fold_*")) if path.parent.parent.is_dir() else []
        raise FileNotFoundError(
            f"{path} does not exist (folds present: {folds or 'none'}); pass --fold (and --checkpoint_name, e.g. "
            "checkpoint_best.pth) of a finished training."
        )
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for refused or damaged files
        found = re.search(r"GLOBAL (\S+)", str(error))
        raise ValueError(
            f"{path} cannot be read with weights_only=True ({found.group(1) if found else type(error).__name__}): it "
            "is not a plain nnU-Net checkpoint, or it is damaged. If you trust its source, keep only the weights: "
            f"c = torch.load('{path}', weights_only=False); torch.save({{'network_weights': c['network_weights']}}, "
            f"'{path}')."
        ) from error
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("network_weights"), Mapping):
        keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"{path} has no 'network_weights' (found {keys}); it is not an nnU-Net v2 checkpoint.")
    return dict(checkpoint)


# --------------------------------------------------------------------------------------------- network


def _dotted(value: Any) -> Any:
    return _CLASS_ALIASES.get(value, value) if isinstance(value, str) else value


def _per_stage(values: Any, n: int) -> list[list[int]] | None:
    """Kernel sizes / strides as n lists of 3 ints, or None when they are not of that form."""
    if isinstance(values, int):
        values = [values] * n
    try:
        out = [[int(v)] * 3 if isinstance(v, int) else [int(x) for x in v] for v in values]
    except TypeError:
        return None
    return out if len(out) == n and all(len(v) == 3 for v in out) else None


def bundle_preset(architecture: Mapping, where: str) -> str:
    """The preset of ``custom_nets.nets.PRESETS`` that an nnU-Net configuration's ``architecture`` builds.

    Args:
        architecture: the configuration's ``architecture`` entry (``network_class_name``, ``arch_kwargs``).
        where: "<plans file> configuration '<name>'", for messages.

    Raises:
        ValueError: another network (class, 2D, kernels, strides, blocks, norm ...) or no preset; the message
            names the value and what is supported.
    """
    cls = str((architecture or {}).get("network_class_name", ""))
    if cls.rsplit(".", 1)[-1] != "ResidualEncoderUNet":
        raise ValueError(
            f"{where} builds network_class_name '{cls or 'none'}'; {_REFUSED} (this project's network). Plain "
            f"U-Nets (PlainConvUNet, nnU-Net's default plans) are not supported: {_PLANS_HINT}."
        )
    kw = {**_ARCH_DEFAULTS, **dict(architecture.get("arch_kwargs") or {})}
    conv = str(kw.get("conv_op"))
    if not conv.endswith("Conv3d"):
        raise ValueError(f"{where} has conv_op '{conv}' (a 2D configuration); {_REFUSED}.")
    for key in ("block", "bottleneck_channels", "stem_channels"):
        if kw[key] is not None and not (key == "block" and str(kw[key]).endswith("BasicBlockD")):
            raise ValueError(f"{where} sets {key}={kw[key]!r}; {_REFUSED} (BasicBlockD, stem as wide as stage 0).")
    n = int(kw.get("n_stages", 0))
    kernels, strides = _per_stage(kw.get("kernel_sizes"), n), _per_stage(kw.get("strides"), n)
    if kernels is None or any(k != [3, 3, 3] for k in kernels):
        raise ValueError(
            f"{where} has kernel_sizes {kw.get('kernel_sizes')}; the bundle's network (scripts/resenc.py) uses "
            f"3x3x3 kernels in every stage. {_PLANS_HINT}."
        )
    if strides is None or any(len(set(s)) != 1 for s in strides):
        raise ValueError(
            f"{where} has strides {kw.get('strides')}; the bundle's network needs the same stride on every axis "
            f"(anisotropic plans are not supported). {_PLANS_HINT}."
        )
    found = {
        "features_per_stage": [int(f) for f in kw.get("features_per_stage", [])],
        "strides": [s[0] for s in strides],
        "n_blocks_per_stage": [int(b) for b in _as_list(kw.get("n_blocks_per_stage"), n)],
        "n_conv_per_stage_decoder": [int(c) for c in _as_list(kw.get("n_conv_per_stage_decoder"), n - 1)],
    }
    for preset in PRESETS:
        ours = _nnssl_arch_kwargs(preset)
        same = {
            "features_per_stage": ours["features_per_stage"],
            "strides": [s[0] for s in ours["strides"]],
            "n_blocks_per_stage": ours["n_blocks_per_stage"],
            "n_conv_per_stage_decoder": ours["n_conv_per_stage_decoder"],
        } == found
        if not same:
            continue
        different = [k for k in _FIXED_KWARGS if _dotted(kw.get(k)) != _dotted(ours.get(k)) and not _equal_nonlin(k, kw, ours)]
        if different:
            shown = ", ".join(f"{k}={kw.get(k)!r} (ours {ours.get(k)!r})" for k in different)
            raise ValueError(f"{where} has {shown}; {_REFUSED}.")
        return preset
    presets = "; ".join(f"{p}: features {list(v['features'])}, blocks {list(v['blocks_per_stage'])}" for p, v in PRESETS.items())
    raise ValueError(
        f"{where} is a ResidualEncoderUNet with features {found['features_per_stage']}, strides {found['strides']}, "
        f"blocks {found['n_blocks_per_stage']}, decoder convs {found['n_conv_per_stage_decoder']}, which is none of "
        f"our presets ({presets}). {_PLANS_HINT}, or add the network to PRESETS in custom_nets/nets/resenc.py."
    )


def _as_list(value: Any, n: int) -> list:
    return [value] * n if isinstance(value, int) else list(value or [])


def _equal_nonlin(key: str, kw: Mapping, ours: Mapping) -> bool:
    """LeakyReLU kwargs that only spell out the default slope (0.01) are the same nonlinearity."""
    if key != "nonlin_kwargs":
        return False
    theirs = dict(kw.get(key) or {})
    return theirs.pop("negative_slope", 0.01) == 0.01 and theirs == dict(ours.get(key) or {})


def ras_axes(plans: Mapping, dataset: Mapping, source: str = "plans.json") -> tuple[int, int, int]:
    """The RAS axis (0 = x, 1 = y, 2 = z) of each spatial axis of the nnU-Net network's input.

    nnU-Net's network axis j is axis ``transpose_forward[j]`` of the array its reader returns; ``READER_AXES``
    gives that axis's RAS axis for the readers of NIfTI files.

    Raises:
        ValueError: another reader (the bundle reads NIfTI) or a bad ``transpose_forward``.
    """
    reader = dataset.get("overwrite_image_reader_writer") or plans.get("image_reader_writer") or "SimpleITKIO"
    if reader not in READER_AXES:
        raise ValueError(
            f"{source} uses image_reader_writer '{reader}'; the bundle reads NIfTI in RAS order, and the axis order "
            f"is known only for {sorted(READER_AXES)}."
        )
    forward = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    if sorted(forward) != [0, 1, 2]:
        raise ValueError(f"{source} has transpose_forward {forward}; expected a permutation of [0, 1, 2].")
    base = READER_AXES[reader]
    return tuple(base[a] for a in forward)  # type: ignore[return-value]


def permute_spatial(state: Mapping[str, torch.Tensor], axes: Sequence[int]) -> dict[str, torch.Tensor]:
    """Conv kernels of a network for input axis order ``axes`` -> the same network for RAS order.

    ``axes[j]`` is the RAS axis of the network's input axis j. Every 3D kernel (O, I, k0, k1, k2) gets its
    spatial dimensions reordered so that the returned network applied to an RAS volume x equals the original
    network applied to x with its axes in the original order, with the output's axes put back (exact for
    isotropic kernels and strides; norms, biases and 1x1 kernels are unchanged).
    """
    inverse = [list(axes).index(a) for a in range(3)]
    order = (0, 1, *[2 + j for j in inverse])
    return {k: v.permute(order).contiguous() if v.ndim == 5 else v for k, v in state.items()}


# --------------------------------------------------------------------------------------------- model info


def _labels(dataset: Mapping, source: str) -> dict[str, str]:
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{source} has no 'labels' (name -> value); it is not an nnU-Net v2 dataset.json.")
    if dataset.get("regions_class_order") is not None or any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ValueError(
            f"{source} defines regions (labels with lists of values / regions_class_order): the network has one "
            "sigmoid per region, the bundle takes the argmax of softmax classes. Region-based models are not supported."
        )
    values = {int(v): str(k) for k, v in labels.items() if str(k) != "ignore"}
    if sorted(values) != list(range(len(values))):
        raise ValueError(f"{source} labels {dict(labels)} are not the consecutive values 0..{len(values) - 1}.")
    return {str(v): values[v] for v in sorted(values)}


def _normalisation(config: Mapping, plans: Mapping, n_channels: int, where: str) -> dict:
    schemes = list(config.get("normalization_schemes") or [])
    masks = list(config.get("use_mask_for_norm") or [False] * len(schemes))
    if len(schemes) != n_channels:
        raise ValueError(f"{where} has {len(schemes)} normalization_schemes for {n_channels} channels.")
    if set(schemes) == {"ZScoreNormalization"} and len(set(masks)) == 1:
        return {"modality": "mri"} if masks[0] else {"modality": "mri", "nonzero": False}
    if set(schemes) == {"CTNormalization"}:
        stats = plans.get("foreground_intensity_properties_per_channel") or plans.get(
            "foreground_intensity_properties_by_modality"
        )
        try:
            channels = [
                {"low": float(s["percentile_00_5"]), "high": float(s["percentile_99_5"]), "mean": float(s["mean"]),
                 "std": float(s["std"])}
                for s in (stats[str(c)] for c in range(n_channels))
            ]
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"plans.json lacks the CT statistics of foreground_intensity_properties_per_channel ({err}); plan "
                "the dataset again with nnU-Net v2."
            ) from err
        return {"modality": "ct", "statistics": {"channels": channels}}
    raise ValueError(
        f"{where} has normalization_schemes {schemes} with use_mask_for_norm {masks}; the bundle supports one scheme "
        "for all channels: ZScoreNormalization (same use_mask_for_norm everywhere) or CTNormalization."
    )


def model_info_from_nnunet(results_folder: str | os.PathLike, configuration: str | None = None) -> tuple[dict, dict]:
    """The ``model_info.json`` of the bundle, and what else the import needs, from an nnU-Net results folder.

    Args:
        results_folder: ``$nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>``.
        configuration: the configuration name. Defaults to the last ``__`` part of the folder name.

    Returns:
        (model_info, context) with context keys "preset", "axes" (``ras_axes``), "dataset_name", "trainer",
        "plans_name", "configuration".
    """
    folder = Path(results_folder)
    parts = folder.name.split("__")
    if configuration is None:
        if len(parts) != 3:
            raise ValueError(
                f"cannot tell the configuration from the folder name '{folder.name}' (nnU-Net names it "
                "<trainer>__<plans>__<configuration>); pass --configuration."
            )
        configuration = parts[2]
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = _read_json(plans_path), _read_json(dataset_path)
    where = f"{plans_path} configuration '{configuration}'"
    config = resolve_configuration(plans, configuration, str(plans_path))
    if config.get("previous_stage"):
        raise ValueError(
            f"{where} is a cascade stage (previous_stage '{config['previous_stage']}'): its network also needs the "
            "low-resolution segmentation as input. Cascades are not supported; import a 3d_fullres model."
        )
    preset = bundle_preset(config.get("architecture") or {}, where)
    channels = dataset.get("channel_names") or dataset.get("modality")
    if not isinstance(channels, Mapping) or not channels:
        raise ValueError(f"{dataset_path} has no 'channel_names'; it is not an nnU-Net v2 dataset.json.")
    modalities = [str(channels[k]) for k in sorted(channels, key=int)]
    axes = ras_axes(plans, dataset, str(plans_path))
    inverse = [axes.index(a) for a in range(3)]
    spacing, patch = list(config.get("spacing") or []), list(config.get("patch_size") or [])
    if len(spacing) != 3 or len(patch) != 3:
        raise ValueError(f"{where} has spacing {spacing} and patch_size {patch}; expected 3 values each (3D).")
    info = {
        "network_preset": preset,
        "num_channels": len(modalities),
        "modalities": modalities,
        "labels": _labels(dataset, str(dataset_path)),
        "spacing": [float(spacing[j]) for j in inverse],
        "normalisation": _normalisation(config, plans, len(modalities), where),
        "patch_size": [int(patch[j]) for j in inverse],
        "pretrained_checkpoint": None,
        "schedule": f"nnU-Net v2 {parts[0] if len(parts) == 3 else 'trainer'}",
    }
    context = {
        "preset": preset,
        "axes": axes,
        "dataset_name": str(plans.get("dataset_name") or folder.parent.name),
        "trainer": parts[0] if len(parts) == 3 else "unknown",
        "plans_name": str(plans.get("plans_name") or (parts[1] if len(parts) == 3 else "unknown")),
        "configuration": configuration,
    }
    return info, context


# --------------------------------------------------------------------------------------------- export


def _check_weights(state: Mapping[str, torch.Tensor], info: Mapping, checkpoint: Path, where: str) -> None:
    """Refuse weights that do not fit the configuration (e.g. a trainer that changes the network)."""
    from custom_nets.export.bundle_scripts.resenc import ResEncUNet

    expected = ResEncUNet(info["num_channels"], len(info["labels"]), **network_kwargs(info["network_preset"])).state_dict()
    missing, wrong = state_dict_mismatches(expected, state)
    if missing or wrong:
        raise ValueError(
            f"{checkpoint} does not fit the network of {where} ({info['num_channels']} channels, "
            f"{len(info['labels'])} labels): {len(missing)} tensors missing, {len(wrong)} with another shape (e.g. "
            f"{(wrong + missing)[:2]}). The trainer probably changed the network; only trainers that train the plans' "
            "ResidualEncoderUNet unchanged can be imported."
        )


def _source_bundle(folder: Path, context: Mapping, fold: str) -> Path:
    """A stand-in for the fine-tuning bundle whose metadata (authors, references, intended use) and logging.conf
    the exporter reuses: nnU-Net's references, and the nnU-Net dataset and training as the data source."""
    base = Path(_REPO_BUNDLE)
    meta_file = base / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: run from a checkout of the repository (pip install -e .).")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta.update(
        changelog={},
        data_source=(
            f"{context['dataset_name']}, trained with nnU-Net v2 (trainer {context['trainer']}, plans "
            f"{context['plans_name']}, configuration {context['configuration']}, fold {fold})"
        ),
        references=list(NNUNET_REFERENCES),
    )
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    if (base / "configs" / "logging.conf").is_file():
        shutil.copyfile(base / "configs" / "logging.conf", folder / "configs" / "logging.conf")
    return folder


def import_nnunet(
    results_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    fold: int | str = 0,
    name: str | None = None,
    version: str = "0.1.0",
    changelog: str = "imported from nnU-Net v2",
    checkpoint_name: str = "checkpoint_final.pth",
    configuration: str | None = None,
    large_files_url: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a trained nnU-Net v2 model as ``<output_dir>/<name>/`` and ``<name>_v<version>.zip``.

    Args:
        results_folder: ``$nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>``.
        output_dir: where the bundle folder and zip are written.
        fold: the fold whose weights are exported (``fold_<fold>``; 0-4 or "all"). Defaults to 0.
        name: bundle name (letters, digits, underscores). Defaults to ``<dataset>_<configuration>``.
        version: release version, MAJOR.MINOR.PATCH. Defaults to "0.1.0".
        changelog: one line for this version.
        checkpoint_name: the file in the fold folder. Defaults to "checkpoint_final.pth".
        configuration: the configuration. Defaults to the last ``__`` part of the folder name.
        large_files_url: see ``export_bundle``.
        overwrite: replace an existing export of the same name. Defaults to False.

    Returns:
        The bundle folder.
    """
    folder = Path(results_folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"nnU-Net results folder {folder} does not exist; pass "
            "$nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>."
        )
    info, context = model_info_from_nnunet(folder, configuration)
    checkpoint_path = folder / f"fold_{fold}" / checkpoint_name
    checkpoint = read_nnunet_checkpoint(checkpoint_path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint["network_weights"].items()}
    where = f"{folder / 'plans.json'} configuration '{context['configuration']}'"
    _check_weights(state, info, checkpoint_path, where)
    state = permute_spatial(state, context["axes"])
    name = name or re.sub(r"[^A-Za-z0-9_]", "_", f"{context['dataset_name']}_{context['configuration']}")
    mirror = checkpoint.get("inference_allowed_mirroring_axes")
    if mirror is not None and sorted({context["axes"][int(a)] for a in mirror}) != [0, 1, 2]:
        logger.warning(
            "nnU-Net mirrors only axes %s of this model at inference; run the bundle with --mirror_axes \"%s\".",
            list(mirror), sorted({context["axes"][int(a)] for a in mirror}),
        )
    with tempfile.TemporaryDirectory(prefix="nnunet_import_") as tmp:
        run = Path(tmp) / "run"
        (run / "models").mkdir(parents=True)
        torch.save(state, run / "models" / "model.pt")
        (run / "models" / "model_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        target = export_bundle(
            run, output_dir, name=name, version=version, changelog=changelog,
            source_bundle=_source_bundle(Path(tmp) / "source", context, str(fold)), large_files_url=large_files_url,
            overwrite=overwrite, evaluation_summary=False,
            title=f"nnU-Net v2 ResEnc U-Net ({context['dataset_name']}, {context['configuration']}, fold {fold})",
        )
    logger.info(
        "imported %s fold %s (preset '%s', RAS axes of nnU-Net's axes %s) as %s",
        folder, fold, context["preset"], list(context["axes"]), target,
    )
    return target
