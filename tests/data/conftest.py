"""Fixtures for the data pipeline tests: writing small NIfTI files with a chosen geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def _save(path, data, affine=None, spacing=(1.0, 1.0, 1.0)) -> str:
    """Save ``data`` as NIfTI at ``path`` (parents created); default affine is RAS with ``spacing``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return str(path)


@pytest.fixture
def write_nifti():
    """``write_nifti(path, data, affine=None, spacing=(1, 1, 1)) -> str`` (path of the file)."""
    return _save


@pytest.fixture
def lps_affine():
    """``lps_affine(shape, spacing=(1, 1, 1))``: LPS affine whose world frame matches a RAS volume
    stored with the first two axes flipped (voxel (0, 0, 0) sits at the most right-anterior corner)."""

    def make(shape, spacing=(1.0, 1.0, 1.0)):
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
        affine[0, 3] = (shape[0] - 1) * spacing[0]
        affine[1, 3] = (shape[1] - 1) * spacing[1]
        return affine

    return make
