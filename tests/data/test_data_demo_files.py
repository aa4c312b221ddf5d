"""How demo cases are stored: spacing and orientation by case number, and the LPS file's world geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from custom_nets.data.demo.files import case_spacing, save_demo_nifti, stored_in_lps


def test_every_other_case_is_anisotropic_and_cases_2_3_are_lps():
    # index % 4: 0 -> RAS 1 mm, 1 -> RAS anisotropic, 2 -> LPS 1 mm, 3 -> LPS anisotropic
    assert [case_spacing(i) for i in range(5)] == [
        (1.0, 1.0, 1.0), (1.2, 1.0, 1.5), (1.0, 1.0, 1.0), (1.2, 1.0, 1.5), (1.0, 1.0, 1.0)
    ]
    assert [stored_in_lps(i) for i in range(5)] == [False, False, True, True, False]


def test_lps_file_holds_the_same_world_image(tmp_path):
    volume = np.arange(2 * 3 * 2, dtype=np.int16).reshape(2, 3, 2)
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = [-1.0, -1.0, -1.5]
    save_demo_nifti(tmp_path / "ras.nii.gz", volume, affine, index=0)
    save_demo_nifti(tmp_path / "lps.nii.gz", volume, affine, index=2)
    ras, lps = nib.load(str(tmp_path / "ras.nii.gz")), nib.load(str(tmp_path / "lps.nii.gz"))
    np.testing.assert_array_equal(np.asarray(ras.dataobj), volume)
    np.testing.assert_array_equal(ras.affine, affine)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S") and nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    # by hand: voxel (0, 0, 1) of the LPS file is voxel (1, 2, 1) of the RAS one, at world (1, 1, 1.5) mm
    assert np.asarray(lps.dataobj)[0, 0, 1] == volume[1, 2, 1] == 11
    np.testing.assert_allclose(lps.affine @ [0, 0, 1, 1], [1.0, 1.0, 1.5, 1.0])
    assert int(lps.header["qform_code"]) == int(lps.header["sform_code"]) == 1
