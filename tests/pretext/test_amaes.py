"""AMAES: masked, augmented input and clean target; the light decoder uses no skip; a CPU train loop."""

import pytest
import torch

from custom_nets.losses.view_mse import ViewMSELoss
from custom_nets.nets import resenc_unet
from custom_nets.nets.light_decoder import AMAESNet, LightDecoder
from custom_nets.pretext.amaes import AMAESViews
from custom_nets.pretext.intensity_augment import IntensityAugmentation
from custom_nets.transfer import load_pretrained

ALWAYS = IntensityAugmentation(
    bias_field_prob=1.0, blur_prob=1.0, noise_prob=1.0, multiplicative_noise_prob=1.0, ringing_prob=1.0,
    ghosting_prob=1.0, gamma_prob=1.0,
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_intensity_augmentation_changes_the_input_but_not_the_target():
    image = torch.randn(3, 1, 16, 16, 16)
    views = AMAESViews(mask_ratio=0.0, augmentation=ALWAYS)(image, _generator(0))
    assert torch.equal(views["target"], image)
    assert (views["mask"] == 1).all()
    assert ((views["input"] - image).flatten(1).abs().amax(dim=1) > 1e-2).all()
    unaugmented = AMAESViews(mask_ratio=0.0, augmentation=lambda x, g: x)(image, _generator(0))
    assert torch.equal(unaugmented["input"], image)


def test_masked_fraction_blocks_and_zeroed_input():
    image = torch.randn(4, 2, 32, 32, 32) + 5  # no voxel is 0 before masking
    views = AMAESViews()(image, _generator(1))
    mask = views["mask"]
    assert mask.shape == (4, 1, 32, 32, 32)
    blocks = mask.view(4, 8, 4, 8, 4, 8, 4)
    assert (blocks.amax(dim=(2, 4, 6)) == blocks.amin(dim=(2, 4, 6))).all()  # constant on 4^3 blocks
    masked_blocks = (blocks.amax(dim=(2, 4, 6)) == 0).flatten(1).sum(dim=1)
    assert (masked_blocks == round(0.6 * 512)).all()  # exactly round(0.6 * 8^3) per sample
    masked = (mask == 0).expand_as(image)
    assert (views["input"][masked] == 0).all() and (views["input"][~masked] != 0).all()


def test_same_generator_seed_gives_the_same_views():
    image = torch.randn(2, 1, 16, 16, 16)
    a, b = AMAESViews()(image, _generator(2)), AMAESViews()(image, _generator(2))
    c = AMAESViews()(image, _generator(3))
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["mask"], c["mask"])


def test_light_decoder_output_has_the_input_shape():
    network = AMAESNet(resenc_unet("tiny", in_channels=2, num_classes=1))
    assert network(torch.randn(2, 2, 32, 32, 32)).shape == (2, 2, 32, 32, 32)
    network_2d = AMAESNet(resenc_unet("tiny", spatial_dims=2, in_channels=1, num_classes=1))
    assert network_2d(torch.randn(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    assert AMAESNet.decoder_pretrained is False


def test_light_decoder_is_lighter_than_the_unet_decoder():
    backbone = resenc_unet("resenc_l", in_channels=1, num_classes=1)
    light = LightDecoder(3, backbone.encoder.feature_channels, backbone.encoder.strides, 1)
    unet_decoder = [p for n, p in backbone.decoder.named_parameters() if not n.startswith("encoder.")]
    assert sum(p.numel() for p in light.parameters()) < 0.7 * sum(p.numel() for p in unet_decoder)


def test_no_skip_connection_is_used():
    torch.manual_seed(0)
    network = AMAESNet(resenc_unet("tiny", in_channels=1, num_classes=1)).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    encoder = network.backbone.encoder
    original_forward = encoder.forward
    with torch.no_grad():
        reference = network(x)
        stages = original_forward(x)

        def poisoned(*args, **kwargs):  # every stage output but the bottleneck becomes NaN
            outputs = original_forward(*args, **kwargs)
            return [torch.full_like(o, float("nan")) for o in outputs[:-1]] + [outputs[-1]]

        encoder.forward = poisoned
        try:
            perturbed = network(x)
        finally:
            del encoder.forward
        # the same poison does reach the output of a U-Net decoder with skips, so the test can fail
        unet = network.backbone.decoder([torch.full_like(o, float("nan")) for o in stages[:-1]] + [stages[-1]])
    assert torch.equal(perturbed, reference)
    assert torch.isnan(unet).all()


def test_two_adamw_steps_on_cpu_train_the_encoder_only_and_the_encoder_loads_for_fine_tuning():
    torch.manual_seed(0)
    network = AMAESNet(resenc_unet("tiny", in_channels=1, num_classes=1))
    transform, loss_function = AMAESViews(), ViewMSELoss(mask_key="mask")
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=3e-5, amsgrad=True, eps=1e-8)
    image = torch.randn(2, 1, 32, 32, 32)
    stem = network.backbone.encoder.stem.convs[0].conv.weight
    unused = network.backbone.decoder.stages[0].convs[0].conv.weight
    before_stem, before_unused = stem.detach().clone(), unused.detach().clone()
    for step in range(2):
        views = transform(image, _generator(step))
        loss = loss_function(network(views["input"]), views)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert stem.grad.abs().sum() > 0 and unused.grad is None
        torch.nn.utils.clip_grad_norm_(trainable, 12)
        optimizer.step()
    assert not torch.equal(stem, before_stem) and torch.equal(unused, before_unused)
    assert stem.requires_grad  # freezing the U-Net decoder did not freeze the encoder it refers to
    fine_tune = resenc_unet("tiny", in_channels=1, num_classes=4)
    load_pretrained(fine_tune, network.backbone.state_dict(), scope="encoder")
    assert torch.equal(fine_tune.encoder.stages[-1].blocks[0].conv1.conv.weight,
                       network.backbone.encoder.stages[-1].blocks[0].conv1.conv.weight)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="ResEncUNet"):
        AMAESNet(torch.nn.Conv3d(1, 1, 3))
    with pytest.raises(ValueError, match="fixed mask_ratio"):
        AMAESViews(mask_ratio=(0.6, 0.9))
