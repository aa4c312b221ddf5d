"""PretextIteration: the train step of the baselines, checked against a hand-written step and for reproducibility."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from torch import nn

from custom_nets.engine import PretextIteration


class NoisyCopy:
    """Toy pretext: the input is the image plus generator noise, the target is the clean image."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict:
        noise = torch.randn(image.shape, generator=generator, device=image.device)
        return {"input": image + noise, "target": image}


class TargetMSE(nn.Module):
    def forward(self, outputs: torch.Tensor, views: dict) -> torch.Tensor:
        return torch.mean((outputs - views["target"]) ** 2)


def _trainer(network, batches, pretext, seed=3, clip=None):
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=optimizer,
        loss_function=TargetMSE(),
        iteration_update=PretextIteration(pretext, grad_clip_norm=clip, amp=False, seed=seed),
        decollate=False,
    )


def _batches(n=2):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2, 1, 6, 6, 6, generator=g)} for _ in range(n)]


def test_step_equals_a_hand_written_step_with_the_same_views():
    torch.manual_seed(0)
    network = nn.Conv3d(1, 1, 3, padding=1)
    reference = copy.deepcopy(network)
    batches = _batches(2)
    iteration = PretextIteration(NoisyCopy(), grad_clip_norm=None, amp=False, seed=3)
    trainer = _trainer(network, batches, NoisyCopy())
    trainer.run()

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for k, batch in enumerate(batches, start=1):  # Ignite counts iterations from 1
        views = iteration.views(batch["image"], k)
        optimizer.zero_grad()
        loss = torch.mean((reference(views["input"]) - views["target"]) ** 2)
        loss.backward()
        optimizer.step()
    for a, b in zip(network.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert trainer.state.output["loss"].item() == pytest.approx(loss.item(), rel=1e-6)


def test_views_depend_only_on_seed_and_iteration():
    image = torch.randn(2, 1, 4, 4, 4)
    a = PretextIteration(NoisyCopy(), seed=1).views(image, 5)["input"]
    b = PretextIteration(NoisyCopy(), seed=1).views(image, 5)["input"]
    c = PretextIteration(NoisyCopy(), seed=1).views(image, 6)["input"]
    d = PretextIteration(NoisyCopy(), seed=2).views(image, 5)["input"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_output_holds_views_and_detached_prediction_and_events_fire():
    network = nn.Conv3d(1, 1, 1)
    trainer = _trainer(network, _batches(1), NoisyCopy())
    fired = []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED, IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    out = trainer.state.output
    assert set(out) >= {"image", "input", "target", "pred", "loss"}
    assert not out["pred"].requires_grad and not out["loss"].requires_grad
    assert fired == [
        IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED,
    ]


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    network = nn.Conv3d(1, 1, 3, padding=1)
    before = [p.detach().clone() for p in network.parameters()]
    batches = [{"image": 100 * torch.randn(2, 1, 6, 6, 6)}]
    _trainer(network, batches, NoisyCopy(), clip=0.5).run()
    step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(network.parameters(), before)))
    assert step.item() == pytest.approx(0.1 * 0.5, rel=1e-4)  # lr x clipped gradient norm


def test_bad_pretext_is_reported():
    with pytest.raises(ValueError, match="callable"):
        PretextIteration(pretext=3)
    with pytest.raises(ValueError, match="'input'"):
        PretextIteration(lambda image, generator: {"x": image}).views(torch.zeros(1, 1, 2, 2, 2), 1)


def test_s3d_through_the_step_equals_the_former_masked_image_modelling_step():
    """Block masking as a pretext: network(image, mask) and the masked MSE without anonymised voxels, with the masks
    of BlockMaskGenerator seeded by step_seed, exactly as the former S3D-only step computed them."""
    from custom_nets.engine import step_seed
    from custom_nets.losses import MaskedMSELoss
    from custom_nets.losses.view_mse import ViewMSELoss
    from custom_nets.masking import BlockMaskGenerator
    from custom_nets.nets import S3D, resenc_unet
    from custom_nets.pretext.block_masking import BlockMasking

    torch.manual_seed(0)
    network = S3D(resenc_unet("tiny", in_channels=1, num_classes=1), block_size=8)
    reference = copy.deepcopy(network)
    g = torch.Generator().manual_seed(1)
    batches = [
        {"image": torch.randn(2, 1, 32, 32, 32, generator=g), "anonymization_mask": (torch.rand(2, 1, 32, 32, 32, generator=g) > 0.7).float()}
        for _ in range(2)
    ]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9), loss_function=ViewMSELoss(mask_key="mask"),
        iteration_update=PretextIteration(BlockMasking(8, (0.6, 0.9)), grad_clip_norm=12.0, amp=False, seed=5),
        decollate=False,
    )
    trainer.run()

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    masks = BlockMaskGenerator(8, (0.6, 0.9))
    for k, batch in enumerate(batches, start=1):
        mask = masks(2, (32, 32, 32), seed=step_seed(5, k))
        optimizer.zero_grad()
        loss = MaskedMSELoss()(reference(batch["image"], mask), batch["image"], mask, batch["anonymization_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 12.0)
        optimizer.step()
    for a, b in zip(network.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(trainer.state.output["loss"], loss.detach())
    assert torch.equal(trainer.state.output["anonymization_mask"], batches[1]["anonymization_mask"])
    assert torch.equal(trainer.state.output["mask"], mask)
