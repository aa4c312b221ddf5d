"""A real MONAI Label server (separate environment, monai 1.5.2) serves an exported demo-preset bundle on
127.0.0.1; the label map returned by ``/infer/<model>`` must equal the bundle's own inference output, with the
request's default (no test-time mirroring on a CPU) and with ``params={"mirroring": true}``.

Slow (server start, four inferences) and needs the MONAI Label environment built by
``scripts/monailabel/install.sh``: set ``S3D_MONAILABEL_VENV`` to its folder to run it. Optionally set
``S3D_MONAILABEL_BUNDLE`` to an exported bundle folder (e.g. of the fine-tuned demo run) to serve that one
instead of a demo-preset network with random weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from export_helpers import write_image, write_run

VENV = os.environ.get("S3D_MONAILABEL_VENV")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "monailabel"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VENV, reason="set S3D_MONAILABEL_VENV to a venv built by scripts/monailabel/install.sh"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_mirror_axis(bundle: Path) -> None:
    """Mirroring over the first axis only (2 windows per position instead of 8) keeps the mirrored CPU runs short."""
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["mirror_axes"] = [0]
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def bundle(tmp_path) -> Path:
    if os.environ.get("S3D_MONAILABEL_BUNDLE"):
        source = Path(os.environ["S3D_MONAILABEL_BUNDLE"])
        folder = tmp_path / source.name
        shutil.copytree(source, folder)
    else:
        from custom_nets.export import export_bundle

        run = write_run(tmp_path / "run", preset="demo", patch_size=(64, 64, 64))
        folder = export_bundle(run, tmp_path / "zoo", name="s3d_demo", make_zip=False)
    _one_mirror_axis(folder)
    return folder


def _bundle_inference(python: str, bundle: Path, image: Path, output_dir: Path, mirroring: str) -> nib.Nifti1Image:
    """The bundle's own inference, in the MONAI Label environment (monai 1.5.2, no custom_nets)."""
    subprocess.run(
        [python, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--input_dir", str(image),
         "--output_dir", str(output_dir), "--mirroring", mirroring],
        cwd=bundle, check=True, capture_output=True, timeout=900,
    )
    return nib.load(output_dir / "case_b.nii.gz")


def _assert_same_labels(got: Path, expected: nib.Nifti1Image, image: Path) -> None:
    got = nib.load(got)
    assert got.shape == expected.shape == nib.load(image).shape[:3]
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-4)
    labels = np.asarray(expected.dataobj).astype(np.int64)
    assert len(np.unique(labels)) > 1  # a real segmentation, not an empty map
    np.testing.assert_array_equal(np.asarray(got.dataobj).astype(np.int64), labels)


def test_monailabel_returns_the_bundle_inference(bundle, tmp_path):
    python = str(Path(VENV) / "bin" / "python")
    (tmp_path / "images").mkdir()
    image = write_image(tmp_path / "images" / "case_b.nii.gz", shape=(72, 68, 64))
    plain = _bundle_inference(python, bundle, image, tmp_path / "plain", "False")
    mirrored = _bundle_inference(python, bundle, image, tmp_path / "mirrored", "True")
    assert not np.array_equal(np.asarray(plain.dataobj), np.asarray(mirrored.dataobj))  # mirroring changes labels

    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        ["bash", str(SCRIPTS / "start_server.sh"), str(bundle), str(tmp_path / "studies"), str(port), VENV],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 600
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{url}/info/", timeout=5).read())
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("MONAI Label did not start:\n" + (tmp_path / "server.log").read_text()[-5000:])
                time.sleep(2)
        assert info["models"][bundle.name]["config"]["mirroring"] is False  # the option, off on this CPU server
        for name, params in (("default", ""), ("mirrored", '{"mirroring": true}')):
            subprocess.run(["bash", str(SCRIPTS / "infer.sh"), str(image), bundle.name, str(tmp_path / f"{name}.nii.gz"),
                            url, params], check=True, capture_output=True, timeout=900)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    _assert_same_labels(tmp_path / "default.nii.gz", plain, image)
    _assert_same_labels(tmp_path / "mirrored.nii.gz", mirrored, image)
