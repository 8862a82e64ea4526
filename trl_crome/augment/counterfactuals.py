"""Steps 2 and 4: causal counterfactuals (degrade the chosen answer, upgrade the rejected one, along one attribute)
and the validation that keeps only rewrites which changed the answer without changing its length or format.

A degraded chosen answer gives the pair (chosen > degraded); an upgraded rejected answer gives (upgraded > rejected).
A rewrite that is empty, identical to its source, too short, too long or that lost or gained format markers would
teach the reward model something other than the attribute, so it is rejected with that reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field, ValidationError

from ..data import KIND_CAUSAL
from ..oracles.base import OracleRequest, OracleResponse
from .pairs import CromePair, SourceRow, Turns, answer_text, prompt_text, with_answer_text
from .rubrics import CausalAttribute
from .templates import load_template

DEGRADE, UPGRADE = "degrade", "upgrade"
REWRITE_TEMPLATES = {DEGRADE: "degrade@1", UPGRADE: "upgrade@1"}

# Markdown and layout markers a rewrite must keep: a marker present in only one of source and rewrite, or whose count
# moved outside the length bounds, means the format changed.
FORMAT_MARKERS = {
    "code_block": re.compile(r"^\s*```", re.MULTILINE),
    "heading": re.compile(r"^ {0,3}#{1,6}\s", re.MULTILINE),
    "bullet_list": re.compile(r"^\s*[-*+]\s+\S", re.MULTILINE),
    "numbered_list": re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE),
    "bold": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "table_row": re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE),
}


class Rewrite(BaseModel):
    """The oracle's structured answer to a rewrite request."""

    rewritten: str = Field(description="The full rewritten response.")


@dataclass(frozen=True)
class RewriteTask:
    """Rewrite one answer of `row` along `attribute`: the chosen one to degrade, the rejected one to upgrade."""

    row: SourceRow
    attribute: CausalAttribute
    direction: str

    @property
    def source(self) -> Turns:
        return self.row.chosen if self.direction == DEGRADE else self.row.rejected

    def request(self, max_output_tokens: int, temperature: float) -> OracleRequest:
        template = load_template(REWRITE_TEMPLATES[self.direction])
        text = template.render(
            prompt=prompt_text(self.row.prompt),
            response=answer_text(self.source),
            attribute=self.attribute.name,
            description=self.attribute.description,
        )
        return OracleRequest(
            prompt=text,
            template=template.name,
            schema=Rewrite,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
        )

    def pair(self, rewritten: str) -> CromePair:
        """The causal preference pair made from the validated rewrite."""
        new_answer = with_answer_text(self.source, rewritten)
        if self.direction == DEGRADE:
            chosen, rejected = self.row.chosen, new_answer
        else:
            chosen, rejected = new_answer, self.row.rejected
        return CromePair(
            self.row.prompt,
            chosen,
            rejected,
            tie=False,
            kind=KIND_CAUSAL,
            source_row=self.row.index,
            attribute=self.attribute.name,
            direction=self.direction,
        )


def rewrite_tasks(
    rows: Sequence[SourceRow], attributes: Sequence[Sequence[CausalAttribute]], directions: Sequence[str]
) -> list[RewriteTask]:
    """Every rewrite to ask for, in output order: per row, per attribute, per direction."""
    return [
        RewriteTask(row, attribute, direction)
        for row, row_attributes in zip(rows, attributes, strict=True)
        for attribute in row_attributes
        for direction in directions
    ]


def _normalize(text: str) -> str:
    return " ".join(text.split())


class CounterfactualValidator:
    """Checks a rewrite against its source answer.

    Args:
        min_length_ratio (`float`):
            Smallest accepted `length(rewrite) / length(source)`.
        max_length_ratio (`float`):
            Largest accepted `length(rewrite) / length(source)`.
        check_format (`bool`):
            Whether markdown markers (code blocks, headings, lists, bold, tables) must be kept: present in both or in
            neither, with counts within the same ratio bounds.
        length (`Callable[[str], int]`):
            How to measure a text: characters by default, or tokens of some tokenizer.
    """

    def __init__(
        self,
        min_length_ratio: float = 0.5,
        max_length_ratio: float = 2.0,
        check_format: bool = True,
        length: Callable[[str], int] = len,
    ):
        self.min_length_ratio = min_length_ratio
        self.max_length_ratio = max_length_ratio
        self.check_format = check_format
        self.length = length

    def __call__(self, source: str, rewritten: str) -> str | None:
        """The reason the rewrite is rejected (`"empty"`, `"identical"`, `"too_short"`, `"too_long"`,
        `"format_changed"`), or `None` when it is accepted."""
        if not rewritten.strip():
            return "empty"
        if _normalize(rewritten) == _normalize(source):
            return "identical"
        ratio = self.length(rewritten) / max(1, self.length(source))
        if ratio < self.min_length_ratio:
            return "too_short"
        if ratio > self.max_length_ratio:
            return "too_long"
        if self.check_format and not self._same_format(source, rewritten):
            return "format_changed"
        return None

    def _same_format(self, source: str, rewritten: str) -> bool:
        for pattern in FORMAT_MARKERS.values():
            before, after = len(pattern.findall(source)), len(pattern.findall(rewritten))
            if (before == 0) != (after == 0):
                return False
            if before and not self.min_length_ratio <= after / before <= self.max_length_ratio:
                return False
        return True


def parse_rewrite(response: OracleResponse, accept_plain_text: bool = False) -> tuple[str | None, str | None]:
    """`(rewritten, None)` for a usable answer, `(None, reason)` otherwise (the oracle's error or `"malformed"`).

    With `accept_plain_text`, an answer that is not the requested JSON is taken as the rewrite itself: small local
    models rarely write valid JSON, and the validation that follows still checks the text."""
    if response.error not in (None, "malformed"):
        return None, response.error
    try:
        return Rewrite.model_validate(response.parsed).rewritten, None
    except ValidationError:
        if accept_plain_text and (response.text or "").strip():
            return response.text.strip(), None
        return None, "malformed"


def causal_pairs(
    tasks: Sequence[RewriteTask],
    responses: Sequence[OracleResponse],
    validator: CounterfactualValidator,
    accept_plain_text: bool = False,
) -> tuple[list[CromePair], Counter[str]]:
    """The causal pairs of the accepted rewrites, in task order, and the count of rejected rewrites per reason."""
    pairs, rejects = [], Counter()
    for task, response in zip(tasks, responses, strict=True):
        rewritten, reason = parse_rewrite(response, accept_plain_text)
        if reason is None:
            reason = validator(answer_text(task.source), rewritten)
        if reason is None:
            pairs.append(task.pair(rewritten))
        else:
            rejects[reason] += 1
    return pairs, rejects
