"""S3D's block masking as a pretext: the same masks as the seeded generator, two network inputs, and the masked
MSE through the views (anonymised voxels left out), checked by hand."""

import pytest
import torch

from custom_nets.engine import network_inputs
from custom_nets.losses import MaskedMSELoss
from custom_nets.losses.view_mse import ViewMSELoss
from custom_nets.masking import BlockMaskGenerator
from custom_nets.nets import S3D, resenc_unet
from custom_nets.pretext.block_masking import BlockMasking


def test_views_are_the_patch_and_the_masks_of_the_seeded_generator():
    image = torch.randn(3, 1, 32, 32, 16)
    views = BlockMasking(8, (0.6, 0.9))(image, torch.Generator().manual_seed(11))
    assert set(views) == {"input", "mask", "target"}
    assert views["input"] is image and views["target"] is image  # the network masks the patch itself
    expected = BlockMaskGenerator(8, (0.6, 0.9))(3, (32, 32, 16), seed=11)
    assert torch.equal(views["mask"], expected)
    # fixed ratio 0.5 of a 4 x 4 x 2 grid: round(0.5 * 32) = 16 masked blocks of 8^3 per sample
    views = BlockMasking(8, 0.5)(image, torch.Generator().manual_seed(0))
    assert (views["mask"] == 0).flatten(1).sum(1).tolist() == [16 * 8**3] * 3


def test_the_network_takes_patch_and_mask():
    assert network_inputs(BlockMasking()) == ("input", "mask")
    assert network_inputs(lambda image, generator: {"input": image}) == ("input",)
    with pytest.raises(ValueError, match="must name the views the network takes"):
        network_inputs(type("Bad", (), {"network_inputs": ()})())
    with pytest.raises(ValueError, match=r"expected a batch \(B, C, \*spatial\)"):
        BlockMasking()(torch.zeros(4, 4), torch.Generator())


def test_view_loss_is_the_masked_mse_without_anonymised_voxels_by_hand():
    # one sample, 1 x 1 x 4 voxels: reconstruction error 1, 2, 3, 4; voxels 0 and 1 visible, voxel 3 anonymised,
    # so only voxel 2 counts: loss = 3^2 / 1 = 9
    target = torch.zeros(1, 1, 1, 1, 4)
    outputs = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 1, 4)
    anonymised = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 1, 4)
    loss = ViewMSELoss(mask_key="mask")
    views = {"target": target, "mask": mask, "anonymization_mask": anonymised}
    assert loss(outputs, views).item() == 9.0
    assert loss(outputs, {"target": target, "mask": mask}).item() == (9.0 + 16.0) / 2  # no anonymisation mask
    assert ViewMSELoss()(outputs, views).item() == (1 + 4 + 9 + 16) / 4  # Models Genesis: every voxel
    # what S3D's former loss call computed
    assert loss(outputs, views) == MaskedMSELoss()(outputs, target, mask, anonymised)


def test_s3d_trains_on_the_views_and_never_sees_masked_content():
    torch.manual_seed(0)
    model = S3D(resenc_unet("tiny", in_channels=1, num_classes=1), block_size=8)
    image = torch.randn(2, 1, 32, 32, 32)
    views = BlockMasking(8, 0.5)(image, torch.Generator().manual_seed(3))
    out = model(*[views[k] for k in network_inputs(BlockMasking())])
    changed = image + 100 * (1 - views["mask"]) * torch.randn_like(image)  # other content where masked
    torch.testing.assert_close(model(changed, views["mask"]), out)
    ViewMSELoss(mask_key="mask")(out, views).backward()
    assert model.backbone.encoder.stem.convs[0].conv.weight.grad.abs().sum() > 0
