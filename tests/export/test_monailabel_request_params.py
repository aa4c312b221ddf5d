"""MONAI Label request parameters reach the exported bundle's inferer: ``mirroring`` (test-time mirroring) is listed
in the model's options, defaults to off on a CPU and on with a GPU, and each request's value decides.

The first test follows the mechanism in this environment: MONAI Label's ``BundleInferTask`` parses
``displayable_configs``, writes the request's values into that section and parses the config again before it
builds the inferer. The second runs MONAI Label's own ``BundleInferTask`` in the MONAI Label environment built by
``scripts/monailabel/install.sh`` (set ``S3D_MONAILABEL_VENV`` to its folder; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

VENV = os.environ.get("S3D_MONAILABEL_VENV")


def _inferer_mirror_axes(bundle: Path, request: dict, device: str = "cpu") -> tuple:
    """What BundleInferTask (monailabel 0.8.5, tasks/infer/bundle.py) does with a request, step by step."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle)})
    parser.config.update({"device": device})
    defaults = parser.get_parsed_content("displayable_configs", instantiate=True)  # the options MONAI Label lists
    data = {**defaults, **request}
    parser["displayable_configs"].update({k: data[k] for k in defaults})
    parser.parse()
    return defaults, parser.get_parsed_content("inferer", instantiate=True).mirror_axes


def test_request_mirroring_reaches_the_inferer(exported, monkeypatch):
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    defaults, axes = _inferer_mirror_axes(exported, {})
    assert defaults == {"mirroring": False} and axes == ()  # CPU: off unless asked
    assert _inferer_mirror_axes(exported, {"mirroring": True})[1] == (0, 1, 2)
    assert _inferer_mirror_axes(exported, {"mirroring": False}, device="cuda") == ({"mirroring": True}, ())
    assert _inferer_mirror_axes(exported, {}, device="cuda")[1] == (0, 1, 2)  # GPU: on unless switched off


def test_command_line_mirroring_takes_text(exported, monkeypatch):
    """``--mirroring false`` arrives as the text 'false' (python-fire), which must not count as true."""
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    for value, expected in (("false", ()), ("true", (0, 1, 2)), (False, ()), (True, (0, 1, 2))):
        parser = ConfigParser()
        parser.read_config(str(exported / "configs" / "inference.json"))
        parser.config.update({"bundle_root": str(exported), "mirroring": value})
        assert parser.get_parsed_content("inferer").mirror_axes == expected, value


@pytest.mark.skipif(not VENV, reason="set S3D_MONAILABEL_VENV to a venv built by scripts/monailabel/install.sh")
def test_monailabel_bundle_infer_task_applies_request_mirroring(exported):
    code = f"""
import json
from monailabel.tasks.infer.bundle import BundleInferTask
task = BundleInferTask({str(exported)!r}, {{}})
assert task.is_valid()
out = {{"listed": {{k: v for k, v in task.config().items() if k == "mirroring"}}}}
for name, params in (("default", {{}}), ("on", {{"mirroring": True}}), ("off", {{"mirroring": False}})):
    data = {{**task.config(), **params, "device": "cpu"}}
    task.pre_transforms(data)
    out[name] = list(task.inferer(data).mirror_axes)
print("RESULT " + json.dumps(out))
"""
    done = subprocess.run([str(Path(VENV) / "bin" / "python"), "-c", code], cwd=exported.parent, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result == {"listed": {"mirroring": False}, "default": [], "on": [0, 1, 2], "off": []}
