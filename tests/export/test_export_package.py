"""Exporting a fine-tuning run: layout, zip, model-zoo checks (verify_metadata, verify_net_in_out, ckpt_export, the
inference properties, large_files.yml) from the bundle folder and from elsewhere, TorchScript equal to the eager
network, and an inference config that needs no custom_nets and predicts exactly what the project's own inference
config predicts."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
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
from custom_nets.export.package import _large_files
from custom_nets.nets import resenc_unet

PROJECT_INFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune" / "configs" / "inference.yaml"
EXPECTED_FILES = {
    "configs/metadata.json", "configs/inference.yaml", "configs/inference.json", "configs/train.yaml",
    "configs/train.json", "configs/logging.conf", "models/model.pt", "models/model.ts", "scripts/__init__.py",
    "scripts/resenc.py", "scripts/inferer.py", "scripts/cases.py", "scripts/case_ids.py", "docs/README.md", "LICENSE",
    "large_files.yml",
}


def test_layout_and_zip(exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES
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


@pytest.mark.parametrize("where", ["bundle folder", "elsewhere"])
def test_model_zoo_checks_pass_without_custom_nets(exported, without_custom_nets, tmp_path, where):
    """verify_metadata (committed schema, no download), the inference properties MONAI checks, verify_net_in_out and
    ckpt_export, in a process where custom_nets cannot be imported: from the bundle folder with relative paths, and
    from another folder with absolute paths and bundle_root, as the model zoo's CI (ci/verify_bundle.py) calls them."""
    if where == "bundle folder":
        cwd, root, extra = exported, "", ""
    else:
        cwd, root, extra = tmp_path, f"{exported}/", f", bundle_root={str(exported)!r}"
    code = f"""
from monai.bundle import verify_metadata, verify_net_in_out, ckpt_export, create_workflow
verify_metadata(meta_file='{root}configs/metadata.json', filepath={str(SCHEMA_FILE)!r})
workflow = create_workflow(workflow_type='inference', config_file='{root}configs/inference.yaml',
                           meta_file='{root}configs/metadata.json', logging_file='{root}configs/logging.conf'{extra})
assert workflow.check_properties() == [], workflow.check_properties()
verify_net_in_out(net_id='network_def', meta_file='{root}configs/metadata.json',
                  config_file='{root}configs/inference.yaml', device='cpu'{extra})
ckpt_export(net_id='network_def', filepath={str(tmp_path / 'exported.ts')!r}, ckpt_file='{root}models/model.pt',
            meta_file='{root}configs/metadata.json', config_file='{root}configs/inference.yaml'{extra})
print('ALL CHECKS PASSED')
"""
    done = run_python(code, cwd, without_custom_nets)
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
run(config_file='configs/inference.yaml', input_dir={str(image_4d)!r}, output_dir={str(bundle_out)!r}, mirror_axes=[0],
    mirroring=True)
"""
    run_python(code, exported, without_custom_nets)
    expected, got = nib.load(project_out / "case_a.nii.gz"), nib.load(bundle_out / "case_a.nii.gz")
    assert got.shape == expected.shape == nib.load(image_4d).shape[:3]
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-5)
    labels = np.asarray(expected.dataobj)
    assert len(np.unique(labels)) > 1  # a real segmentation, not an empty map
    np.testing.assert_array_equal(np.asarray(got.dataobj), labels)


def test_every_weight_file_is_listed_with_its_hash_and_url(tiny_run, tmp_path):
    folder = export_bundle(tiny_run, tmp_path, name="s3d_big", version="1.2.3",
                           large_files_url="https://example.org/releases/v1.2.3/", make_zip=False)
    listed = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    assert [e["path"] for e in listed] == ["models/model.pt", "models/model.ts"]  # small files too
    for entry in listed:
        digest = hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest()
        assert entry["hash_type"] == "sha256" and entry["hash_val"] == digest
        assert entry["url"] == f"https://example.org/releases/v1.2.3/{Path(entry['path']).name}"
    assert not (tmp_path / "s3d_big_v1.2.3.zip").exists()


def test_large_files_without_url_say_so_and_pass_monai_checks(exported, caplog):
    """No --large_files_url: empty URLs and a comment saying why, never a made-up address; MONAI's
    download_large_files accepts the bundle offline (files present, sha256 checked) and catches a changed file."""
    text = (exported / "large_files.yml").read_text()
    assert text.startswith("# The files are inside this bundle (zip); no download URL was declared at export.")
    assert [e["url"] for e in yaml.safe_load(text)["large_files"]] == ["", ""]
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(exported)],
                          capture_output=True, text=True, timeout=120)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and log.count("skipped downloading") == 2, log[-2000:]
    with caplog.at_level(logging.WARNING, logger="custom_nets.export.package"):
        _large_files(exported, large_file_mb=0.1, large_files_url=None)
    assert "['models/model.pt', 'models/model.ts'] are over the model zoo's 0.1 MB limit" in caplog.text


def test_download_large_files_rejects_a_changed_weight_file(exported, tmp_path):
    import shutil

    copy = shutil.copytree(exported, tmp_path / "copy")
    (copy / "models" / "model.ts").write_bytes(b"not the released file")
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(copy)],
                          capture_output=True, text=True, timeout=120)
    log = done.stdout + done.stderr
    assert done.returncode != 0 and re.search(r"sha256 (hash )?check of existing file failed.*model\.ts", log), log[-2000:]


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
