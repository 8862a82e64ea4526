"""Neutral (tie) pairs: Irrelevant Query Neutrals, made without any LLM call, and the two oracle-written neutral types
of the paper's ablation.

- `"iqn"`: an answer pair (original or causal) is attached to the prompt of a *different* example. Neither answer
  addresses that prompt, so their causal quality is equal and whatever still separates them is spurious: the pair is
  labelled a tie. "Different" means a different prompt text, not just another row: datasets often repeat a prompt.
- `"aligned"` (causally-aligned neutrals): the oracle compares the rejected answer with the chosen one attribute by
  attribute and rewrites it to match the chosen answer's causal profile, keeping its own style; (chosen, aligned) is a
  tie.
- `"paraphrase"`: the chosen answer and a style-preserving paraphrase of it; a tie.

Every neutral pair records its type in `neutral_type`, so a run can compare the types (the paper's neutral ablation).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..data import KIND_NEUTRAL, KIND_ORIGINAL
from ..oracles.base import OracleRequest
from .counterfactuals import AnalyzedRewrite, Rewrite
from .pairs import CromePair, SourceRow, Turns, answer_text, prompt_text, with_answer_text
from .rubrics import CausalAttribute
from .source import PromptPool, prompt_digest
from .templates import load_template

IQN, ALIGNED, PARAPHRASE = "iqn", "aligned", "paraphrase"
NEUTRAL_TYPES = (IQN, ALIGNED, PARAPHRASE)
ALIGNED_TEMPLATE, PARAPHRASE_TEMPLATE = "aligned_neutral@1", "paraphrase@1"


def neutral_pairs(
    pairs: Sequence[CromePair],
    prompts: PromptPool | dict[str, Turns],
    per_original: int = 1,
    per_causal: int = 1,
    seed: int = 42,
) -> tuple[list[CromePair], int]:
    """Tie pairs that put each pair's answers under other examples' prompts.

    Args:
        pairs (`Sequence[CromePair]`):
            Original and causal preference pairs, in output order.
        prompts ([`~trl_crome.augment.source.PromptPool`] or `dict[str, Turns]`):
            The pool to draw from: the dataset's distinct prompts (a dict maps each one's
            [`~trl_crome.augment.pairs.prompt_key`] to it).
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
    pool = _as_pool(prompts)
    neutrals, missing = [], 0
    for pair in pairs:
        count = per_original if pair.kind == KIND_ORIGINAL else per_causal
        if count <= 0:
            continue
        rng = random.Random(f"{seed}:{pair.source_row}:{pair.kind}:{pair.attribute}:{pair.direction}")
        others = pool.others(rng, prompt_digest(pair.prompt), count)
        missing += count - len(others)
        neutrals += [_under_prompt(pair, pool.prompt(position)) for position in others]
    return neutrals, missing


def _as_pool(prompts: PromptPool | dict[str, Turns]) -> PromptPool:
    return prompts if isinstance(prompts, PromptPool) else PromptPool.from_prompts(prompts)


def _under_prompt(pair: CromePair, prompt: Turns) -> CromePair:
    return CromePair(
        prompt,
        pair.chosen,
        pair.rejected,
        tie=True,
        kind=KIND_NEUTRAL,
        source_row=pair.source_row,
        attribute=pair.attribute,
        direction=pair.direction,
        neutral_of=pair.kind,
        neutral_type=IQN,
    )


def sampled_neutral_pairs(
    pairs: Sequence[CromePair], prompts: PromptPool | dict[str, Turns], per_row: float, seed: int = 42
) -> tuple[list[CromePair], int]:
    """IQN tie pairs drawn per source row from its original and causal pairs: `per_row` on average (the whole part
    always, the fraction with that probability), each from a different pair of the row, under another prompt.

    With `per_row=1` the neutral data is about 1x the original data, drawn from original and causal pairs (the paper's
    size). Each row draws from its own generator (seeded by `seed` and the row), so the draw never depends on other
    rows, nor on how the rows are split into chunks.

    Returns:
        `(neutrals, missing)` as [`neutral_pairs`]; a row with fewer pairs than its draw counts the rest as missing.
    """
    pool = _as_pool(prompts)
    rows: dict[int, list[CromePair]] = {}
    for pair in pairs:
        rows.setdefault(pair.source_row, []).append(pair)
    whole, fraction = int(per_row), per_row - int(per_row)
    neutrals, missing = [], 0
    for source_row, group in rows.items():
        rng = random.Random(f"{seed}:iqn-row:{source_row}")
        count = whole + (rng.random() < fraction)
        chosen = sorted(rng.sample(range(len(group)), min(count, len(group))))
        missing += count - len(chosen)
        for index in chosen:
            pair = group[index]
            others = pool.others(rng, prompt_digest(pair.prompt), 1)
            missing += 1 - len(others)
            neutrals += [_under_prompt(pair, pool.prompt(position)) for position in others]
    return neutrals, missing


@dataclass(frozen=True)
class NeutralRewriteTask:
    """One oracle-written neutral of `row`: the rejected answer aligned to the chosen one's causal profile on
    `attributes` (`"aligned"`), or a paraphrase of the chosen answer (`"paraphrase"`)."""

    row: SourceRow
    neutral_type: str
    attributes: tuple[CausalAttribute, ...] = ()

    @property
    def source(self) -> Turns:
        """The answer that is rewritten."""
        return self.row.rejected if self.neutral_type == ALIGNED else self.row.chosen

    def request(self, max_output_tokens: int, temperature: float) -> OracleRequest:
        if self.neutral_type == ALIGNED:
            listed = "\n".join(f"- {a.name}: {a.description}" for a in self.attributes)
            template, schema = load_template(ALIGNED_TEMPLATE), AnalyzedRewrite
            text = template.render(
                attributes=listed,
                prompt=prompt_text(self.row.prompt),
                reference=answer_text(self.row.chosen),
                response=answer_text(self.source),
            )
        else:
            template, schema = load_template(PARAPHRASE_TEMPLATE), Rewrite
            text = template.render(prompt=prompt_text(self.row.prompt), response=answer_text(self.source))
        return OracleRequest(
            prompt=text,
            template=template.name,
            schema=schema,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
        )

    def pair(self, rewritten: str) -> CromePair:
        """The tie between the chosen answer and the rewrite."""
        return CromePair(
            self.row.prompt,
            self.row.chosen,
            with_answer_text(self.source, rewritten),
            tie=True,
            kind=KIND_NEUTRAL,
            source_row=self.row.index,
            neutral_of=KIND_ORIGINAL,
            neutral_type=self.neutral_type,
        )
