"""The preprocessing chain, defined once: RAS orientation -> crop to the non-zero box -> normalisation -> spacing.

Every image the networks see passes through this chain, whoever runs it:

* the pre-training cache (``custom_nets.data.case``: image plus optional masks, MRI normalisation);
* the fine-tuning cache (the same module: image plus label, MRI or CT normalisation);
* evaluation and inference (``bundles/s3d_finetune/configs/evaluate.yaml`` and ``inference.yaml`` use
  ``preprocessing_chain`` as a ``_target_``; MONAI's ``Invertd`` maps the predictions back through it);
* the exported MONAI-only bundles (``custom_nets.export`` writes ``chain_config(..., portable=True)`` into their
  configs, so they need nothing of this package).

The steps, all MONAI transforms (``keys`` = the image key first, then labels or masks):

1. ``Orientationd(axcodes="RAS")``: every volume has the same axis directions;
2. ``CropForegroundd`` to the bounding box of the voxels that are non-zero in any image channel (label and masks
   cropped alike): drops the empty field of view around heads and skull-stripped brains;
3. intensity normalisation of the image (``normalisation_config``): MRI: z-score per channel over the non-zero
   voxels, zeros stay 0 (nnU-Net's mask-based normalisation for skull-stripped brains); CT: clip every channel to
   the dataset window, then z-score with the dataset's foreground mean and std (nnU-Net's CT normalisation);
4. ``Spacingd`` to the target spacing in mm: bilinear for the image, nearest for labels and masks.

The chain is kept as MONAI transform configs (``chain_config``) and instantiated from them (``preprocessing_chain``),
so the project and the exported bundles run the same transforms with the same settings. Two leaf functions have two
forms: a picklable function of this module (DataLoader workers started by *spawn* pickle the transforms) and, with
``portable=True``, a ``$`` expression for a bundle without this package.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

__all__ = ["MIN_STD", "RAS_LABELS", "ClipChannels", "NormaliseIntensityd", "chain_config", "nonzero",
           "normalisation_config", "preprocessing_chain"]

#: Smallest CT standard deviation divided by (a constant foreground would divide by 0), as nnU-Net.
MIN_STD = 1e-8

#: Axis labels of the NIfTI world frame (left-right, posterior-anterior, inferior-superior), given explicitly:
#: MONAI >= 1.6 otherwise reads them from the image's ``space`` meta data.
RAS_LABELS = [["L", "R"], ["P", "A"], ["I", "S"]]

#: ``nonzero`` as an expression of MONAI and torch only (exported bundles).
NONZERO_EXPRESSION = "$lambda x: x != 0"


def nonzero(x):
    """Foreground for cropping: voxels that are non-zero in any channel (``(C, *spatial)`` -> bool, same shape)."""
    return x != 0


class ClipChannels:
    """Clip channel ``c`` of a ``(C, *spatial)`` tensor to ``[lows[c], highs[c]]`` (the CT windows); picklable.

    Args:
        lows: lower bound per channel (HU).
        highs: upper bound per channel (HU).
    """

    def __init__(self, lows: Sequence[float], highs: Sequence[float]) -> None:
        self.lows = [float(v) for v in lows]
        self.highs = [float(v) for v in highs]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.lows):
            raise ValueError(
                f"image has {x.shape[0]} channels but the CT statistics have {len(self.lows)}: "
                "compute the statistics on the same modalities"
            )
        shape = (-1, *([1] * (x.ndim - 1)))
        low = torch.tensor(self.lows, dtype=x.dtype, device=x.device).reshape(shape)
        high = torch.tensor(self.highs, dtype=x.dtype, device=x.device).reshape(shape)
        return torch.clamp(x, low, high)

    def expression(self) -> str:
        """The same clip as a ``$`` expression of torch only (for an exported bundle)."""
        view = "reshape(-1, *([1] * (x.ndim - 1)))"
        return (
            f"$lambda x: torch.clamp(x, torch.tensor({self.lows}, dtype=x.dtype, device=x.device).{view}, "
            f"torch.tensor({self.highs}, dtype=x.dtype, device=x.device).{view})"
        )


def normalisation_config(normalisation: Mapping, keys="image", portable: bool = False) -> list[dict]:
    """MONAI transform configs of the intensity normalisation (step 3 of the chain).

    Args:
        normalisation: ``{"modality": "mri"}`` or ``{"modality": "ct", "statistics": {"channels": [{"low", "high",
            "mean", "std"}, ...]}}`` (what the fine-tuning cache records and ``model_info.json`` holds). MRI takes an
            optional ``"nonzero": false`` (z-score over every voxel: nnU-Net's ZScoreNormalization without
            ``use_mask_for_norm``; used by ``custom_nets.export.nnunet_import``).
        keys: image key(s).
        portable: write the CT clip as a ``$`` expression (exported bundles) instead of a ``ClipChannels`` object.

    Returns:
        A list of ``{"_target_": ..., ...}`` transform configs.
    """
    modality = normalisation.get("modality") if isinstance(normalisation, Mapping) else None
    if modality == "mri":
        nonzero_only = bool(normalisation.get("nonzero", True))
        return [{"_target_": "NormalizeIntensityd", "keys": keys, "nonzero": nonzero_only, "channel_wise": True}]
    if modality != "ct":
        raise ValueError(
            f"normalisation must name modality 'mri' or 'ct', got {normalisation!r}; export from a run whose "
            "model_info.json was written by the fine-tuning bundle."
        )
    channels = (normalisation.get("statistics") or {}).get("channels")
    if not channels:
        raise ValueError("CT normalisation needs the dataset statistics ('statistics': {'channels': [...]}).")
    clip = ClipChannels([c["low"] for c in channels], [c["high"] for c in channels])
    return [
        {"_target_": "Lambdad", "keys": keys, "func": clip.expression() if portable else clip},
        {
            "_target_": "NormalizeIntensityd",
            "keys": keys,
            "subtrahend": [float(c["mean"]) for c in channels],
            "divisor": [max(float(c["std"]), MIN_STD) for c in channels],
            "channel_wise": True,
        },
    ]


def _compose(configs: list[dict]) -> Compose:
    """Instantiate transform configs (``{"_target_": ..., ...}``) as MONAI's bundle parser does, in one ``Compose``."""
    return ConfigParser({"c": {"_target_": "Compose", "transforms": configs}}).get_parsed_content("c")


class NormaliseIntensityd(Compose):
    """The chain's intensity normalisation on its own (step 3), as one transform.

    Args:
        keys: image key(s); their ``(C, *spatial)`` intensities are normalised per channel.
        normalisation: see ``normalisation_config``.
    """

    def __init__(self, keys, normalisation: Mapping) -> None:
        super().__init__(_compose(normalisation_config(normalisation, keys)).transforms)


def chain_config(
    keys, spacing, normalisation: Mapping, image_key: str = "image", mode="bilinear", portable: bool = False
) -> list[dict]:
    """The chain as MONAI transform configs (see the module docstring for the steps).

    Args:
        keys: the image key, or ``[image key, label/mask keys...]`` (cropped and resampled with the image).
        spacing: target voxel size in mm, ``[x, y, z]`` (or a ``@`` reference in an exported config).
        normalisation: see ``normalisation_config``.
        image_key: the key whose non-zero voxels define the crop and whose intensities are normalised.
        mode: ``Spacingd`` interpolation: one mode or one per key (``["bilinear", "nearest", ...]``).
        portable: ``$`` expressions instead of this module's functions (for bundles without this package).

    Returns:
        A list of ``{"_target_": ..., ...}`` transform configs.
    """
    return [
        {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS", "labels": RAS_LABELS},
        {
            "_target_": "CropForegroundd",
            "keys": keys,
            "source_key": image_key,
            "select_fn": NONZERO_EXPRESSION if portable else nonzero,
            "allow_smaller": True,
        },
        *normalisation_config(normalisation, image_key, portable=portable),
        # resampled in float32, as the training cache always was
        {"_target_": "Spacingd", "keys": keys, "pixdim": spacing, "mode": mode, "dtype": "$torch.float32"},
    ]


def preprocessing_chain(keys, spacing, normalisation: Mapping, image_key: str = "image", mode="bilinear") -> Compose:
    """The chain as one invertible ``Compose`` (``Invertd`` maps predictions back to the input geometry).

    Input: channel-first MetaTensors with their affine (``LoadImaged(..., ensure_channel_first=True)``);
    output: float32 ``(C, x', y', z')`` in RAS at ``spacing``. Arguments as in ``chain_config``.
    """
    return _compose(chain_config(keys, [float(s) for s in spacing], normalisation, image_key, mode))
