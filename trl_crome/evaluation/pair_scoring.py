"""One pairwise interface over reward models and pairwise preference models, so every benchmark treats them alike."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
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


def is_preference_model(scorer: Any) -> bool:
    """Whether `scorer` compares two answers (`prefer`) rather than scoring each one (`score_pairs`)."""
    return isinstance(scorer, PreferenceModel) and not isinstance(scorer, RewardPairScorer)


def is_pairpm_folder(name_or_path: str | os.PathLike) -> bool:
    """Whether a model folder (or a Hub repo already in the local cache) holds a PairPM's `pairpm.json`."""
    from transformers.utils import cached_file

    from ..pairpm import PAIRPM_CONFIG_NAME

    if Path(name_or_path).is_dir():
        return (Path(name_or_path) / PAIRPM_CONFIG_NAME).exists()
    try:
        found = cached_file(
            str(name_or_path),
            PAIRPM_CONFIG_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):  # not a valid repo id
        return False
    return found is not None


def as_pair_scorer(scorer_or_model: Any, **scorer_kwargs: Any) -> Any:
    """Return `scorer_or_model` when it already scores pairs; a [`~trl_crome.evaluation.pairpm.PairPMScorer`] for a
    PairPM folder (one with `pairpm.json`); else a [`RewardScorer`]. `scorer_kwargs` go to the scorer built."""
    if isinstance(scorer_or_model, (RewardPairScorer, PreferenceModel)):
        return scorer_or_model
    if isinstance(scorer_or_model, (str, os.PathLike)) and is_pairpm_folder(scorer_or_model):
        from .pairpm import PairPMScorer

        return PairPMScorer(scorer_or_model, **scorer_kwargs)
    return RewardScorer(scorer_or_model, **scorer_kwargs)


def score_rows(
    scorer_or_model: Any,
    rows: Sequence[dict[str, Any]],
    pointwise: Callable[[Any, Sequence[dict[str, Any]]], tuple[list, list]],
    pairwise: Callable[[Any, Sequence[dict[str, Any]]], tuple[list, list]],
    **scorer_kwargs: Any,
) -> tuple[str, list, list]:
    """Score a benchmark's rows: `(model_type, outcomes, values)` from `pointwise(scorer, rows)` for a reward model
    (`model_type` "reward") or `pairwise(scorer, rows)` for a preference model ("preference"), the scorer being built
    by [`as_pair_scorer`]."""
    scorer = as_pair_scorer(scorer_or_model, **scorer_kwargs)
    if is_preference_model(scorer):
        return ("preference", *pairwise(scorer, rows))
    return ("reward", *pointwise(scorer, rows))


def _key(value: Any) -> Hashable:
    """A hashable key of a prompt or answer (text, or chat messages)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _distinct(items: Sequence[tuple]) -> tuple[list[int], list[int]]:
    """`(first, where)`: the index of the first occurrence of each distinct item, and for every item the position
    of its distinct item in `first`."""
    position: dict[Hashable, int] = {}
    first, where = [], []
    for index, item in enumerate(items):
        key = tuple(_key(part) for part in item)
        if key not in position:
            position[key] = len(first)
            first.append(index)
        where.append(position[key])
    return first, where


def score_answers(scorer: Any, prompts: Sequence, answers: Sequence) -> list[float]:
    """Reward of each (prompt, answer) with a reward model, **each distinct (prompt, answer) scored once**.

    A scorer with `score(prompts, answers)` (a [`RewardScorer`]) gets the distinct sequences in one call, which it
    batches length-sorted (or packed). A scorer with only `score_pairs(prompts, chosen, rejected)` gets them as pairs
    of two answers to the same prompt; a prompt with an odd number of distinct answers pairs its last one with itself
    (that one sequence is scored twice).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    first, where = _distinct(list(zip(prompts, answers)))
    unique_prompts, unique_answers = [prompts[i] for i in first], [answers[i] for i in first]
    if callable(getattr(scorer, "score", None)):
        rewards = [float(r) for r in scorer.score(unique_prompts, unique_answers)]
    elif isinstance(scorer, RewardPairScorer):
        rewards = _score_through_pairs(scorer, unique_prompts, unique_answers)
    else:
        raise TypeError(
            f"{type(scorer).__name__} has neither score(prompts, answers) nor score_pairs(prompts, chosen, rejected)"
        )
    if len(rewards) != len(first):
        raise ValueError(f"the scorer returned {len(rewards)} rewards for {len(first)} answers")
    return [rewards[k] for k in where]


def _score_through_pairs(scorer: RewardPairScorer, prompts: list, answers: list) -> list[float]:
    by_prompt: dict[Hashable, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_prompt[_key(prompt)].append(index)
    firsts, seconds = [], []
    for indices in by_prompt.values():
        firsts += indices[0::2]
        seconds += indices[1::2] + ([indices[-1]] if len(indices) % 2 else [])
    rewards_a, rewards_b = scorer.score_pairs(
        [prompts[i] for i in firsts], [answers[i] for i in firsts], [answers[i] for i in seconds]
    )
    rewards = [0.0] * len(prompts)
    for i, j, a, b in zip(firsts, seconds, rewards_a, rewards_b):
        rewards[i], rewards[j] = float(a), float(b)
    return rewards


def prefer_pairs(scorer: PreferenceModel, prompts: Sequence, answers_a: Sequence, answers_b: Sequence) -> list[float]:
    """P(answer A better than answer B) for each row, each distinct (prompt, A, B) compared once in one call.

    A [`~trl_crome.evaluation.pairpm.PairPMScorer`] reads each comparison in both orders and averages them.
    """
    first, where = _distinct(list(zip(prompts, answers_a, answers_b)))
    preferences = scorer.prefer(
        [prompts[i] for i in first], [answers_a[i] for i in first], [answers_b[i] for i in first]
    )
    preferences = [float(p) for p in preferences]
    if len(preferences) != len(first):
        raise ValueError(f"the preference model returned {len(preferences)} values for {len(first)} comparisons")
    return [preferences[k] for k in where]
