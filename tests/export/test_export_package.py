"""Exporting a fine-tuning run: layout, zip, model-zoo checks (verify_metadata, verify_net_in_out, ckpt_export),
TorchScript equal to the eager network, and an inference config that needs no custom_nets and predicts exactly
what the project's own inference config predicts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from export_helpers import run_python, write_run
from custom_nets.export import SCHEMA_FILE, export_bundle
from custom_nets.export.package import _sha256
from custom_nets.nets import resenc_unet

PROJECT_INFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "inference.yaml"
EXPECTED_FILES = {
    "configs/metadata.json", "configs/inference.yaml", "configs/inference.json", "configs/logging.conf",
    "models/model.pt", "models/model.ts", "scripts/__init__.py", "scripts/resenc.py", "scripts/inferer.py",
    "docs/README.md", "LICENSE",
}


def test_layout_and_zip(exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES  # small weights: no large_files.yml
    with zipfile.ZipFile(exported.parent / "s3d_tiny_v0.1.0.zip") as archive:
        assert set(archive.namelist()) == {f"s3d_tiny/{f}" for f in EXPECTED_FILES}
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.1.0" and "0.1.0" in meta["changelog"]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    assert yaml.safe_load((exported / "configs" / "inference.yaml").read_text()) == json.loads(
        (exported / "configs" / "inference.json").read_text()
    )
    for config in ("inference.yaml", "inference.json", "metadata.json"):
        assert "custom_nets" not in (exported / "configs" / config).read_text()


def test_model_zoo_checks_pass_without_custom_nets(exported, without_custom_nets, tmp_path):
    """verify_metadata (committed schema, no download), verify_net_in_out and ckpt_export, run like
    ``python -m monai.bundle <command>`` from the bundle folder, in a process where custom_nets cannot be imported."""
    code = f"""
from monai.bundle import verify_metadata, verify_net_in_out, ckpt_export
verify_metadata(meta_file='configs/metadata.json', filepath={str(SCHEMA_FILE)!r})
verify_net_in_out(net_id='network_def', meta_file='configs/metadata.json', config_file='configs/inference.yaml', device='cpu')
ckpt_export(net_id='network_def', filepath={str(tmp_path / 'exported.ts')!r}, ckpt_file='models/model.pt',
            meta_file='configs/metadata.json', config_file='configs/inference.yaml')
print('ALL CHECKS PASSED')
"""
    done = run_python(code, exported, without_custom_nets)
    assert "ALL CHECKS PASSED" in done.stdout
    reference = torch.jit.load(str(exported / "models" / "model.ts"))
    exported_again = torch.jit.load(str(tmp_path / "exported.ts"))
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported_again(x), reference(x))


def test_torchscript_matches_the_eager_network(exported, tiny_run):
    eager = resenc_unet("tiny", in_channels=2, num_classes=3).eval()
    eager.load_state_dict(torch.load(tiny_run / "models" / "model.pt", weights_only=True))
    scripted = torch.jit.load(str(exported / "models" / "model.ts"))
    x = torch.randn(2, 2, 32, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-5, atol=1e-5)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(exported / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == "0.1.0" and "network_def" in json.loads(extra["inference.json"])


def test_exported_inference_equals_the_project_inference(exported, tiny_run, image_4d, without_custom_nets, tmp_path):
    project_out, bundle_out = tmp_path / "project", tmp_path / "bundle"
    settings = dict(input_dir=str(image_4d), mirror_axes=[0], device="cpu")
    wf = ConfigWorkflow(
        config_file=str(PROJECT_INFERENCE), workflow_type="infer", logging_file=False,
        checkpoint=str(tiny_run / "models" / "model.pt"), output_dir=str(project_out), **settings,
    )
    wf.initialize()
    wf.run()
    code = f"""
from monai.bundle import run
run(config_file='configs/inference.yaml', input_dir={str(image_4d)!r}, output_dir={str(bundle_out)!r}, mirror_axes=[0])
"""
    run_python(code, exported, without_custom_nets)
    expected, got = nib.load(project_out / "case_a.nii.gz"), nib.load(bundle_out / "case_a_seg.nii.gz")
    assert got.shape == expected.shape == nib.load(image_4d).shape[:3]
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-5)
    labels = np.asarray(expected.dataobj)
    assert len(np.unique(labels)) > 1  # a real segmentation, not an empty map
    np.testing.assert_array_equal(np.asarray(got.dataobj), labels)


def test_large_weights_are_listed_with_their_hash(tiny_run, tmp_path):
    folder = export_bundle(tiny_run, tmp_path, name="s3d_big", version="1.2.3", large_file_mb=0.1,
                           large_files_url="https://example.org/releases/v1.2.3", make_zip=False)
    listed = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    assert [e["path"] for e in listed] == ["models/model.pt", "models/model.ts"]
    for entry in listed:
        assert entry["hash_type"] == "sha256" and entry["hash_val"] == _sha256(folder / entry["path"])
        assert entry["url"] == f"https://example.org/releases/v1.2.3/{Path(entry['path']).name}"
    assert not (tmp_path / "s3d_big_v1.2.3.zip").exists()


def test_checkpoint_of_another_architecture_is_refused(tiny_run, tmp_path):
    demo_run = write_run(tmp_path / "demo_run", preset="demo")
    info = json.loads((tiny_run / "models" / "model_info.json").read_text())
    (demo_run / "models" / "model_info.json").write_text(json.dumps(info))  # says tiny, weights are demo
    with pytest.raises(ValueError, match=r"does not fit the network of model_info.json.*preset 'demo'"):
        export_bundle(demo_run, tmp_path / "out", name="wrong")
    other = tmp_path / "segresnet" / "models"
    other.mkdir(parents=True)
    torch.save({"convInit.conv.weight": torch.zeros(8, 1, 3, 3, 3)}, other / "model.pt")
    (other / "model_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="has no ResEnc encoder"):
        export_bundle(other.parent, tmp_path / "out", name="wrong")


def test_bad_names_versions_and_missing_model_info(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        export_bundle(tiny_run, tmp_path, version="1.0")
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        export_bundle(tiny_run, tmp_path, name="s3d-tiny")
    with pytest.raises(FileNotFoundError, match="model_info.json"):
        export_bundle(tmp_path, tmp_path / "out")
    export_bundle(tiny_run, tmp_path, name="twice", make_zip=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_bundle(tiny_run, tmp_path, name="twice", make_zip=False)
