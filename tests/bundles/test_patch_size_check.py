"""A patch (or crop) the network preset cannot take stops the run in ``initialize``, before any data work, with the
smallest valid size in the message: pre-training, a baseline that cuts crops, and fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from custom_nets.nets import check_patch_size, smallest_patch_size

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = str(ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml")
SIMCLR = str(ROOT / "bundles" / "baselines" / "configs" / "simclr.yaml")
FINETUNE = str(ROOT / "bundles" / "s3d_finetune" / "configs" / "train.yaml")


def test_the_rule_and_the_smallest_size_by_hand():
    # demo and resenc_l: 5 stride-2 stages, 1/32; tiny: 3, 1/8. The bottleneck needs more than one voxel.
    assert smallest_patch_size("demo") == smallest_patch_size("resenc_l") == 64 and smallest_patch_size("tiny") == 16
    assert check_patch_size("resenc_l", [160, 160, 160]) == (160, 160, 160)
    assert check_patch_size("demo", [64, 32, 32]) == (64, 32, 32)  # 2 x 1 x 1 bottleneck voxels
    with pytest.raises(ValueError) as info:
        check_patch_size("demo", [32, 32, 32])
    assert str(info.value) == (
        "patch_size [32, 32, 32] does not fit network preset 'demo': every size must be a multiple of 32 (its total "
        "downsampling) with more than one voxel left at the bottleneck; the smallest valid cube is 64^3. Set "
        '--patch_size "[64,32,32]" (the nearest valid size) or larger.'
    )
    with pytest.raises(ValueError, match=r'--patch_size "\[128,128,64\]"'):
        check_patch_size("demo", [100, 97, 64])
    with pytest.raises(ValueError, match="unknown network preset 'huge'"):
        check_patch_size("huge", [64, 64, 64])


@pytest.mark.parametrize(
    "files, overrides, message",
    [
        ([PRETRAIN], {"network_preset": "demo", "patch_size": [32, 32, 32]}, "patch_size [32, 32, 32]"),
        ([PRETRAIN, SIMCLR], {"network_preset": "tiny", "patch_size": [32, 32, 32], "crop_size": [8, 8, 8]},
         "crop_size [8, 8, 8] does not fit network preset 'tiny'"),
        ([FINETUNE], {"network_preset": "tiny", "patch_size": [12, 32, 32]}, "patch_size [12, 32, 32]"),
    ],
    ids=["pretrain", "baseline_crop", "finetune"],
)
def test_bundles_refuse_the_patch_in_initialize_before_any_work(files, overrides, message, tmp_path, monkeypatch,
                                                               error_messages):
    work = []
    monkeypatch.setattr("custom_nets.data.prepare_dataset", lambda *a, **k: work.append("pretrain data"))
    monkeypatch.setattr("custom_nets.data.prepare_segmentation_dataset", lambda *a, **k: work.append("labeled data"))
    out = tmp_path / "run"
    workflow = ConfigWorkflow(
        config_file=files, workflow_type="train", logging_file=False, output_dir=str(out), device="cpu", **overrides
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    chain = error_messages(info.value)
    assert any(m.startswith(message) and "smallest valid cube is" in m for m in chain), chain
    assert work == [] and not out.exists()
