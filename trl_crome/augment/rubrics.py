"""Step 1: causal rubric identification, one structured-output oracle call per unique prompt.

The oracle names the few attributes that truly decide a response's quality for a prompt (factuality, relevance,
completeness, ...). When the call fails, returns nothing usable, or the step is off, the prompt falls back to a
seeded choice from a fixed list, so that every row can still be augmented.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from pydantic import BaseModel, Field, ValidationError

from ..oracles.base import OracleRequest, OracleResponse
from .pairs import Turns, prompt_text
from .templates import load_template

RUBRIC_TEMPLATE = "rubrics@1"

DEFAULT_FALLBACK_ATTRIBUTES = {
    "correctness": "The facts, results and claims are accurate; nothing false or wrong is stated.",
    "relevance": "The response addresses what the prompt actually asks, without drifting off-topic.",
    "completeness": "The response covers every part of the request and the information needed to be useful.",
    "safety": "The response avoids harmful or dangerous content and handles risky requests responsibly.",
    "reasoning": "The reasoning is clear and logically valid; each step follows and supports the conclusion.",
}


class CausalAttribute(BaseModel):
    """One causal attribute of response quality for a prompt."""

    name: str = Field(description="Short snake_case name, e.g. factual_accuracy.")
    description: str = Field(description="One sentence: what a good response does on this attribute.")


class Rubric(BaseModel):
    """The oracle's structured answer: causal attributes, the most important first."""

    attributes: list[CausalAttribute]


def rubric_request(prompt: Turns, max_attributes: int, max_output_tokens: int = 512) -> OracleRequest:
    """The oracle request that asks for the causal rubric of `prompt`."""
    text = load_template(RUBRIC_TEMPLATE).render(prompt=prompt_text(prompt), max_attributes=max_attributes)
    return OracleRequest(prompt=text, template=RUBRIC_TEMPLATE, schema=Rubric, max_output_tokens=max_output_tokens)


def parse_rubric(response: OracleResponse, max_attributes: int) -> tuple[list[CausalAttribute], str | None]:
    """The attributes of a rubric answer (normalized names, no duplicates, at most `max_attributes`).

    Returns:
        `(attributes, reason)`: `reason` is `None` on success, otherwise why the answer is unusable (the oracle's
        error, `"malformed"` or `"empty"`), and `attributes` is then empty.
    """
    if not response.ok:
        return [], response.error
    try:
        rubric = Rubric.model_validate(response.parsed)
    except ValidationError:
        return [], "malformed"
    attributes: dict[str, CausalAttribute] = {}
    for attribute in rubric.attributes:
        name = re.sub(r"[^a-z0-9]+", "_", attribute.name.strip().lower()).strip("_")
        if name and attribute.description.strip() and name not in attributes:
            attributes[name] = CausalAttribute(name=name, description=attribute.description.strip())
    if not attributes:
        return [], "empty"
    return list(attributes.values())[:max_attributes], None


def fallback_attributes(key: str, fallback: dict[str, str], count: int, seed: int) -> list[CausalAttribute]:
    """A seeded choice of `count` attributes from `fallback` for the prompt whose key is `key`."""
    names = random.Random(f"{seed}:{key}").sample(list(fallback), min(count, len(fallback)))
    return [CausalAttribute(name=name, description=fallback[name]) for name in names]


def resolve_rubrics(
    prompts: dict[str, Turns],
    responses: dict[str, OracleResponse] | None,
    max_attributes: int,
    fallback: dict[str, str],
    seed: int,
) -> tuple[dict[str, list[CausalAttribute]], Counter[str]]:
    """The attributes of each unique prompt, from the oracle's answers or from the fallback list.

    Args:
        prompts (`dict[str, Turns]`):
            Unique prompts by their [`~trl_crome.augment.pairs.prompt_key`].
        responses (`dict[str, OracleResponse]` or `None`):
            The oracle's rubric answer per prompt key; `None` when rubric identification is off.
        max_attributes (`int`):
            Most attributes kept per prompt.
        fallback (`dict[str, str]`):
            Attribute name to description, used when a prompt has no usable rubric.
        seed (`int`):
            Seed of the fallback choice.

    Returns:
        `(rubrics, fallbacks)`: attributes per prompt key, and how many prompts fell back, per reason.
    """
    rubrics, fallbacks = {}, Counter()
    for key in prompts:
        attributes, reason = parse_rubric(responses[key], max_attributes) if responses is not None else ([], None)
        if not attributes:
            if responses is not None:
                fallbacks[reason] += 1
            attributes = fallback_attributes(key, fallback, max_attributes, seed)
        rubrics[key] = attributes
    return rubrics, fallbacks
