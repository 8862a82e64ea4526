"""Crome-shaped prompt groups for the throughput benchmarks, in the proportions of the paper's pipeline.

Per original pair, under its prompt: the original pair; each of the 10 causal pairs (5 attributes x degrade the chosen
answer / upgrade the rejected one) and one Irrelevant Query Neutral (another pair's answers, a tie) are kept with
probability 2.5 / 11, so that the final set is 3.5x the original, as the paper's is after verification and filtering
(raw: 10x causal + 1x neutrals). A rewrite replaces a random 10-30% span of the answer by 0.5-1.5x as many items of a
donor answer (real words in `train_throughput.py`, token ids in `gpu_throughput.py`): lengths near the original's,
as the paper's isolated rewrites. Answers are lists (of words or of token ids).
"""

from __future__ import annotations

import random
from collections.abc import Callable

NUM_ATTRIBUTES = 5  # attributes per pair in the paper's pipeline, each giving a degrade and an upgrade rewrite
KEEP = {"crome": 2.5 / 11, "raw": 1.0, "pairs": 0.0}  # share of the 10 causal + 1 neutral raw pairs kept


def rewrite(answer: list, donor: list, rng: random.Random) -> list:
    """A stand-in for an isolated counterfactual rewrite: a 10-30% span replaced by items of `donor`."""
    span = max(1, round(len(answer) * rng.uniform(0.1, 0.3)))
    start = rng.randrange(len(answer) - span + 1)
    count = max(1, round(span * rng.uniform(0.5, 1.5)))
    offset = rng.randrange(max(1, len(donor) - count + 1))
    return answer[:start] + donor[offset : offset + count] + answer[start + span :]


def crome_group(
    chosen: list,
    rejected: list,
    donor: Callable[[], list],
    other_pair: Callable[[], tuple[list, list]],
    rng: random.Random,
    keep: float = KEEP["crome"],
) -> list[tuple[list, list, str]]:
    """`(chosen, rejected, kind)` of the pairs under one prompt: the original, the kept causal pairs (the original
    chosen answer in every degrade pair, the rejected one in every upgrade pair) and the kept neutral (a tie)."""
    pairs = [(chosen, rejected, "original")]
    for _ in range(NUM_ATTRIBUTES):
        if rng.random() < keep:  # degrade the chosen answer
            pairs.append((chosen, rewrite(chosen, donor(), rng), "causal"))
        if rng.random() < keep:  # upgrade the rejected answer
            pairs.append((rewrite(rejected, donor(), rng), rejected, "causal"))
    if rng.random() < keep:  # an Irrelevant Query Neutral: another pair's answers under this prompt
        pairs.append((*other_pair(), "neutral"))
    return pairs
