"""Synthetic demo data: reproducible brain-like MRIs, so that every bundle and test runs without real data.

What belongs here is generators of made-up data only, each drawn from a seed so that the same
arguments always give the same files; nothing here reads or changes real data. The real data
pipeline (``custom_nets.data``) calls the writers only for its ``demo`` source.

* ``anatomy``: the synthetic head shared by every generator (geometry, tissue rendering, noise).
* ``files``: how a demo case is stored (spacing and orientation by case number, NIfTI header).
* ``pretraining``: unlabeled single-contrast volumes and an MSD-style datalist.
* ``segmentation``: labeled co-registered multi-modal cases in the MSD/nnU-Net layout.
"""

from custom_nets.data.demo.anatomy import DemoAnatomy, finish_volume, make_demo_anatomy, render_tissues
from custom_nets.data.demo.pretraining import make_demo_volume, write_demo_dataset
from custom_nets.data.demo.segmentation import (
    DEMO_CONTRASTS,
    DEMO_LABELS,
    make_demo_segmentation_case,
    write_demo_segmentation_dataset,
)

__all__ = [
    "DEMO_CONTRASTS",
    "DEMO_LABELS",
    "DemoAnatomy",
    "finish_volume",
    "make_demo_anatomy",
    "make_demo_segmentation_case",
    "make_demo_volume",
    "render_tissues",
    "write_demo_dataset",
    "write_demo_segmentation_dataset",
]
