"""One converter from every pre-training network to fine-tuning weights (custom_nets.nets.pretrained_weights)."""

import pytest
import torch
from torch import nn

from custom_nets.nets import S3D, dense_state_dict, resenc_unet
from custom_nets.nets.pretrained_weights import pretrained_state_dict
from custom_nets.transfer import load_pretrained

# Tiny preset, counted by hand (see tests/test_transfer.py): stem 4, stage 0: 8, stages 1 and 2: 11 + 8 each,
# stage 3: 11 tensors, each counted once.
N_ENCODER = 4 + 8 + (11 + 8) + (11 + 8) + 11  # 61


class _EncoderOnlyMethod(nn.Module):
    """A pre-training wrapper whose U-Net decoder gets no gradient (like SimCLR / VoCo / AMAES)."""

    decoder_pretrained = False

    def __init__(self):
        super().__init__()
        self.backbone = resenc_unet("tiny", in_channels=1, num_classes=1)
        self.projection = nn.Linear(16, 8)


def test_pretrained_state_dict_of_each_kind_of_network(tmp_path):
    unet = resenc_unet("tiny", in_channels=1, num_classes=1)
    assert pretrained_state_dict(unet).keys() == unet.state_dict().keys()
    s3d = S3D(resenc_unet("tiny", in_channels=1, num_classes=1), block_size=8)
    assert pretrained_state_dict(s3d).keys() == dense_state_dict(s3d).keys()
    method = _EncoderOnlyMethod()
    state = pretrained_state_dict(method)
    assert state and all(k.startswith(("encoder.stem", "encoder.stages")) for k in state)
    assert not any("projection" in k for k in state)
    for key, value in state.items():
        assert torch.equal(value, method.backbone.state_dict()[key])
    # the encoder-only export loads for encoder transfer, and encoder+decoder transfer says why it cannot
    torch.save(state, tmp_path / "model.pt")
    target = resenc_unet("tiny", in_channels=2, num_classes=3)
    report = load_pretrained(target, tmp_path / "model.pt", scope="encoder")
    assert len(report.loaded) == N_ENCODER
    with pytest.raises(ValueError, match="no pre-trained decoder.*transfer_scope 'encoder'"):
        load_pretrained(target, tmp_path / "model.pt", scope="encoder+decoder")


def test_s3d_export_equals_the_s3d_checkpoint_reader_tensor_for_tensor():
    """The S3D run's model.pt (one converter for all methods) is what S3D's own reader gave before."""
    torch.manual_seed(0)
    s3d = S3D(resenc_unet("tiny", in_channels=1, num_classes=1), block_size=8)
    reference = dense_state_dict(s3d)
    for wrapped in (s3d, nn.DataParallel(s3d)):
        state = pretrained_state_dict(wrapped)
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) and state[k].device.type == "cpu" for k in state)
    assert not any("mask_token" in k or "densify" in k for k in pretrained_state_dict(s3d))
    # strict load into a plain ResEnc U-Net: nothing missing, nothing extra
    resenc_unet("tiny", in_channels=1, num_classes=1).load_state_dict(pretrained_state_dict(s3d), strict=True)


def test_a_network_without_resenc_weights_is_refused():
    class _Head(nn.Module):
        decoder_pretrained = False

        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="_Head has no ResEnc encoder weights to export"):
        pretrained_state_dict(_Head())
