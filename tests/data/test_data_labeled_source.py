"""The raw labeled dataset a fine-tuning run names (train.yaml's ``dataset_source``, read again by evaluate.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

from custom_nets.data.segmentation import labeled_source, prepare_segmentation_dataset


def test_given_dataset_or_the_demo_folder_in_the_cache():
    assert labeled_source("/data/task/dataset.json", "/runs/x/cache") == "/data/task/dataset.json"
    assert labeled_source(Path("/data/task"), Path("/runs/x/cache")) == "/data/task"
    assert labeled_source(None, "/runs/x/cache") == os.path.join("/runs/x/cache", "demo_source")


def test_the_demo_folder_is_where_preparation_writes_the_demo(tmp_path, monkeypatch):
    written = {}

    def fake_demo(folder):  # records where the demo goes instead of rendering it
        written["folder"] = str(folder)
        raise RuntimeError("stop after choosing the folder")

    monkeypatch.setattr("custom_nets.data.segmentation.write_demo_segmentation_dataset", fake_demo)
    try:
        prepare_segmentation_dataset(None, tmp_path / "cache")
    except RuntimeError:
        pass
    assert written["folder"] == labeled_source(None, tmp_path / "cache")
