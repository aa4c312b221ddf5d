"""Data pipeline for S3D pre-training: demo volumes, datalists, quality filter, preprocessing cache."""

from custom_nets.data.datalist import load_datalist
from custom_nets.data.demo import make_demo_volume, write_demo_dataset
from custom_nets.data.preprocess import prepare_dataset, preprocess_dataset
from custom_nets.data.quality import QualityThresholds, check_image
from custom_nets.data.segmentation import prepare_segmentation_dataset
from custom_nets.data.segmentation_datalist import load_segmentation_datalist
from custom_nets.data.splits import make_splits, select_split

__all__ = [
    "QualityThresholds",
    "check_image",
    "load_datalist",
    "make_demo_volume",
    "prepare_dataset",
    "preprocess_dataset",
    "write_demo_dataset",
    "prepare_segmentation_dataset",
    "load_segmentation_datalist",
    "make_splits",
    "select_split",
]
