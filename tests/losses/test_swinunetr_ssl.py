"""SwinUNETR pre-training loss: each term against a slow loop, and the weighted total."""

import math

import pytest
import torch

from custom_nets.losses.swinunetr_ssl import SwinUNETRSSLLoss


def random_case(seed=0, n=3, channels=2, size=4, dim=5):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "reconstruction": torch.randn(2 * n, channels, size, size, size, generator=g),
        "rotation": torch.randn(2 * n, 4, generator=g),
        "embedding": torch.randn(2 * n, dim, generator=g),
    }
    views = {
        "target": torch.randn(2 * n, channels, size, size, size, generator=g),
        "rotation": torch.randint(0, 4, (2 * n,), generator=g),
        "cutout": (torch.rand(2 * n, 1, size, size, size, generator=g) < 0.3).float(),
    }
    return outputs, views


def slow_l1(reconstruction, target, cutout=None):
    total, count = 0.0, 0
    for index in torch.cartesian_prod(*[torch.arange(s) for s in reconstruction.shape]):
        r, c, *voxel = index.tolist()
        if cutout is not None and cutout[(r, 0, *voxel)] == 0:
            continue
        total += abs(float(reconstruction[(r, c, *voxel)]) - float(target[(r, c, *voxel)]))
        count += 1
    return total / count


def slow_cross_entropy(logits, labels):
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        total += -(row[label] - math.log(sum(math.exp(v) for v in row)))
    return total / len(labels)


def slow_contrastive(embeddings, t):
    z = [e / e.norm() for e in embeddings.double()]
    two_n = len(z)
    total = 0.0
    for i in range(two_n):
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(two_n) if k != i)
        total -= math.log(math.exp(float(z[i] @ z[(i + two_n // 2) % two_n]) / t) / denominator)
    return total / two_n


def test_each_term_matches_a_slow_loop():
    outputs, views = random_case()
    terms = SwinUNETRSSLLoss().terms(outputs, views)
    assert terms["inpainting"].item() == pytest.approx(slow_l1(outputs["reconstruction"], views["target"]), rel=1e-5)
    assert terms["rotation"].item() == pytest.approx(slow_cross_entropy(outputs["rotation"], views["rotation"]), rel=1e-5)
    assert terms["contrastive"].item() == pytest.approx(slow_contrastive(outputs["embedding"], 0.5), rel=1e-5)
    masked = SwinUNETRSSLLoss(region="cutout").terms(outputs, views)["inpainting"].item()
    assert masked == pytest.approx(slow_l1(outputs["reconstruction"], views["target"], views["cutout"]), rel=1e-5)


def test_total_is_the_weighted_sum_of_the_three_terms():
    outputs, views = random_case(seed=1)
    terms = SwinUNETRSSLLoss().terms(outputs, views)
    assert SwinUNETRSSLLoss()(outputs, views).item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)
    weighted = SwinUNETRSSLLoss(inpainting_weight=2.0, rotation_weight=3.0, contrastive_weight=5.0)(outputs, views)
    expected = 2 * terms["inpainting"] + 3 * terms["rotation"] + 5 * terms["contrastive"]
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


def test_perfect_reconstruction_costs_nothing_in_the_inpainting_term():
    outputs, views = random_case(seed=2)
    outputs["reconstruction"] = views["target"].clone()
    assert SwinUNETRSSLLoss().terms(outputs, views)["inpainting"].item() == 0.0


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="region"):
        SwinUNETRSSLLoss(region="masked")
    with pytest.raises(ValueError, match="temperature"):
        SwinUNETRSSLLoss(temperature=-1)
