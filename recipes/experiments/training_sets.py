"""The three training sets built from the same planted base pairs: vanilla, RRM-style and Crome.

- vanilla: the pairs only.
- RRM-style (arXiv 2409.13156): per pair, one *non-contextual* preference (the on-topic chosen answer beats an answer
  written for another prompt) and one tie (two answers of another prompt, both off-topic here).
- Crome: the real [`~trl_crome.CromeAugmenter`] pipeline with the given oracle, the paper preset by default (scored
  attributes, causal elements, degrade / upgrade counterfactuals, their verification, about 1x Irrelevant Query
  Neutrals); no baseline filter, so that every set is built without a model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from trl_crome.augment import CromeAugmenter, CromeAugmenterConfig
from trl_crome.oracles.base import Oracle

from .closing_task import PlantedPair

COLUMNS = ("prompt", "chosen", "rejected", "tie", "kind", "source_row")


def vanilla_set(pairs: Sequence[PlantedPair]) -> list[dict]:
    """The planted pairs as preference rows of kind `"original"`."""
    return [{**pair.to_dict(), "tie": False, "kind": "original", "source_row": pair.row} for pair in pairs]


def rrm_set(pairs: Sequence[PlantedPair], seed: int = 0) -> list[dict]:
    """Vanilla rows plus, per pair, one non-contextual preference and one tie of off-topic answers (RRM-style).

    The other example is drawn per pair from a generator seeded by `seed` and the pair's row, like the IQN draw.
    """
    rows = vanilla_set(pairs)
    for index, pair in enumerate(pairs):
        rng = random.Random(f"{seed}:{pair.row}")
        other = pairs[rng.choice([i for i in range(len(pairs)) if i != index])]
        off_topic = rng.choice([other.chosen, other.rejected])
        rows.append(
            {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": off_topic, "tie": False}
            | {"kind": "non_contextual", "source_row": pair.row}
        )
        rows.append(
            {"prompt": pair.prompt, "chosen": other.chosen, "rejected": other.rejected, "tie": True}
            | {"kind": "neutral", "source_row": pair.row}
        )
    return rows


def crome_set(
    pairs: Sequence[PlantedPair],
    oracle: Oracle,
    cache_dir: str | Path,
    causal: bool = True,
    neutrals: bool = True,
    seed: int = 42,
    show_progress: bool = False,
    accept_plain_text_rewrites: bool = False,
    preset: str = "paper",
) -> tuple[list[dict], CromeAugmenter]:
    """Run the real Crome pipeline over the pairs; returns the rows and the augmenter (for its `summary`).

    Args:
        pairs (`Sequence[PlantedPair]`): the planted training pairs.
        oracle ([`~trl_crome.oracles.base.Oracle`]): writes rubrics and counterfactuals.
        cache_dir (`str` or `Path`): the oracle cache of the run.
        causal (`bool`): make causal (degrade / upgrade) pairs.
        neutrals (`bool`): make Irrelevant Query Neutrals.
        seed (`int`): seed of the neutral prompts.
        show_progress (`bool`): show the augmenter's progress bars.
        accept_plain_text_rewrites (`bool`): take a rewrite returned as plain text instead of the JSON schema (for
            small local oracles).
        preset (`str`): the augmenter's preset. `"paper"` (the programmatic oracle gives one attribute per example);
            `"lite"` with one attribute per example for the small local oracle, as docs/evidence.md measured it.
    """
    one_attribute = {"max_attributes": 1, "attributes_per_example": 1} if preset == "lite" else {}
    config = CromeAugmenterConfig(
        preset=preset,
        **one_attribute,
        causal_augmentation=causal,
        neutral_augmentation=neutrals,
        filter_augmented=False,
        seed=seed,
        cache_dir=str(cache_dir),
        show_progress=show_progress,
        accept_plain_text_rewrites=accept_plain_text_rewrites,
    )
    augmenter = CromeAugmenter(oracle, config)
    data = augmenter(Dataset.from_list([pair.to_dict() for pair in pairs]))
    rows_by_index = [pair.row for pair in pairs]
    rows = [
        {column: row[column] for column in COLUMNS[:-1]} | {"source_row": rows_by_index[row["source_row"]]}
        for row in data
    ]
    return rows, augmenter
