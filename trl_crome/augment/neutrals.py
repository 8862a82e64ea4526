"""Step 3: Irrelevant Query Neutrals (IQN), tie pairs made without any LLM call.

An answer pair (original or causal) is attached to the prompt of a *different* example. Neither answer addresses that
prompt, so their causal quality is equal and whatever still separates them is spurious: the pair is labelled a tie.
"Different" means a different prompt text, not just another row: datasets often repeat a prompt across rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..data import KIND_NEUTRAL, KIND_ORIGINAL
from .pairs import CromePair, Turns, prompt_key


def _other_prompts(rng: random.Random, keys: Sequence[str], key_set: set[str], own: str, count: int) -> list[str]:
    """`count` distinct keys from `keys` other than `own` (fewer when there are not enough)."""
    others = len(keys) - (own in key_set)
    if others <= count:
        chosen = [key for key in keys if key != own]
        rng.shuffle(chosen)
        return chosen
    picked: dict[str, None] = {}
    # Rejection sampling: O(count) per pair instead of copying the whole pool of prompts for every pair.
    while len(picked) < count:
        key = keys[rng.randrange(len(keys))]
        if key != own:
            picked[key] = None
    return list(picked)


def neutral_pairs(
    pairs: Sequence[CromePair],
    prompts: dict[str, Turns],
    per_original: int = 1,
    per_causal: int = 1,
    seed: int = 42,
) -> tuple[list[CromePair], int]:
    """Tie pairs that put each pair's answers under other examples' prompts.

    Args:
        pairs (`Sequence[CromePair]`):
            Original and causal preference pairs, in output order.
        prompts (`dict[str, Turns]`):
            The dataset's unique prompts, by [`~trl_crome.augment.pairs.prompt_key`]: the pool to draw from.
        per_original (`int`):
            Neutral pairs made from each original pair.
        per_causal (`int`):
            Neutral pairs made from each causal pair.
        seed (`int`):
            Seed of the choice. Each pair draws from its own generator, seeded by the seed and the pair's provenance,
            so that adding or losing one pair never changes the prompts drawn for the others.

    Returns:
        `(neutrals, missing)`: the tie pairs, grouped by source pair in input order, and how many could not be made
        because the pool has too few other prompts.
    """
    keys = list(prompts)
    key_set = set(keys)
    neutrals, missing = [], 0
    for pair in pairs:
        count = per_original if pair.kind == KIND_ORIGINAL else per_causal
        if count <= 0:
            continue
        rng = random.Random(f"{seed}:{pair.source_row}:{pair.kind}:{pair.attribute}:{pair.direction}")
        others = _other_prompts(rng, keys, key_set, prompt_key(pair.prompt), count)
        missing += count - len(others)
        for key in others:
            neutrals.append(
                CromePair(
                    prompts[key],
                    pair.chosen,
                    pair.rejected,
                    tie=True,
                    kind=KIND_NEUTRAL,
                    source_row=pair.source_row,
                    attribute=pair.attribute,
                    direction=pair.direction,
                    neutral_of=pair.kind,
                )
            )
    return neutrals, missing
