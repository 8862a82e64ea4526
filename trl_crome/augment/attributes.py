"""Paper preset, steps 1 and 2: attributes per example (question and both answers, with importance scores) and the
causal elements of each attribute.

Attribute identification asks for `max_attributes` mutually exclusive attributes with importance scores that sum to 1,
and keeps them ordered by importance. Scores are checked per row: positive scores that do not sum to 1 are rescaled
(and counted); a missing, negative, non-finite or all-zero score makes the answer unusable (`"invalid_scores"`), and
the row falls back to the fallback attributes like any other unusable answer. Causal elements are asked for per
attribute; an unusable answer leaves the attribute without elements (counted), and its rewrites go on with the
attribute's description alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, Field, ValidationError

from ..oracles.base import OracleRequest, OracleResponse
from .pairs import SourceRow, answer_text, prompt_text
from .rubrics import CausalAttribute
from .templates import load_template

ATTRIBUTES_TEMPLATE = "attributes@1"
ELEMENTS_TEMPLATE = "causal_elements@1"
INCREASES, DECREASES = "increases", "decreases"


class ScoredAttribute(BaseModel):
    """One attribute of the oracle's answer, with its importance for the question."""

    name: str = Field(description="Short snake_case name, e.g. factual_accuracy.")
    description: str = Field(description="One sentence: what a good response does on this attribute here.")
    importance: float = Field(description="Importance for this prompt, between 0 and 1; the scores add up to 1.")


class AttributeList(BaseModel):
    """The oracle's structured answer to attribute identification."""

    attributes: list[ScoredAttribute]


class CausalElement(BaseModel):
    """A concrete element of a response that raises or lowers an attribute."""

    element: str = Field(description="What a response includes, leaves out or does.")
    direction: str = Field(description='"increases" or "decreases": the effect of the element on the attribute.')


class CausalElementList(BaseModel):
    """The oracle's structured answer to a causal-elements request."""

    elements: list[CausalElement]


def attributes_request(row: SourceRow, count: int, max_output_tokens: int, temperature: float) -> OracleRequest:
    """Ask for `count` scored attributes of the example `row` (its prompt and both answers)."""
    text = load_template(ATTRIBUTES_TEMPLATE).render(
        prompt=prompt_text(row.prompt),
        response_a=answer_text(row.chosen),
        response_b=answer_text(row.rejected),
        num_attributes=count,
    )
    return OracleRequest(
        prompt=text,
        template=ATTRIBUTES_TEMPLATE,
        schema=AttributeList,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
    )


def elements_request(
    row: SourceRow, attribute: CausalAttribute, count: int, max_output_tokens: int, temperature: float
) -> OracleRequest:
    """Ask for `count` causal elements of `attribute` for the example `row`."""
    text = load_template(ELEMENTS_TEMPLATE).render(
        prompt=prompt_text(row.prompt),
        response_a=answer_text(row.chosen),
        response_b=answer_text(row.rejected),
        attribute=attribute.name,
        description=attribute.description,
        num_elements=count,
    )
    return OracleRequest(
        prompt=text,
        template=ELEMENTS_TEMPLATE,
        schema=CausalElementList,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
    )


def normalize_name(name: str) -> str:
    """An attribute name in snake_case (how the lite rubrics normalize names too)."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_attributes(response: OracleResponse, max_attributes: int) -> tuple[list[CausalAttribute], str | None, bool]:
    """The attributes of an answer, most important first, at most `max_attributes`.

    Names are normalized to snake_case; an attribute without a name or a description, or repeating an earlier name,
    is dropped. Scores must be finite and >= 0 with a positive sum; positive scores that do not sum to 1 are rescaled.
    Ties keep the oracle's order.

    Returns:
        `(attributes, reason, rescaled)`: `reason` is `None` on success, otherwise why the answer is unusable (the
        oracle's error, `"malformed"`, `"empty"` or `"invalid_scores"`), and `attributes` is then empty; `rescaled`
        says whether the scores had to be rescaled to sum to 1.
    """
    if not response.ok:
        return [], response.error, False
    try:
        answer = AttributeList.model_validate(response.parsed)
    except ValidationError:
        return [], "malformed", False
    kept: dict[str, ScoredAttribute] = {}
    for attribute in answer.attributes:
        name = normalize_name(attribute.name)
        if name and attribute.description.strip() and name not in kept:
            kept[name] = attribute
    if not kept:
        return [], "empty", False
    scores = [attribute.importance for attribute in kept.values()]
    if not all(math.isfinite(score) and score >= 0 for score in scores) or sum(scores) <= 0:
        return [], "invalid_scores", False
    total = sum(scores)
    rescaled = not math.isclose(total, 1.0, abs_tol=1e-3)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep the oracle's order
    names = list(kept)
    attributes = [
        CausalAttribute(name=names[i], description=kept[names[i]].description.strip()) for i in order[:max_attributes]
    ]
    return attributes, None, rescaled


def parse_elements(response: OracleResponse, count: int) -> tuple[tuple[CausalElement, ...], str | None]:
    """At most `count` usable causal elements of an answer (a non-empty element and a direction that starts with
    "incr" or "decr"), or `((), reason)` when none is usable (the oracle's error, `"malformed"` or `"empty"`)."""
    if not response.ok:
        return (), response.error
    try:
        answer = CausalElementList.model_validate(response.parsed)
    except ValidationError:
        return (), "malformed"
    elements = []
    for element in answer.elements:
        direction = element.direction.strip().lower()
        direction = INCREASES if direction.startswith("incr") else DECREASES if direction.startswith("decr") else None
        if element.element.strip() and direction is not None:
            elements.append(CausalElement(element=element.element.strip(), direction=direction))
    if not elements:
        return (), "empty"
    return tuple(elements[:count]), None


def render_elements(elements: Sequence[CausalElement]) -> str:
    """The causal elements as the rewrite and verification templates show them."""
    if not elements:
        return "- (none identified: rely on the attribute's description)"
    return "\n".join(f"- [{element.direction}] {element.element}" for element in elements)
