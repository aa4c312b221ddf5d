"""Fixtures for the model-zoo export tests (see export_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from export_helpers import write_image, write_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported as bundle 's3d_tiny' version 0.1.0 (folder; the zip is beside it)."""
    from custom_nets.export import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("zoo"), name="s3d_tiny", version="0.1.0")


@pytest.fixture(scope="module")
def image_4d(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("images") / "case_a.nii.gz")


@pytest.fixture(scope="module")
def without_custom_nets(tmp_path_factory) -> dict:
    """Environment for a subprocess in which ``import custom_nets`` fails (a shadowing package on PYTHONPATH)."""
    shadow = tmp_path_factory.mktemp("shadow")
    (shadow / "custom_nets").mkdir()
    (shadow / "custom_nets" / "__init__.py").write_text("raise ImportError('custom_nets is not installed here')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(shadow)
    env["OMP_NUM_THREADS"] = "2"
    return env
