"""Importing nnssl/OpenMind checkpoints (checkpoint_final.pth + adaptation_plan.json) for fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from custom_nets.transfer.nnssl_hub import import_nnssl
from custom_nets.nets import resenc_unet
from custom_nets.transfer import load_pretrained, nnssl_checkpoint, read_checkpoint


@pytest.fixture
def hub_files(tmp_path):
    """A Hub snapshot: the checkpoint without its plan (as some releases ship it) and adaptation_plan.json."""
    torch.manual_seed(0)
    full = nnssl_checkpoint(resenc_unet("tiny").state_dict(), preset="tiny", patch_size=(32, 32, 32))
    folder = tmp_path / "snapshot"
    folder.mkdir()
    torch.save({"network_weights": full["network_weights"]}, folder / "checkpoint_final.pth")
    (folder / "adaptation_plan.json").write_text(json.dumps(full["nnssl_adaptation_plan"]))
    return folder, full


def test_local_folder_import_is_fine_tunable(hub_files, tmp_path):
    folder, full = hub_files
    out = import_nnssl(str(folder), tmp_path / "pretrained.pth")
    state, fmt = read_checkpoint(out)
    assert fmt == "nnssl"
    saved = torch.load(out, weights_only=True)
    assert saved["nnssl_adaptation_plan"] == full["nnssl_adaptation_plan"]
    network = resenc_unet("tiny", in_channels=2, num_classes=3)
    report = load_pretrained(network, out)
    assert report.replicated_stem and not report.missing
    key = "encoder.stages.1.blocks.0.conv1.conv.weight"
    assert torch.equal(network.state_dict()[key], full["network_weights"][key])


def test_hub_download_is_asked_for_both_files(hub_files, tmp_path):
    folder, _ = hub_files
    asked = []

    def download(repo_id, filename, revision):
        asked.append((repo_id, filename, revision))
        return str(folder / filename)

    import_nnssl("AnonRes/ResEncL-OpenMind-MAE", tmp_path / "p.pth", revision="v1", download=download)
    assert asked == [("AnonRes/ResEncL-OpenMind-MAE", f, "v1") for f in ("checkpoint_final.pth", "adaptation_plan.json")]


def test_bad_sources_say_what_to_do(hub_files, tmp_path):
    folder, _ = hub_files

    def offline(repo_id, filename, revision):
        raise ConnectionError("no network")

    with pytest.raises(ValueError, match="could not fetch checkpoint_final.pth.*owner/name"):
        import_nnssl("someone/missing", tmp_path / "p.pth", download=offline)
    with pytest.raises(FileNotFoundError, match="checkpoint_final.pth"):
        import_nnssl(str(tmp_path), tmp_path / "p.pth")
    (folder / "adaptation_plan.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        import_nnssl(str(folder), tmp_path / "p.pth")
    other = tmp_path / "primus"
    other.mkdir()
    torch.save({"network_weights": {"eva.blocks.0.attn.qkv.weight": torch.zeros(6, 2)},
                "nnssl_adaptation_plan": {"architecture_plans": {"arch_class_name": "PrimusM"}}},
               other / "checkpoint_final.pth")
    with pytest.raises(ValueError, match="PrimusM.*no ResEnc encoder"):
        import_nnssl(str(other), tmp_path / "p.pth")
