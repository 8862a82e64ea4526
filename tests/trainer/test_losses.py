"""The composite loss equals the method's formula computed by hand (pure tensor functions, no model)."""

import math

import pytest
import torch

from trl_crome.trainer.losses import composite_loss, preference_loss, tie_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


DELTAS = [2.0, -1.0, 0.5, 0.0, -3.0, 1.5]
TIES = [False, True, False, True, True, False]
MARGINS = [0.5, 0.0, 1.0, 2.0, 0.0, -0.5]


@pytest.mark.parametrize("tie_loss_weight", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("with_margin", [False, True])
def test_mixed_batch_equals_hand_formula(tie_loss_weight, with_margin):
    expected = []
    for delta, tie, margin in zip(DELTAS, TIES, MARGINS):
        if tie:  # cross-entropy against 0.5; a margin never applies to ties
            expected.append(tie_loss_weight * -(log_sigmoid(delta) + log_sigmoid(-delta)) / 2)
        else:
            expected.append(-log_sigmoid(delta - (margin if with_margin else 0.0)))
    margin = torch.tensor(MARGINS) if with_margin else None
    per_pair = composite_loss(torch.tensor(DELTAS), torch.tensor(TIES), margin, tie_loss_weight)
    torch.testing.assert_close(per_pair, torch.tensor(expected), rtol=0, atol=1e-6)
    assert per_pair.mean().item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_tie_loss_is_bce_against_one_half_and_minimal_at_zero():
    delta = torch.linspace(-4, 4, 81)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(delta, torch.full_like(delta, 0.5), reduction="none")
    torch.testing.assert_close(tie_loss(delta), bce)
    assert tie_loss(delta).argmin().item() == 40  # delta == 0
    assert tie_loss(torch.tensor(0.0)).item() == pytest.approx(math.log(2))


def test_no_ties_is_trls_loss():
    delta = torch.tensor(DELTAS)
    torch.testing.assert_close(composite_loss(delta), -torch.nn.functional.logsigmoid(delta))
    torch.testing.assert_close(composite_loss(delta, torch.zeros(6, dtype=torch.bool)), preference_loss(delta))


@pytest.mark.parametrize("ties", [[False] * 4, [True] * 4])
def test_finite_for_batches_of_only_one_kind_even_for_extreme_deltas(ties):
    delta = torch.tensor([80.0, -80.0, 1e4, -1e4], requires_grad=True)
    loss = composite_loss(delta, torch.tensor(ties)).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(delta.grad).all()
