"""NT-Xent against a slow double loop over pairs and hand-computed values."""

import math

import pytest
import torch

from custom_nets.losses.ntxent import NTXentLoss, nt_xent


def slow_nt_xent(embeddings: torch.Tensor, temperature: float) -> float:
    rows = [e / e.norm() for e in embeddings.double()]
    two_n = len(rows)
    total = 0.0
    for i in range(two_n):
        partner = (i + two_n // 2) % two_n
        denominator = 0.0
        for k in range(two_n):
            if k != i:
                denominator += math.exp(float(rows[i] @ rows[k]) / temperature)
        total += -math.log(math.exp(float(rows[i] @ rows[partner]) / temperature) / denominator)
    return total / two_n


@pytest.mark.parametrize("n, dim, temperature", [(1, 3, 0.5), (4, 8, 0.5), (7, 5, 0.1), (3, 16, 2.0)])
def test_matches_a_slow_loop(n, dim, temperature):
    torch.manual_seed(n * 100 + dim)
    embeddings = torch.randn(2 * n, dim) * 3
    expected = slow_nt_xent(embeddings, temperature)
    assert nt_xent(embeddings, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert NTXentLoss(temperature)(embeddings, {}).item() == pytest.approx(expected, rel=1e-5)


def test_identical_positives_with_orthogonal_negatives_give_the_hand_computed_minimum():
    n, t = 3, 0.5
    z = torch.cat([torch.eye(n), torch.eye(n)], dim=0) * 2.0  # scale must not matter
    # -log(e^(1/t) / (e^(1/t) + (2n - 2) * e^0))
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert nt_xent(z, t).item() == pytest.approx(expected, rel=1e-6)
    perturbed = z.clone()
    perturbed[n:] += 0.3 * torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    assert nt_xent(perturbed, t).item() > expected


def test_swapping_the_partner_of_a_row_changes_the_loss():
    """Pairing is rows i and i + N: a layout mistake (i and i + 1) must not give the same value."""
    torch.manual_seed(1)
    base = torch.randn(4, 6)
    aligned = torch.cat([base, base + 0.01 * torch.randn(4, 6)])
    shuffled = torch.cat([base, (base + 0.01 * torch.randn(4, 6)).roll(1, dims=0)])
    assert nt_xent(aligned, 0.5) < nt_xent(shuffled, 0.5) - 0.5


def test_dict_outputs_and_errors():
    z = torch.randn(4, 3)
    assert NTXentLoss(key="embedding")({"embedding": z}, {}).item() == pytest.approx(nt_xent(z, 0.5).item())
    with pytest.raises(ValueError, match="2N, D"):
        nt_xent(torch.randn(3, 4), 0.5)
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


def test_gradient_reaches_every_embedding():
    z = torch.randn(6, 4, requires_grad=True)
    nt_xent(z, 0.5).backward()
    assert torch.all(z.grad.abs().sum(dim=1) > 0)


def test_bf16_autocast_does_not_lower_the_precision():
    z = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = nt_xent(z, 0.5)
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == nt_xent(z, 0.5).item()
