"""Data pipeline: demo volumes, datalists, quality filter, preprocessing cache, and the training patches' sampling
(foreground oversampling) and augmentation (spatial from image context, per-channel intensity) of nnU-Net."""

from custom_nets.data.datalist import load_datalist
from custom_nets.data.foreground_sampling import ForegroundOversampledDataset, RandPatchCenterd, forced_foreground
from custom_nets.data.intensity_augment import RandChannelwised, RandGamma
from custom_nets.data.paths import check_writable_dir
from custom_nets.data.demo import make_demo_volume, write_demo_dataset
from custom_nets.data.preprocess import prepare_dataset, preprocess_dataset
from custom_nets.data.quality import QualityThresholds, check_image
from custom_nets.data.segmentation import prepare_segmentation_dataset
from custom_nets.data.labeled_dataset import load_segmentation_datalist
from custom_nets.data.spatial_augment import RandAffineCropd
from custom_nets.data.splits import held_out_part, make_splits, select_split

__all__ = [
    "ForegroundOversampledDataset",
    "RandAffineCropd",
    "RandChannelwised",
    "RandGamma",
    "RandPatchCenterd",
    "forced_foreground",
    "QualityThresholds",
    "check_image",
    "check_writable_dir",
    "load_datalist",
    "make_demo_volume",
    "prepare_dataset",
    "preprocess_dataset",
    "write_demo_dataset",
    "prepare_segmentation_dataset",
    "load_segmentation_datalist",
    "held_out_part",
    "make_splits",
    "select_split",
]
