"""Models Genesis: each deformation's statistics against slow oracles, the probabilities, a CPU train loop."""

import itertools

import pytest
import torch
from pretext_training import two_sgd_steps

from custom_nets.losses.view_mse import ViewMSELoss
from custom_nets.nets import resenc_unet
from custom_nets.pretext.models_genesis import ModelsGenesis, bezier_curve_table, bezier_map, local_pixel_shuffle
from custom_nets.transfer import load_pretrained

OFF = {"flip_prob": 0.0, "shuffle_prob": 0.0, "nonlinear_prob": 0.0, "paint_prob": 0.0}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _slow_union(starts, sizes, count, spatial):
    """Python-slicing oracle of the union of the first count[b] boxes."""
    union = torch.zeros((starts.shape[0], 1, *spatial), dtype=torch.bool)
    for b in range(starts.shape[0]):
        for k in range(int(count[b])):
            region = tuple(slice(s, s + n) for s, n in zip(starts[b, k].tolist(), sizes[b, k].tolist()))
            union[(b, 0) + region] = True
    return union


def test_in_painting_replaces_only_the_boxes_which_lie_inside_the_volume():
    transform = ModelsGenesis(**{**OFF, "paint_prob": 1.0, "inpaint_prob": 1.0})
    image = torch.randn(6, 2, 32, 30, 28)
    params = transform.draw(6, (32, 30, 28), _generator(0))
    views = transform.apply(image, params, _generator(1))
    starts, sizes, count = params["inpaint_starts"], params["inpaint_sizes"], params["inpaint_count"]
    assert params["inpaint"].all() and not params["outpaint"].any()
    assert starts.min() >= 3 and ((starts + sizes) <= torch.tensor([32 - 3, 30 - 3, 28 - 3])).all()
    for axis, edge in enumerate((32, 30, 28)):  # sides in [edge // 6, edge // 3]
        assert sizes[..., axis].min() >= edge // 6 and sizes[..., axis].max() <= edge // 3
    inside = _slow_union(starts, sizes, count, (32, 30, 28)).expand_as(image)
    assert torch.equal(views["input"][~inside], image[~inside])
    assert (views["input"][inside] != image[inside]).all()
    low, high = image.amin(dim=(2, 3, 4), keepdim=True), image.amax(dim=(2, 3, 4), keepdim=True)
    assert ((views["input"] >= low) & (views["input"] <= high)).all()  # noise within each channel's range
    assert torch.equal(views["target"], image)


def test_out_painting_keeps_only_the_boxes():
    transform = ModelsGenesis(**{**OFF, "paint_prob": 1.0, "inpaint_prob": 0.0})
    image = torch.randn(6, 1, 28, 28, 28)
    params = transform.draw(6, (28, 28, 28), _generator(2))
    views = transform.apply(image, params, _generator(3))
    sizes, count = params["outpaint_sizes"], params["outpaint_count"]
    assert params["outpaint"].all() and (count >= 1).all() and (count <= 5).all()
    assert sizes.min() >= int(28 * 3 / 7) and sizes.max() <= int(28 * 4 / 7)
    kept = _slow_union(params["outpaint_starts"], sizes, count, (28, 28, 28)).expand_as(image)
    assert torch.equal(views["input"][kept], image[kept])
    assert (views["input"][~kept] != image[~kept]).all()
    assert 0.05 < kept.float().mean() < 0.6


def test_box_counts_follow_the_continuation_probability():
    params = ModelsGenesis().draw(20000, (32, 32, 32), _generator(4))
    inpaint, outpaint = params["inpaint_count"].float(), params["outpaint_count"].float()
    assert inpaint.min() == 0 and inpaint.max() == 5 and outpaint.min() == 1 and outpaint.max() == 5
    expected = sum(0.95**k for k in range(1, 6))  # P(count >= k) = 0.95^k
    assert abs(inpaint.mean().item() - expected) < 0.03
    assert abs(outpaint.mean().item() - (1 + sum(0.95**k for k in range(1, 5)))) < 0.03
    assert abs((inpaint == 0).float().mean().item() - 0.05) < 0.01


def test_probabilities_are_honoured_over_many_draws():
    params = ModelsGenesis().draw(20000, (32, 32, 32), _generator(5))

    def rate(flag):
        return flag.float().mean().item()

    assert abs(rate(params["flip_steps"] >= 1) - 0.4) < 0.015
    assert abs(rate(params["flip_steps"] >= 2) - 0.16) < 0.015
    assert abs(rate(params["shuffle"]) - 0.5) < 0.015
    assert abs(rate(params["nonlinear"]) - 0.9) < 0.015
    assert abs(rate(params["decreasing"]) - 0.5) < 0.015
    assert abs(rate(params["inpaint"]) - 0.9 * 0.2) < 0.015
    assert abs(rate(params["outpaint"]) - 0.9 * 0.8) < 0.015
    assert not (params["inpaint"] & params["outpaint"]).any()
    blocks = params["block"]
    assert blocks.min() == 1 and blocks.max() == 3 and (params["offset"] < blocks).all()


def test_flip_is_applied_to_input_and_target_by_parity():
    transform = ModelsGenesis(**{**OFF, "flip_prob": 1.0})
    image = torch.randn(8, 1, 6, 7, 8)
    params = transform.draw(8, (6, 7, 8), _generator(6))
    views = transform.apply(image, params, _generator(7))
    assert (params["flip_steps"] == 3).all()
    for b in range(8):
        axes = [2 + d for d in range(3) if params["flip_parity"][b, d]]
        expected = image[b : b + 1].flip(axes) if axes else image[b : b + 1]
        assert torch.equal(views["target"][b : b + 1], expected)
    assert torch.equal(views["input"], views["target"])


def test_pixel_shuffle_keeps_the_multiset_of_every_block():
    image = torch.randperm(2 * 20 * 21 * 22).float().view(1, 2, 20, 21, 22)  # distinct values
    image[:, 1] = image[:, 0] * 2 + 1  # a co-registered second channel
    block, offset = torch.tensor([[3, 4, 2]]), torch.tensor([[1, 0, 1]])
    shuffled = local_pixel_shuffle(image, block, offset, 1.0, _generator(8))
    assert torch.equal(shuffled[:, 1], shuffled[:, 0] * 2 + 1)  # one permutation for all channels
    moved = 0
    edges = [range(-o, n, b) for n, b, o in zip((20, 21, 22), block[0].tolist(), offset[0].tolist())]
    for x0, y0, z0 in itertools.product(*edges):
        region = (0, 0, slice(max(x0, 0), x0 + 3), slice(max(y0, 0), y0 + 4), slice(max(z0, 0), z0 + 2))
        before, after = image[region].flatten(), shuffled[region].flatten()
        assert torch.equal(before.sort().values, after.sort().values)
        moved += int((before != after).any())
    assert moved > 0.9 * len(list(itertools.product(*edges)))


def test_pixel_shuffle_fraction_of_blocks():
    image = torch.randperm(40 * 40 * 40).float().view(1, 1, 40, 40, 40)
    block, offset = torch.tensor([[2, 2, 2]]), torch.zeros(1, 3, dtype=torch.int64)
    untouched = local_pixel_shuffle(image, block, offset, 0.0, _generator(9))
    assert torch.equal(untouched, image)
    shuffled = local_pixel_shuffle(image, block, offset, 0.8, _generator(9))
    changed = (shuffled != image).view(20, 2, 20, 2, 20, 2).any(dim=(1, 3, 5)).float().mean()
    # a selected 2^3 block keeps its order with probability 1/40320, so ~80 % of the blocks change
    assert abs(changed.item() - 0.8) < 0.03


def test_bezier_mapping_is_monotone_on_the_unit_interval_and_follows_the_curve():
    control = torch.rand(64, 4, generator=_generator(10))
    decreasing = torch.arange(64) % 2 == 1
    xs, ys = bezier_curve_table(control, decreasing, 2001)
    values = torch.linspace(0, 1, 5001).expand(64, -1)
    mapped = bezier_map(values, xs, ys)
    assert mapped.min() >= 0 and mapped.max() <= 1
    steps = mapped.diff(dim=1)
    assert (steps[~decreasing] >= 0).all() and (steps[decreasing] <= 0).all()
    torch.testing.assert_close(mapped[:, 0], decreasing.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(mapped[:, -1], 1 - decreasing.float(), atol=1e-4, rtol=0)
    # oracle: the closed-form curve in float64, f(Bx(t)) = By(t) (increasing) or By(1 - t) (decreasing)
    t = torch.rand(200, dtype=torch.float64, generator=_generator(11))
    c = control.double()

    def bezier(p1, p2, s):
        return 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3

    for b in (0, 1, 2, 3):
        x = bezier(c[b, 0], c[b, 2], t)
        y = bezier(c[b, 1], c[b, 3], 1 - t if decreasing[b] else t)
        got = bezier_map(x.float()[None], xs[b : b + 1], ys[b : b + 1])[0]
        torch.testing.assert_close(got.double(), y, atol=2e-3, rtol=0)


def test_nonlinear_transform_keeps_each_channels_range_and_order():
    transform = ModelsGenesis(**{**OFF, "nonlinear_prob": 1.0})
    image = torch.randn(4, 2, 12, 12, 12) * 3 + 1
    params = transform.draw(4, (12, 12, 12), _generator(12))
    out = transform.apply(image, params, _generator(13))["input"]
    for b in range(4):
        for c in range(2):
            x, y = image[b, c].flatten(), out[b, c].flatten()
            torch.testing.assert_close(y.min(), x.min())
            torch.testing.assert_close(y.max(), x.max())
            y_by_x = y[x.argsort()]
            steps = y_by_x.diff()
            tolerance = 1e-5 * (x.max() - x.min())
            assert (steps <= tolerance).all() if params["decreasing"][b] else (steps >= -tolerance).all()


def test_constant_channel_is_left_unchanged_by_the_intensity_transform():
    transform = ModelsGenesis(**{**OFF, "nonlinear_prob": 1.0})
    image = torch.full((2, 1, 8, 8, 8), 0.7)
    assert torch.equal(transform(image, _generator(14))["input"], image)


def test_same_generator_seed_gives_the_same_views():
    image = torch.randn(3, 1, 20, 20, 20)
    a, b = ModelsGenesis()(image, _generator(15)), ModelsGenesis()(image, _generator(15))
    c = ModelsGenesis()(image, _generator(16))
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["input"], c["input"])


def test_works_in_2d():
    views = ModelsGenesis(paint_prob=1.0)(torch.randn(4, 1, 40, 40), _generator(17))
    assert views["input"].shape == views["target"].shape == (4, 1, 40, 40)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="flip_prob"):
        ModelsGenesis(flip_prob=1.5)
    with pytest.raises(ValueError, match="inpaint_size"):
        ModelsGenesis(inpaint_size=(0.5, 0.2))


def test_two_training_steps_on_cpu_and_the_weights_load_for_fine_tuning():
    torch.manual_seed(0)
    transform, loss_function = ModelsGenesis(), ViewMSELoss()
    network = resenc_unet("tiny", in_channels=1, num_classes=1)
    image = torch.randn(2, 1, 32, 32, 32)
    two_sgd_steps(network, transform, loss_function, image, trained=[network.encoder.stem, network.decoder.stages[0]])
    stem = network.encoder.stem.convs[0].conv.weight
    fine_tune = resenc_unet("tiny", in_channels=1, num_classes=3)
    load_pretrained(fine_tune, network.state_dict(), scope="encoder+decoder")
    assert torch.equal(fine_tune.encoder.stem.convs[0].conv.weight, stem)
    assert torch.equal(fine_tune.decoder.stages[0].convs[0].conv.weight, network.decoder.stages[0].convs[0].conv.weight)
