"""Crome's loss formulas as pure tensor functions, shared by the Bradley-Terry and the pairwise (PairPM) trainers.

`delta` is the preference logit of a pair: r(A1) - r(A2) for a Bradley-Terry model, logit("A") - logit("B") for a
PairPM. Every function returns one loss per pair, so callers choose how to reduce (and what to log per kind).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def preference_loss(delta: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """`-log sigmoid(delta - margin)`: binary cross-entropy against target 1, with TRL's optional margin."""
    return -F.logsigmoid(delta if margin is None else delta - margin)


def tie_loss(delta: torch.Tensor) -> torch.Tensor:
    """`-(log sigmoid(delta) + log sigmoid(-delta)) / 2`: cross-entropy against target 0.5, minimal at `delta = 0`."""
    return -(F.logsigmoid(delta) + F.logsigmoid(-delta)) / 2


def composite_loss(
    delta: torch.Tensor,
    tie: torch.Tensor | None = None,
    margin: torch.Tensor | None = None,
    tie_loss_weight: float = 1.0,
) -> torch.Tensor:
    """Crome's per-pair loss: `preference_loss` for preference pairs, `tie_loss_weight * tie_loss` for ties.

    Args:
        delta (`torch.Tensor` of shape `(num_pairs,)`):
            Preference logit of each pair (first answer minus second).
        tie (`torch.BoolTensor` of shape `(num_pairs,)`, *optional*):
            Which pairs are neutral (tie) pairs. `None` means no ties.
        margin (`torch.Tensor` of shape `(num_pairs,)`, *optional*):
            TRL's margin; applies to preference pairs only (a tie has no winner to give a margin to).
        tie_loss_weight (`float`):
            Lambda, the weight of the tie term.

    Returns:
        `torch.Tensor` of shape `(num_pairs,)`. Both terms are finite for any finite `delta`, so a batch with no ties
        or only ties gives a finite mean.
    """
    pref = preference_loss(delta, margin)
    if tie is None:
        return pref
    return torch.where(tie, tie_loss_weight * tie_loss(delta), pref)
