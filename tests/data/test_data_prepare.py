"""prepare_dataset: demo fallback, patch-size warning, empty result, rank sharding; worker crashes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom_nets.data import QualityThresholds, prepare_dataset
from custom_nets.data.parallel import run_tasks
from parallel_crash_helpers import die_on_bad

LOOSE = {"min_fov_mm": 0.0, "min_file_bytes": 0}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """One demo run shared by the tests that only read its result (8 default-size volumes)."""
    cache = tmp_path_factory.mktemp("demo") / "cache"
    return cache, prepare_dataset(None, cache, num_workers=0)


def test_no_dataset_dir_uses_the_demo_dataset(demo_cache):
    cache, entries = demo_cache
    assert len(entries) == 8
    assert [e["image"] for e in entries] == [str(cache / "images" / f"demo_{i:03d}.nii.gz") for i in range(8)]
    assert all(set(e) == {"image"} and os.path.isfile(e["image"]) for e in entries)
    assert (cache / "demo_source" / "datalist.json").is_file()
    datalist = json.loads((cache / "datalist.json").read_text())
    assert [e["image"] for e in datalist["training"]] == [f"images/demo_{i:03d}.nii.gz" for i in range(8)]
    for entry in entries:
        image = nib.load(entry["image"])
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 1.0), atol=1e-5)


def test_patch_size_warning_counts_small_images(demo_cache, caplog):
    cache, entries = demo_cache
    shapes = [nib.load(e["image"]).shape for e in entries]
    patch = (72, 80, 72)
    expected_small = sum(any(s < p for s, p in zip(shape, patch)) for shape in shapes)
    assert 0 < expected_small < len(shapes)  # the demo shapes straddle this patch
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.preprocess"):
        prepare_dataset(None, cache, num_workers=0, patch_size=patch)
    assert f"{expected_small} of 8 preprocessed images are smaller than patch_size {patch}" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.preprocess"):
        prepare_dataset(None, cache, num_workers=0, patch_size=512)
    smallest = tuple(min(s[a] for s in shapes) for a in range(3))
    assert "All 8 preprocessed images are smaller than patch_size (512, 512, 512)" in caplog.text
    assert "choose a smaller patch_size" in caplog.text and str(smallest) in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.preprocess"):
        prepare_dataset(None, cache, num_workers=0, patch_size=32)
    assert "smaller than patch_size" not in caplog.text


def test_zero_passing_images_is_a_clear_error(tmp_path, write_nifti):
    tiny = write_nifti(tmp_path / "data" / "tiny.nii.gz", np.ones((4, 4, 4), np.float32))
    with pytest.raises(ValueError) as info:
        prepare_dataset(tmp_path / "data", tmp_path / "cache", num_workers=0)
    message = str(info.value)
    assert "all 1 files were excluded" in message and str(tmp_path / "cache" / "excluded.csv") in message
    row = (tmp_path / "cache" / "excluded.csv").read_text().splitlines()[1]
    assert row == f"{tiny},too_small_file: {os.path.getsize(tiny) / 1000:.1f} kB < 200 kB"


def test_cache_inside_a_scanned_dataset_folder_is_not_ingested(tmp_path, write_nifti):
    rng = np.random.default_rng(1)
    for name in ("a.nii.gz", "sub/b.nii.gz"):
        write_nifti(tmp_path / "data" / name, rng.uniform(1, 2, (6, 7, 8)).astype(np.float32))
    first = prepare_dataset(tmp_path / "data", tmp_path / "data" / "cache", num_workers=0, thresholds=LOOSE)
    again = prepare_dataset(tmp_path / "data", tmp_path / "data" / "cache", num_workers=0, thresholds=LOOSE)
    assert again == first
    assert [Path(e["image"]).name for e in first] == ["a.nii.gz", "sub__b.nii.gz"]


def _sharded_dataset(root, write_nifti):
    rng = np.random.default_rng(0)
    for i in range(5):
        data = rng.uniform(1, 2, (6, 7, 8)).astype(np.float32)
        write_nifti(root / f"case{i}.nii.gz", data)
        write_nifti(root / "masks" / f"case{i}.nii.gz", (data > 1.5).astype(np.uint8))
    entries = [{"image": f"case{i}.nii.gz", "anonymization_mask": f"masks/case{i}.nii.gz"} for i in range(5)]
    (root / "datalist.json").write_text(json.dumps({"training": entries}))
    return root / "datalist.json"


def test_ranks_process_their_share_and_all_return_the_merged_list(tmp_path, write_nifti):
    """Without a process group the ranks run one after another; the last one sees every shard."""
    datalist = _sharded_dataset(tmp_path / "data", write_nifti)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="3 of 5 cases .* not been preprocessed by the other ranks"):
        prepare_dataset(datalist, cache, num_workers=0, thresholds=LOOSE, rank=1, world_size=2)
    entries = prepare_dataset(datalist, cache, num_workers=0, thresholds=LOOSE, rank=0, world_size=2)

    def sources(name):
        lines = (cache / name).read_text().splitlines()
        return [Path(json.loads(line)["source"]).name for line in lines]

    assert sources("manifest.rank0.jsonl") == ["case0.nii.gz", "case2.nii.gz", "case4.nii.gz"]
    assert sources("manifest.rank1.jsonl") == ["case1.nii.gz", "case3.nii.gz"]
    assert not (cache / "manifest.jsonl").exists()
    assert entries == [
        {"image": str(cache / "images" / f"case{i}.nii.gz"),
         "anonymization_mask": str(cache / "anonymization_masks" / f"case{i}.nii.gz")}
        for i in range(5)
    ]
    written = json.loads((cache / "datalist.json").read_text())["training"]
    assert [e["image"] for e in written] == [f"images/case{i}.nii.gz" for i in range(5)]
    assert prepare_dataset(datalist, cache, num_workers=0, thresholds=LOOSE, rank=1, world_size=2) == entries
    # A later single-process run reuses every shard instead of starting over.
    assert prepare_dataset(datalist, cache, num_workers=0, thresholds=QualityThresholds(**LOOSE)) == entries
    assert not (cache / "manifest.jsonl").exists() or not (cache / "manifest.jsonl").read_text().strip()


def _distributed_rank(rank, datalist, cache, store, queue):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        entries = prepare_dataset(datalist, cache, num_workers=0, thresholds=LOOSE, rank=rank, world_size=2)
        queue.put((rank, entries))
    except Exception as err:  # report instead of hanging the other rank's barrier silently
        queue.put((rank, repr(err)))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_meet_at_the_barrier_and_agree(tmp_path, write_nifti):
    datalist = _sharded_dataset(tmp_path / "data", write_nifti)
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("fork")  # children inherit the imports: starts in milliseconds
    queue = context.Queue()
    ranks = [context.Process(target=_distributed_rank, args=(r, datalist, cache, tmp_path / "store", queue))
             for r in range(2)]
    for process in ranks:
        process.start()
    results = dict(queue.get(timeout=120) for _ in ranks)
    for process in ranks:
        process.join(timeout=30)
    assert isinstance(results[0], list), results
    assert results[0] == results[1] and len(results[0]) == 5
    assert all(os.path.isfile(e["image"]) and os.path.isfile(e["anonymization_mask"]) for e in results[0])
    assert len(json.loads((cache / "datalist.json").read_text())["training"]) == 5


def test_worker_crash_excludes_only_the_crashing_task():
    tasks = [{"case_id": name} for name in ("a", "b", "bad", "c", "d", "e")]
    results = {}
    run_tasks(
        tasks, die_on_bad, num_workers=2,
        on_result=lambda task, result: results.__setitem__(task["case_id"], result),
        on_crash=lambda task: {"crashed": task["case_id"]},
        initializer=None,
    )
    assert results == {**{n: {"ok": n} for n in "abcde"}, "bad": {"crashed": "bad"}}
