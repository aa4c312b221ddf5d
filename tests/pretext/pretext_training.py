"""Two plain training steps of a pretext method (network + pretext transform + loss), as the bundle's step does."""

from __future__ import annotations

import torch


def grad_sum(module: torch.nn.Module) -> torch.Tensor:
    """Sum of absolute gradients of a module's parameters (0 when none has a gradient)."""
    return sum((p.grad.abs().sum() for p in module.parameters() if p.grad is not None), torch.tensor(0.0))


def two_sgd_steps(network, pretext, loss_function, image: torch.Tensor, trained=()) -> list:
    """Run two SGD Nesterov steps (lr 1e-2, momentum 0.99, clip 12) on ``image`` with views seeded 0 and 1.

    Checks at every step that the loss is finite and that each module in ``trained`` (e.g. the deepest encoder
    stage) received a gradient, and at the end that the stem's weights changed. Returns the network outputs of
    both steps.
    """
    backbone = getattr(network, "backbone", network)
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-2, momentum=0.99, nesterov=True)
    stem_before = backbone.encoder.stem.convs[0].conv.weight.detach().clone()
    outputs = []
    for iteration in range(2):
        views = pretext(image, torch.Generator().manual_seed(iteration))
        out = network(views["input"])
        loss = loss_function(out, views)
        optimizer.zero_grad()
        loss.backward()
        for module in trained:
            assert grad_sum(module) > 0, f"{type(module).__name__} got no gradient"
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()
        assert torch.isfinite(loss)
        outputs.append(out)
    assert not torch.equal(stem_before, backbone.encoder.stem.convs[0].conv.weight)
    return outputs
