"""Mirrored sliding-window inference against an explicit loop over the mirror set."""

import itertools

import torch

from custom_nets.evaluation.inference import MirroredSlidingWindowInferer


class PositionNet(torch.nn.Module):
    """Logits depend on the voxel position, so mirroring changes them (an asymmetric oracle)."""

    def forward(self, x):
        d, h, w = x.shape[2:]
        ramp = torch.linspace(0, 1, d).view(1, 1, d, 1, 1) + torch.linspace(0, 2, w).view(1, 1, 1, 1, w)
        return torch.cat([x, x * ramp + ramp], dim=1)


def test_mirror_set_has_every_axis_combination():
    sets = MirroredSlidingWindowInferer(8).mirror_sets()
    assert len(sets) == 8 and sets[0] == () and (2, 3, 4) in sets


def test_mirrored_average_equals_an_explicit_loop():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 8, 8)
    net = PositionNet()
    inferer = MirroredSlidingWindowInferer(roi_size=8, overlap=0.5)  # one window covers the image
    expected = torch.zeros(1, 2, 8, 8, 8)
    combos = [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]
    for dims in combos:
        xi = torch.flip(x, dims) if dims else x
        p = torch.softmax(net(xi), 1)
        expected += torch.flip(p, dims) if dims else p
    torch.testing.assert_close(inferer(x, net), expected / 8)


def test_without_mirroring_it_is_the_softmax_of_sliding_window_inference():
    torch.manual_seed(1)
    x = torch.randn(1, 1, 12, 12, 12)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    out = MirroredSlidingWindowInferer(roi_size=8, overlap=0.5, mirror_axes=())(x, conv)
    assert out.shape == (1, 3, 12, 12, 12)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 12, 12, 12))
    from monai.inferers import SlidingWindowInferer

    with torch.no_grad():
        reference = torch.softmax(SlidingWindowInferer(8, overlap=0.5, mode="gaussian")(x, conv), 1)
    torch.testing.assert_close(out.detach(), reference)
