"""The one datalist reader: labels and masks as paths, ``$VARIABLE`` paths, case ids, and one wording per problem
whichever reader (pre-training ``load_datalist``, labeled ``load_segmentation_datalist``, the layouts) meets it."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from custom_nets.data import load_datalist, load_segmentation_datalist
from custom_nets.data.datalist import entry_case_ids, read_entries

LABELS = {"0": "background", "1": "lesion"}


def _write(path, data) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _both_raise(source, error):
    """The messages of the pre-training and the labeled reader for the same ``source``; both raise ``error``."""
    with pytest.raises(error) as pretraining:
        load_datalist(source)
    with pytest.raises(error) as labeled:
        load_segmentation_datalist(source)
    return str(pretraining.value), str(labeled.value)


def test_invalid_json_reads_the_same_in_both_readers(tmp_path):
    path = _write(tmp_path / "dataset.json", '{"labels": {"0": "background"},\n "training": [}\n')
    pretraining, labeled = _both_raise(path, ValueError)
    assert pretraining == labeled == (
        f"dataset '{path}' is not valid JSON (line 2, column 15: Expecting value): fix the file, e.g. check for a "
        "trailing comma or a missing quote"
    )


def test_an_entry_without_image_reads_the_same_in_both_readers(tmp_path):
    path = _write(tmp_path / "dataset.json", {"labels": LABELS, "training": [{"label": "labelsTr/a.nii.gz"}]})
    pretraining, labeled = _both_raise(path, ValueError)
    assert pretraining == labeled == (
        f"entry 0 of the 'training' list of dataset '{path}' has no 'image' key (keys: ['label']): add \"image\": "
        "<image file, or a list with one file per modality>"
    )


def test_an_empty_list_reads_the_same_in_both_readers(tmp_path):
    path = _write(tmp_path / "dataset.json", {"labels": LABELS, "training": []})
    pretraining, labeled = _both_raise(path, ValueError)
    assert pretraining == labeled == (
        f"dataset '{path}' has an empty 'training' list: add entries like "
        '{"image": "imagesTr/case_000_0000.nii.gz"} (plus "label": "labelsTr/case_000.nii.gz" when labeled)'
    )


def test_an_unreadable_source_is_a_permission_error_in_every_reader(tmp_path, monkeypatch):
    datalist = _write(tmp_path / "d" / "dataset.json", {"labels": LABELS, "training": ["a.nii.gz"]})
    table = _write(tmp_path / "om" / "openneuro_metadata.csv", "image_path\nds1/a.nii.gz\n")
    real_read_text = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):  # what a file without read permission gives a user who is not root
        if self in (datalist, table):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)

    def message(path):
        return (
            f"dataset '{path}' cannot be read by this user; fix: make it readable (chmod a+r '{path}', and a+x on "
            "its folders) or run as a user who can read it"
        )

    assert _both_raise(datalist, PermissionError) == (message(datalist), message(datalist))
    with pytest.raises(PermissionError) as info:
        load_datalist(table)
    assert str(info.value) == message(table)


def test_a_missing_source_names_what_each_reader_accepts(tmp_path):
    absent = tmp_path / "absent"
    pretraining, labeled = _both_raise(absent, FileNotFoundError)
    assert pretraining == (
        f"dataset '{absent}' does not exist: pass a folder of images (.nii/.nii.gz, .mgz, .nrrd, .mha, ...) or a "
        "datalist JSON file"
    )
    assert labeled == (
        f"dataset '{absent}' does not exist: pass the MSD-style dataset.json of a labeled dataset (with 'labels' "
        "and a 'training' list of {'image', 'label'} entries) or the folder that holds it"
    )


def test_label_and_masks_become_absolute_and_variables_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("RAW_DATA", str(tmp_path / "raw"))
    path = _write(tmp_path / "lists" / "d.json", {"training": [
        {"image": ["t1/a.nii.gz", "$RAW_DATA/flair/a.nii.gz"], "label": "labels/a.nii.gz",
         "anatomy_mask": "${RAW_DATA}/masks/a.nii.gz", "site": 3},
    ]})
    assert load_datalist(path) == [{
        "image": [str(tmp_path / "lists" / "t1" / "a.nii.gz"), str(tmp_path / "raw" / "flair" / "a.nii.gz")],
        "label": str(tmp_path / "lists" / "labels" / "a.nii.gz"),
        "anatomy_mask": str(tmp_path / "raw" / "masks" / "a.nii.gz"),
        "site": 3,
    }]
    monkeypatch.delenv("RAW_DATA")
    with pytest.raises(ValueError) as info:
        load_datalist(path)
    assert str(info.value) == (
        f"entry 0 of the 'training' list of dataset '{path}' has the path '$RAW_DATA/flair/a.nii.gz', which starts "
        "with $RAW_DATA, but the environment variable RAW_DATA is not set: export RAW_DATA=<the folder it stands "
        "for> (nnssl writes $nnssl_raw/... paths), or make the paths absolute"
    )


def test_only_image_may_list_several_files(tmp_path):
    path = _write(tmp_path / "d.json", [{"image": "a.nii.gz", "label": ["a.nii.gz", "b.nii.gz"]}])
    with pytest.raises(ValueError) as info:
        load_datalist(path)
    assert str(info.value) == f"entry 0 of dataset '{path}' has a list under 'label': give one file path"
    _write(path, [{"image": []}])
    with pytest.raises(ValueError) as info:
        load_datalist(path)
    assert str(info.value) == f"entry 0 of dataset '{path}' has an empty list of 'image' files: give at least one path"


def test_case_ids_follow_the_label_then_the_nnunet_image_stem(tmp_path):
    raw = {"training": [
        {"image": ["imagesTr/a_0000.nii.gz", "imagesTr/a_0001.nii.gz"], "label": "labelsTr/a.nii.gz"},
        {"image": "imagesTr/b_0000.nii.gz", "label": "labelsTr/b.nii.gz"},
    ], "test": [
        {"image": "imagesTs/a_0000.nii.gz", "label": "labelsTs/a.nii.gz"},  # same name as a training case
        {"image": ["imagesTs/u_0000.nii.gz", "imagesTs/u_0001.nii.gz"]},  # unlabeled: named by the image stem
    ]}
    training = read_entries(raw, "training", tmp_path / "dataset.json", tmp_path)
    test = read_entries(raw, "test", tmp_path / "dataset.json", tmp_path)
    suffix = hashlib.sha1(str(tmp_path / "labelsTs" / "a.nii.gz").encode()).hexdigest()[:8]
    assert entry_case_ids(training, test) == ["a", "b", f"a__{suffix}", "u"]
