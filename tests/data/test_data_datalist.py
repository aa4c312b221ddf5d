"""Datalist loading: JSON and folder sources, path resolution, and the error messages."""

from __future__ import annotations

import json
import logging
import os

import pytest

from custom_nets.data import load_datalist


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_missing_source_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_datalist(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)
    assert "pass a folder of images (.nii/.nii.gz, .mgz, .nrrd, .mha, ...) or a datalist JSON file" in str(info.value)


def test_empty_folder_is_an_error(tmp_path):
    _touch(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"contains no image files \(\.nii, \.nii\.gz, \.hdr, \.mgz"):
        load_datalist(tmp_path)


def test_folder_scan_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    for name in ("b.nii.gz", "a/z.nii", "a/b.nii.gz", "A2/x.NII.GZ", "c.txt", ".hidden.nii.gz", ".cache/d.nii.gz"):
        _touch(tmp_path / name)
    entries = load_datalist(tmp_path)
    assert [os.path.relpath(e["image"], tmp_path) for e in entries] == ["A2/x.NII.GZ", "a/b.nii.gz", "a/z.nii", "b.nii.gz"]
    assert all(os.path.isabs(e["image"]) and set(e) == {"image"} for e in entries)


def test_folder_with_datalist_json_uses_it(tmp_path):
    _touch(tmp_path / "imagesTr" / "one.nii.gz")
    _touch(tmp_path / "imagesTr" / "ignored.nii.gz")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "imagesTr/one.nii.gz"}]}))
    assert load_datalist(tmp_path) == [{"image": str(tmp_path / "imagesTr" / "one.nii.gz")}]


def test_relative_paths_resolve_against_json_folder_or_base_dir(tmp_path):
    listing = tmp_path / "lists" / "data.json"
    listing.parent.mkdir()
    absolute = str(tmp_path / "elsewhere" / "abs.nii.gz")
    listing.write_text(json.dumps({
        "name": "x",
        "training": [
            {"image": "../imgs/a.nii.gz", "anonymization_mask": "../masks/a.nii.gz", "subject": 7},
            "imgs/b.nii",
            {"image": ["t1/c.nii.gz", "t2/c.nii.gz"]},
            {"image": absolute},
        ],
    }))
    entries = load_datalist(listing)
    assert entries == [
        {"image": str(tmp_path / "imgs" / "a.nii.gz"), "anonymization_mask": str(tmp_path / "masks" / "a.nii.gz"), "subject": 7},
        {"image": str(tmp_path / "lists" / "imgs" / "b.nii")},
        {"image": [str(tmp_path / "lists" / "t1" / "c.nii.gz"), str(tmp_path / "lists" / "t2" / "c.nii.gz")]},
        {"image": absolute},
    ]
    rebased = load_datalist(listing, base_dir=tmp_path / "root")
    assert rebased[1] == {"image": str(tmp_path / "root" / "imgs" / "b.nii")}
    assert rebased[3] == {"image": absolute}


def test_plain_json_list_and_other_key(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(["a.nii.gz", {"image": "b.nii.gz"}]))
    assert [e["image"] for e in load_datalist(tmp_path / "list.json")] == [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    (tmp_path / "msd.json").write_text(json.dumps({"training": ["a.nii.gz"], "validation": ["v.nii.gz"]}))
    assert load_datalist(tmp_path / "msd.json", key="validation") == [{"image": str(tmp_path / "v.nii.gz")}]


def test_empty_json_list_is_an_error(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="empty 'training' list"):
        load_datalist(tmp_path / "empty.json")


def test_missing_key_lists_available_keys(tmp_path):
    (tmp_path / "msd.json").write_text(json.dumps({"name": "x", "validation": [], "test": []}))
    with pytest.raises(ValueError) as info:
        load_datalist(tmp_path / "msd.json")
    message = str(info.value)
    assert "no key 'training'" in message and "['name', 'test', 'validation']" in message and "key=" in message


def test_invalid_json_reports_line(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "training": [\n    {"image": "a.nii.gz"},\n  ]\n}\n')
    with pytest.raises(ValueError, match=r"not valid JSON \(line 4, column 3"):
        load_datalist(tmp_path / "bad.json")


def test_entry_without_image_is_an_error(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "a.nii.gz"}, {"label": "b.nii.gz"}]}))
    with pytest.raises(ValueError, match="entry 1 .* has no 'image' key"):
        load_datalist(tmp_path / "d.json")


def test_missing_files_are_kept_with_a_counted_warning(tmp_path, caplog):
    _touch(tmp_path / "here.nii.gz")
    (tmp_path / "d.json").write_text(json.dumps(["here.nii.gz", "gone1.nii.gz", "gone2.nii.gz"]))
    with caplog.at_level(logging.WARNING, logger="custom_nets.data.datalist"):
        entries = load_datalist(tmp_path / "d.json")
    assert len(entries) == 3
    assert "2 of 3 entries" in caplog.text
