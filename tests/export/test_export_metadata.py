"""Exported metadata.json: measured scores in eval_metrics (from the run's evaluation summary, written by the
project's own report writer), name/task/description of the exported network, MONAI Label in supported_apps, and
the full Apache-2.0 text in LICENSE."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import pytest

from export_helpers import write_run
from custom_nets.evaluation.summary import summarise, write_reports
from custom_nets.export import export_bundle
from custom_nets.export.metadata import SUPPORTED_APPS, eval_metrics_from_summary, zoo_metadata
from custom_nets.export.package import _REPO_BUNDLE

#: md5 of the Apache License 2.0 as published at https://www.apache.org/licenses/LICENSE-2.0.txt.
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
LABELS = {"0": "background", "1": "lesion", "2": "ventricles"}
SOURCE_META = json.loads((_REPO_BUNDLE / "configs" / "metadata.json").read_text())
INFO_L = {
    "network_preset": "resenc_l", "num_channels": 2, "modalities": ["t1", "flair"], "labels": LABELS,
    "spacing": [1.0, 1.0, 1.0], "normalisation": {"modality": "mri"}, "patch_size": [160, 160, 160],
    "pretrained_checkpoint": "/runs/s3d_pretrain/models/model.pt", "schedule": "sawtooth",
}


def _evaluated_run(folder):
    """A run with evaluation/summary.json from three hand-scored cases: lesion DSC 0.5, 0.7 and (absent from
    prediction and reference) NaN -> mean 0.6; ventricles DSC 0.9, 1.0, 0.8 -> 0.9; mean DSC (0.6 + 0.9) / 2 = 0.75.
    NSD: lesion 0.6, 0.8, NaN -> 0.7; ventricles 1.0, 1.0, 0.85 -> 0.95; mean 0.825."""
    run = write_run(folder)
    results = [
        {"case": "a", "dsc": {"lesion": 0.5, "ventricles": 0.9}, "nsd": {"lesion": 0.6, "ventricles": 1.0}},
        {"case": "b", "dsc": {"lesion": 0.7, "ventricles": 1.0}, "nsd": {"lesion": 0.8, "ventricles": 1.0}},
        {"case": "c", "dsc": {"lesion": math.nan, "ventricles": 0.8}, "nsd": {"lesion": math.nan, "ventricles": 0.85}},
    ]
    summary = summarise(results, ["lesion", "ventricles"], {"lesion": 2.0, "ventricles": 2.0})
    write_reports(results, summary, run / "evaluation")
    return run


def test_eval_metrics_are_the_scores_of_the_run(tmp_path):
    run = _evaluated_run(tmp_path / "run")
    folder = export_bundle(run, tmp_path / "zoo", name="scored", make_zip=False)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {
        "mean_dice": 0.75, "mean_nsd": 0.825, "dice_lesion": 0.6, "dice_ventricles": 0.9, "nsd_lesion": 0.7,
        "nsd_ventricles": 0.95,
    }
    assert meta["description"].endswith(
        "Evaluated on 3 held-out case(s): mean Dice 0.7500, mean NSD 0.8250 (NSD tolerance 2 mm).")
    assert "| mean_dice | 0.75 |" in (folder / "docs" / "README.md").read_text()
    # the scores travel inside model.ts too (monai.bundle.load(..., load_ts_module=True) returns them)
    import torch

    extra = {"metadata.json": ""}
    torch.jit.load(str(folder / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["eval_metrics"]["mean_dice"] == 0.75


def test_undefined_scores_are_left_out_not_zero():
    summary = {"mean_dsc": None, "mean_nsd": 0.5, "classes": ["lesion"],
               "per_class": {"lesion": {"dsc": {"mean": None}, "nsd": {"mean": 0.5}}}}
    assert eval_metrics_from_summary(summary, LABELS) == {"mean_nsd": 0.5, "nsd_lesion": 0.5}
    spaced = {"0": "background", "1": "left kidney"}
    summary = {"mean_dsc": 0.123456, "mean_nsd": 0.2, "classes": ["left kidney"],
               "per_class": {"left kidney": {"dsc": {"mean": 0.123456}, "nsd": {"mean": 0.2}}}}
    assert eval_metrics_from_summary(summary, spaced) == {
        "mean_dice": 0.1235, "mean_nsd": 0.2, "dice_left_kidney": 0.1235, "nsd_left_kidney": 0.2,
    }


def test_summary_of_another_model_or_file_is_refused(tmp_path):
    other = {"mean_dsc": 0.9, "mean_nsd": 0.9, "classes": ["liver"], "per_class": {"liver": {}}}
    with pytest.raises(ValueError, match=r"scores classes \['liver'\] that the exported model does not predict"):
        eval_metrics_from_summary(other, LABELS, "other/summary.json")
    with pytest.raises(ValueError, match=r"lacks \['mean_dsc', 'mean_nsd', 'classes', 'per_class'\]"):
        eval_metrics_from_summary({"n_cases": 3}, LABELS)
    run = write_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="evaluation summary .*missing.json not found"):
        export_bundle(run, tmp_path / "zoo", name="x", make_zip=False, evaluation_summary=tmp_path / "missing.json")


def test_unevaluated_run_says_so(tiny_run, exported, caplog):
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {}
    assert meta["description"].endswith("No evaluation scores were given at export, so eval_metrics is empty.")
    with caplog.at_level(logging.WARNING, logger="custom_nets.export.package"):
        export_bundle(tiny_run, exported.parent / "again", name="again", make_zip=False)
    assert "has no evaluation/summary.json: eval_metrics stays empty" in caplog.text


def test_name_and_description_describe_the_exported_network(tmp_path):
    run = write_run(tmp_path / "run", preset="demo", patch_size=(64, 64, 48))
    folder = export_bundle(run, tmp_path / "zoo", name="demo", make_zip=False, evaluation_summary=False)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["name"] == "ResEnc U-Net (preset 'demo') segmentation of lesion, ventricles (64x64x48 patches)"
    assert meta["task"] == "3D segmentation of lesion, ventricles in MRI (t1, flair)"
    assert meta["description"].startswith(
        "ResEnc U-Net (preset 'demo'): nnU-Net's Residual-Encoder U-Net with 6 stages of [4, 8, 16, 32, 64, 64] "
        "features, trained from scratch with the 'sawtooth' schedule. It segments lesion, ventricles from 2 "
        "channel(s) (t1, flair) resampled to 1x1x1 mm, with Gaussian sliding windows of 64x64x48 voxels"
    )
    assert "160" not in meta["name"] + meta["description"]
    large = zoo_metadata(SOURCE_META, INFO_L, "1.0.0", "release")
    assert large["name"] == "ResEnc-L U-Net segmentation of lesion, ventricles (160^3 patches)"
    assert "fine-tuned from pre-trained weights (model.pt) with the 'sawtooth' schedule" in large["description"]
    assert zoo_metadata(SOURCE_META, INFO_L, "1.0.0", "release", name="My model")["name"] == "My model"


def test_supported_apps_and_licence(exported):
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert meta["supported_apps"] == SUPPORTED_APPS == {"monai-label": "0.8.5"}
    licence = (exported / "LICENSE").read_bytes()
    assert hashlib.md5(licence).hexdigest() == APACHE_2_MD5
    text = licence.decode()
    order = ["Apache License", "Version 2.0, January 2004",
             "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "1. Definitions.", "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS",
             "APPENDIX: How to apply the Apache License to your work."]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
