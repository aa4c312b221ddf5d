"""Collection layouts in ``--dataset_dir``: OpenMind, nnssl ``pretrain_data.json`` and BIDS, with their masks
and the quality-score and modality filters. The generated copies use each layout's real file, column and
folder names."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from custom_nets.data import QualityThresholds, load_datalist, prepare_dataset
from custom_nets.data.layouts import detect_layout
from custom_nets.data.selection import select_entries

LOOSE = QualityThresholds(min_fov_mm=0.0, max_spacing_mm=10.0, min_file_bytes=0)

#: OpenMind's metadata columns (a subset of openneuro_metadata.csv, in its spelling).
OPENMIND_COLUMNS = [
    "unique_id", "dataset_id", "image_path", "anat_mask_path", "anon_mask_path", "modality", "derived_from",
    "image_quality_score", "is_brain_extract", "age", "sex",
]
#: (dataset, subject, session, file, modality, score, has anonymisation mask)
OPENMIND_ROWS = [
    ("ds000001", "sub-01", None, "sub-01_T1w.nii.gz", "T1w", 1.5, True),
    ("ds000001", "sub-01", None, "sub-01_FLAIR.nii.gz", "FLAIR", 3.5, True),
    ("ds000002", "sub-02", "ses-1", "sub-02_ses-1_T2w.nii.gz", "T2w", 2.0, False),
    ("ds000002", "sub-02", "ses-1", "sub-02_ses-1_MD.nii.gz", "MD", 2.0, True),
]


def _image(write_nifti, path, seed):
    volume = np.random.default_rng(seed).uniform(1, 2, (8, 9, 10)).astype(np.float32)
    return write_nifti(path, volume)


def _mask(write_nifti, path):
    mask = np.zeros((8, 9, 10), np.uint8)
    mask[:2] = 1  # a defaced slab
    return write_nifti(path, mask)


def write_openmind(root, write_nifti, rows=OPENMIND_ROWS) -> Path:
    """``root/openneuro_metadata.csv`` + ``root/OpenMind/<dataset>/<subject>/[<session>/]anat/...`` with masks."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "openneuro_metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, OPENMIND_COLUMNS)
        writer.writeheader()
        for index, (dataset, subject, session, name, modality, score, masked) in enumerate(rows):
            folder = "/".join(p for p in (dataset, subject, session, "anat") if p)
            stem = name[: -len(".nii.gz")]
            image = f"{folder}/{name}"
            _image(write_nifti, root / "OpenMind" / image, index)
            anat = f"{folder}/{stem}_anat_mask.nii.gz"
            _mask(write_nifti, root / "OpenMind" / anat)
            anon = f"{folder}/{stem}_anon_mask.nii.gz" if masked else ""
            if masked:
                _mask(write_nifti, root / "OpenMind" / anon)
            writer.writerow({
                "unique_id": f"{dataset}__{subject}__{name}", "dataset_id": dataset, "image_path": image,
                "anat_mask_path": anat, "anon_mask_path": anon, "modality": modality, "derived_from": "",
                "image_quality_score": score, "is_brain_extract": False, "age": 30, "sex": "F",
            })
    return root


def test_openmind_folder_pairs_masks_and_reads_scores_and_modalities(tmp_path, write_nifti):
    root = write_openmind(tmp_path, write_nifti)
    assert detect_layout(root) == ("openmind", root / "openneuro_metadata.csv")
    entries = load_datalist(root)
    assert load_datalist(root / "openneuro_metadata.csv") == entries  # the csv itself works too
    om = root / "OpenMind"
    assert entries[0] == {
        "image": str(om / "ds000001/sub-01/anat/sub-01_T1w.nii.gz"),
        "anonymization_mask": str(om / "ds000001/sub-01/anat/sub-01_T1w_anon_mask.nii.gz"),
        "anatomy_mask": str(om / "ds000001/sub-01/anat/sub-01_T1w_anat_mask.nii.gz"),
        "modality": "T1w", "image_quality_score": 1.5, "dataset_id": "ds000001",
    }
    assert [("anonymization_mask" in e, e["modality"], e["image_quality_score"]) for e in entries] == [
        (True, "T1w", 1.5), (True, "FLAIR", 3.5), (False, "T2w", 2.0), (True, "MD", 2.0)]


def test_openmind_filters_are_listed_in_excluded_csv_and_masks_are_cached(tmp_path, write_nifti):
    root = write_openmind(tmp_path / "download", write_nifti)
    training = prepare_dataset(root, tmp_path / "cache", num_workers=0, thresholds=LOOSE,
                               max_image_quality_score=2.5, modalities=["t1w", "T2w", "FLAIR"])
    om = root / "OpenMind"
    assert sorted(Path(e["image"]).name for e in training) == ["ds000001__sub-01__anat__sub-01_T1w.nii.gz",
                                                               "ds000002__sub-02__ses-1__anat__sub-02_ses-1_T2w.nii.gz"]
    assert sum("anonymization_mask" in e for e in training) == 1  # the T1w has one, the T2w has none
    with open(tmp_path / "cache" / "excluded.csv", encoding="utf-8") as handle:
        rows = {row["source"]: row["reason"] for row in csv.DictReader(handle)}
    assert rows == {
        str(om / "ds000001/sub-01/anat/sub-01_FLAIR.nii.gz"):
            "quality_score: image_quality_score 3.5 > max_image_quality_score 2.5",
        str(om / "ds000002/sub-02/ses-1/anat/sub-02_ses-1_MD.nii.gz"):
            "modality: MD is not one of modalities ['t1w', 'T2w', 'FLAIR']",
    }


def test_nnssl_pretrain_data_json_with_env_paths_and_dataset_quality_scores(tmp_path, write_nifti, monkeypatch):
    raw = tmp_path / "raw"
    monkeypatch.setenv("nnssl_raw", str(raw))
    image = "Dataset745_OpenMind/ds000001/sub-01/anat/sub-01_T1w.nii.gz"
    anon = "Dataset745_OpenMind/ds000001/sub-01/anat/sub-01_T1w_anon.nii.gz"
    _image(write_nifti, raw / image, 0)
    _mask(write_nifti, raw / anon)
    _image(write_nifti, tmp_path / "collection" / "relative_FA.nii.gz", 1)
    collection = {
        "collection_index": 745, "collection_name": "Dataset745_OpenMind",
        "datasets": {"ds000001": {
            "dataset_index": "ds000001", "name": None,
            "dataset_info": {"image_quality_score": [
                {"modality": "T1w", "derived_from": None, "image_quality_score": 1.5},
                {"modality": "FA", "derived_from": "sub-01_dwi", "image_quality_score": 4.0}]},
            "subjects": {"sub-01": {"subject_id": "sub-01", "subject_info": {"age": 26}, "sessions": {
                "ses-DEFAULT": {"session_id": "ses-DEFAULT", "session_info": None, "images": [
                    {"name": "sub-01_T1w.nii.gz", "modality": "T1w", "image_info": {}, "image_path": f"$nnssl_raw/{image}",
                     "associated_masks": {"anatomy_mask": None, "anonymization_mask": f"$nnssl_raw/{anon}"}},
                    {"name": "FA.nii.gz", "modality": "FA", "image_info": {"derived_from": "sub-01_dwi"},
                     "image_path": "relative_FA.nii.gz", "associated_masks": None},
                ]}}}},
        }},
    }
    (tmp_path / "collection").mkdir(exist_ok=True)
    (tmp_path / "collection" / "pretrain_data.json").write_text(json.dumps(collection))
    entries = load_datalist(tmp_path / "collection")
    assert entries == [
        {"image": str(raw / image), "anonymization_mask": str(raw / anon), "modality": "T1w",
         "image_quality_score": 1.5, "dataset_id": "ds000001"},
        {"image": str(tmp_path / "collection" / "relative_FA.nii.gz"), "modality": "FA", "image_quality_score": 4.0,
         "dataset_id": "ds000001"},
    ]
    kept, excluded = select_entries(entries, max_image_quality_score=3.0)
    assert [e["modality"] for e in kept] == ["T1w"]
    assert excluded == [{"image": entries[1]["image"],
                         "reason": "quality_score: image_quality_score 4 > max_image_quality_score 3"}]
    monkeypatch.delenv("nnssl_raw")
    with pytest.raises(ValueError, match=r"starts with \$nnssl_raw, but the environment variable nnssl_raw is not set"):
        load_datalist(tmp_path / "collection" / "pretrain_data.json")


def test_bids_root_takes_anatomical_images_with_their_suffix_as_modality(tmp_path, write_nifti, caplog):
    bids = tmp_path / "bids"
    (bids).mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.8.0"}))
    for relative in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_FLAIR.nii.gz",
                     "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii", "sub-01/anat/sub-01_mod-T1w_defacemask.nii.gz",
                     "sub-01/func/sub-01_task-rest_bold.nii.gz", "derivatives/x/sub-01/anat/sub-01_T1w.nii.gz"):
        _image(write_nifti, bids / relative, 0)
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    assert detect_layout(bids) == ("bids", bids)
    with caplog.at_level("INFO", logger="custom_nets.data.layouts"):
        entries = load_datalist(bids)
    assert entries == [
        {"image": str(bids / "sub-01/anat/sub-01_FLAIR.nii.gz"), "modality": "FLAIR"},
        {"image": str(bids / "sub-01/anat/sub-01_T1w.nii.gz"), "modality": "T1w"},
        {"image": str(bids / "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii"), "modality": "T2w"},
    ]
    assert "left out 2 NIfTI files that are not anatomical images (func/ 1, masks 1)" in caplog.text
    kept, excluded = select_entries(entries, modalities="T1w")
    assert [e["modality"] for e in kept] == ["T1w"] and len(excluded) == 2
    # without dataset_description.json, sub-*/anat folders still mark a BIDS root
    os.remove(bids / "dataset_description.json")
    assert detect_layout(bids) == ("bids", bids)


def test_filters_without_the_metadata_they_read_are_an_error(tmp_path):
    entries = [{"image": "/a.nii.gz"}, {"image": "/b.nii.gz"}]
    assert select_entries(entries) == (entries, [])
    with pytest.raises(ValueError, match=r"max_image_quality_score=2.5 is set, but no image of this dataset has an "
                                         "image_quality_score"):
        select_entries(entries, max_image_quality_score=2.5)
    with pytest.raises(ValueError, match=r"modalities=\['T1w'\] is set, but no image of this dataset has a modality"):
        select_entries(entries, modalities=["T1w"])
    with pytest.raises(ValueError, match="max_image_quality_score='good' is not a number"):
        select_entries(entries, max_image_quality_score="good")
    scored = [{"image": "/a.nii.gz", "image_quality_score": 2.0}, {"image": "/b.nii.gz"}]
    assert select_entries(scored, max_image_quality_score=2.0)[1] == [
        {"image": "/b.nii.gz", "reason": "quality_score: no image_quality_score (max_image_quality_score 2 is set)"}]
