"""One pairwise interface over reward models and pairwise preference models, so every benchmark treats them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .scoring import RewardScorer


@runtime_checkable
class RewardPairScorer(Protocol):
    """A reward model: one scalar per answer; the chosen answer wins when its reward is strictly higher."""

    def score_pairs(self, prompts: Sequence, chosen: Sequence, rejected: Sequence) -> tuple[list, list]: ...


@runtime_checkable
class PreferenceModel(Protocol):
    """A pairwise preference model (e.g. PairPM): `prefer` returns P(a better than b) per row; a wins when > 0.5."""

    def prefer(self, prompts: Sequence, a: Sequence, b: Sequence) -> list[float]: ...


def compare_pairs(scorer: Any, prompts: Sequence, chosen: Sequence, rejected: Sequence) -> dict[str, list[float]]:
    """Score pairs with a reward model or a preference model.

    Returns a dict with `margin` (per pair; the chosen answer wins exactly when `margin > 0`, so ties count as
    wrong) and the raw values: `reward_chosen` / `reward_rejected` for a reward model, `p_chosen` for a
    preference model (`margin = p_chosen - 0.5`).
    """
    if isinstance(scorer, PreferenceModel) and not isinstance(scorer, RewardPairScorer):
        p_chosen = [float(p) for p in scorer.prefer(list(prompts), list(chosen), list(rejected))]
        return {"p_chosen": p_chosen, "margin": [p - 0.5 for p in p_chosen]}
    if not isinstance(scorer, RewardPairScorer):
        raise TypeError(
            f"{type(scorer).__name__} has neither score_pairs(prompts, chosen, rejected) nor prefer(prompts, a, b); "
            "wrap a reward model in trl_crome.evaluation.RewardScorer"
        )
    reward_chosen, reward_rejected = scorer.score_pairs(list(prompts), list(chosen), list(rejected))
    reward_chosen, reward_rejected = [float(r) for r in reward_chosen], [float(r) for r in reward_rejected]
    return {
        "reward_chosen": reward_chosen,
        "reward_rejected": reward_rejected,
        "margin": [c - r for c, r in zip(reward_chosen, reward_rejected)],
    }


def as_pair_scorer(scorer_or_model: Any, **scorer_kwargs: Any) -> Any:
    """Return `scorer_or_model` when it already scores pairs, else wrap it in a [`RewardScorer`]."""
    if isinstance(scorer_or_model, (RewardPairScorer, PreferenceModel)):
        return scorer_or_model
    return RewardScorer(scorer_or_model, **scorer_kwargs)
