"""VoCo loss against slow loops over crops and base crops, and hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from custom_nets.losses.voco import VoCoLoss, split_voco_embeddings


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double()[None], b.double()[None])[0])


def slow_voco(embeddings, overlaps, prediction_weight=1.0, regularization_weight=1.0):
    batch, n, k = overlaps.shape
    bases = [[embeddings[b * k + i] for i in range(k)] for b in range(batch)]
    crops = [[embeddings[batch * k + b * n + j] for j in range(n)] for b in range(batch)]
    pos_sum, weight_sum, neg_sum, neg_count = 0.0, 0.0, 0.0, 0
    for b in range(batch):
        for j in range(n):
            for i in range(k):
                y = float(overlaps[b, j, i])
                logit = max(cosine(crops[b][j], bases[b][i]), 0.0)
                if y > 0:
                    pos_sum += y * -math.log(1 - abs(y - logit) + 1e-6)
                    weight_sum += y
                else:
                    neg_sum += logit**2
                    neg_count += 1
    prediction = pos_sum / weight_sum + (neg_sum / neg_count if neg_count else 0.0)
    pairs = [max(cosine(bases[b][i], bases[b][m]), 0.0) for b in range(batch) for i in range(k) for m in range(i + 1, k)]
    regularization = sum(pairs) / len(pairs)
    return prediction_weight * prediction + regularization_weight * regularization


def random_overlaps(batch, n, k, generator):
    overlaps = torch.rand(batch, n, k, generator=generator)
    overlaps = overlaps * (torch.rand(batch, n, k, generator=generator) < 0.5)  # many exact zeros
    overlaps[..., 0] += 0.1
    return overlaps / overlaps.sum(-1, keepdim=True)


@pytest.mark.parametrize("batch, n, k, dim", [(1, 2, 4, 8), (3, 4, 4, 16), (2, 3, 9, 5)])
def test_matches_slow_loops(batch, n, k, dim):
    g = torch.Generator().manual_seed(batch * 10 + k)
    embeddings = torch.randn(batch * (k + n), dim, generator=g)
    overlaps = random_overlaps(batch, n, k, g)
    views = {"overlaps": overlaps}
    assert VoCoLoss()(embeddings, views).item() == pytest.approx(slow_voco(embeddings, overlaps), rel=1e-5)
    weighted = VoCoLoss(prediction_weight=2.0, regularization_weight=0.5)(embeddings, views).item()
    assert weighted == pytest.approx(slow_voco(embeddings, overlaps, 2.0, 0.5), rel=1e-5)


def test_perfect_prediction_and_orthogonal_bases_give_zero():
    # Orthonormal bases; each random crop lies entirely in one base crop and equals that base's embedding.
    k, n = 4, 3
    bases = torch.eye(k)
    owner = [2, 0, 3]
    crops = torch.stack([bases[i] for i in owner])
    overlaps = torch.zeros(1, n, k)
    overlaps[0, torch.arange(n), torch.tensor(owner)] = 1.0
    terms = VoCoLoss().terms(torch.cat([bases, crops]), {"overlaps": overlaps})
    assert terms["prediction"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["regularization"].item() == pytest.approx(0.0, abs=1e-7)


def test_regularizer_hand_value():
    # Three bases: cos(q0, q1) = 1, cos(q0, q2) = 0, cos(q1, q2) = 0 -> mean over 3 pairs = 1/3.
    bases = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])
    assert VoCoLoss.regularization_loss(bases).item() == pytest.approx(1 / 3)
    # Negative similarities are not penalised (ReLU).
    assert VoCoLoss.regularization_loss(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])).item() == 0.0


def test_prediction_term_does_not_move_the_base_embeddings():
    g = torch.Generator().manual_seed(3)
    bases = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    crops = torch.randn(2, 3, 6, generator=g, requires_grad=True)
    VoCoLoss.prediction_loss(bases, crops, random_overlaps(2, 3, 4, g)).backward()
    assert bases.grad is None and crops.grad.abs().sum() > 0


def test_layout_and_shape_errors():
    embeddings = torch.arange(2 * (4 + 3) * 2, dtype=torch.float32).view(14, 2)
    bases, crops = split_voco_embeddings(embeddings, torch.zeros(2, 3, 4))
    assert torch.equal(bases[1, 2], embeddings[1 * 4 + 2]) and torch.equal(crops[1, 0], embeddings[8 + 3])
    with pytest.raises(ValueError, match="embeddings"):
        VoCoLoss()(torch.randn(13, 2), {"overlaps": torch.zeros(2, 3, 4)})


def test_bf16_autocast_does_not_lower_the_precision():
    g = torch.Generator().manual_seed(4)
    embeddings, overlaps = torch.randn(2 * (4 + 3), 32, generator=g), random_overlaps(2, 3, 4, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = VoCoLoss()(embeddings, {"overlaps": overlaps})
    assert under_autocast.item() == pytest.approx(VoCoLoss()(embeddings, {"overlaps": overlaps}).item(), rel=1e-6)
