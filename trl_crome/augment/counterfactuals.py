"""Causal counterfactuals (degrade the chosen answer, upgrade the rejected one, along one attribute) and the checks
every rewrite goes through before it becomes a pair.

A degraded chosen answer gives the pair (chosen > degraded); an upgraded rejected answer gives (upgraded > rejected).
Two template families: the paper preset's (`counterfactual_degrade@1` / `counterfactual_upgrade@1`: the attribute's
causal elements in the prompt, the oracle's analysis before its new response) and the lite preset's (`degrade@1` /
`upgrade@1`: JSON with the new response only, length and format to be kept).

Checks, each rejecting with its reason: always the sanity checks that protect training (`empty`, `identical`, and
`runaway_length`, a rewrite many times longer than its source; `truncated` comes from the oracle), and, when turned on
(lite preset), the length gate (`too_short`, `too_long`) and the format gate (`format_changed`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field, ValidationError

from ..data import KIND_CAUSAL
from ..oracles.base import OracleRequest, OracleResponse
from .attributes import CausalElement, render_elements
from .pairs import CromePair, SourceRow, Turns, answer_text, prompt_text, with_answer_text
from .rubrics import CausalAttribute
from .templates import load_template

DEGRADE, UPGRADE = "degrade", "upgrade"
REWRITE_TEMPLATES = {DEGRADE: "degrade@1", UPGRADE: "upgrade@1"}  # lite preset
CAUSAL_REWRITE_TEMPLATES = {DEGRADE: "counterfactual_degrade@1", UPGRADE: "counterfactual_upgrade@1"}  # paper preset
# A source shorter than this many characters counts as this long for the runaway check: growing a one-line answer into
# a paragraph can be a legitimate upgrade.
RUNAWAY_FLOOR_CHARS = 200

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
    """The oracle's structured answer to a rewrite request (lite preset, paraphrases)."""

    rewritten: str = Field(description="The full rewritten response.")


class AnalyzedRewrite(BaseModel):
    """A rewrite answer with the oracle's analysis first (paper preset); only `rewritten` is used."""

    analysis: str = Field(description="The analysis of the response and of the change, then a check of the result.")
    rewritten: str = Field(description="The complete new response.")


@dataclass(frozen=True)
class RewriteTask:
    """Rewrite one answer of `row` along `attribute`: the chosen one to degrade, the rejected one to upgrade.

    `elements` is `None` for the lite templates; a tuple (possibly empty) selects the paper templates, which show
    the attribute's causal elements and ask for an analysis first.
    """

    row: SourceRow
    attribute: CausalAttribute
    direction: str
    elements: tuple[CausalElement, ...] | None = None

    @property
    def source(self) -> Turns:
        return self.row.chosen if self.direction == DEGRADE else self.row.rejected

    def request(self, max_output_tokens: int, temperature: float) -> OracleRequest:
        values = dict(
            prompt=prompt_text(self.row.prompt),
            response=answer_text(self.source),
            attribute=self.attribute.name,
            description=self.attribute.description,
        )
        if self.elements is None:
            template, schema = load_template(REWRITE_TEMPLATES[self.direction]), Rewrite
        else:
            template, schema = load_template(CAUSAL_REWRITE_TEMPLATES[self.direction]), AnalyzedRewrite
            values["elements"] = render_elements(self.elements)
        return OracleRequest(
            prompt=template.render(**values),
            template=template.name,
            schema=schema,
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
    rows: Sequence[SourceRow],
    attributes: Sequence[Sequence[CausalAttribute]],
    directions: Sequence[str],
    elements: Sequence[Sequence[tuple[CausalElement, ...]]] | None = None,
) -> list[RewriteTask]:
    """Every rewrite to ask for, in output order: per row, per attribute, per direction. `elements` (per row, per
    attribute) selects the paper templates; `None` the lite ones."""
    return [
        RewriteTask(row, attribute, direction, None if elements is None else elements[r][a])
        for r, (row, row_attributes) in enumerate(zip(rows, attributes, strict=True))
        for a, attribute in enumerate(row_attributes)
        for direction in directions
    ]


def _normalize(text: str) -> str:
    return " ".join(text.split())


class CounterfactualValidator:
    """Checks a rewrite against its source answer.

    Args:
        min_length_ratio (`float`):
            Smallest accepted `length(rewrite) / length(source)` when `check_length` is on.
        max_length_ratio (`float`):
            Largest accepted `length(rewrite) / length(source)` when `check_length` is on.
        check_format (`bool`):
            Whether markdown markers (code blocks, headings, lists, bold, tables) must be kept: present in both or in
            neither, with counts within the same ratio bounds.
        length (`Callable[[str], int]`):
            How to measure a text for the length gate: characters by default, or tokens of some tokenizer.
        check_length (`bool`):
            Whether the length gate (`min_length_ratio`, `max_length_ratio`) applies.
        runaway_length_ratio (`float`):
            Always checked: a rewrite longer than this many times its source (in characters; a source under
            `RUNAWAY_FLOOR_CHARS` characters counts as that long) is `"runaway_length"`, a model that ran on.
    """

    def __init__(
        self,
        min_length_ratio: float = 0.5,
        max_length_ratio: float = 2.0,
        check_format: bool = True,
        length: Callable[[str], int] = len,
        check_length: bool = True,
        runaway_length_ratio: float = 10.0,
    ):
        self.min_length_ratio = min_length_ratio
        self.max_length_ratio = max_length_ratio
        self.check_format = check_format
        self.length = length
        self.check_length = check_length
        self.runaway_length_ratio = runaway_length_ratio

    def __call__(self, source: str, rewritten: str) -> str | None:
        """The reason the rewrite is rejected (`"empty"`, `"identical"`, `"too_short"`, `"too_long"`,
        `"runaway_length"`, `"format_changed"`), or `None` when it is accepted."""
        if not rewritten.strip():
            return "empty"
        if _normalize(rewritten) == _normalize(source):
            return "identical"
        if self.check_length:
            ratio = self.length(rewritten) / max(1, self.length(source))
            if ratio < self.min_length_ratio:
                return "too_short"
            if ratio > self.max_length_ratio:
                return "too_long"
        if len(rewritten) > self.runaway_length_ratio * max(len(source), RUNAWAY_FLOOR_CHARS):
            return "runaway_length"
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


def checked_rewrites(
    sources: Sequence[Turns],
    responses: Sequence[OracleResponse],
    validator: CounterfactualValidator,
    accept_plain_text: bool = False,
) -> tuple[list[str | None], Counter[str]]:
    """Per response, the rewritten text when it parses and passes `validator` against its source (else `None`), and
    the count of rejected rewrites per reason."""
    texts, rejects = [], Counter()
    for source, response in zip(sources, responses, strict=True):
        rewritten, reason = parse_rewrite(response, accept_plain_text)
        if reason is None:
            reason = validator(answer_text(source), rewritten)
        texts.append(rewritten if reason is None else None)
        if reason is not None:
            rejects[reason] += 1
    return texts, rejects


def causal_pairs(
    tasks: Sequence[RewriteTask],
    responses: Sequence[OracleResponse],
    validator: CounterfactualValidator,
    accept_plain_text: bool = False,
) -> tuple[list[CromePair], Counter[str]]:
    """The causal pairs of the accepted rewrites, in task order, and the count of rejected rewrites per reason."""
    texts, rejects = checked_rewrites([task.source for task in tasks], responses, validator, accept_plain_text)
    return [task.pair(text) for task, text in zip(tasks, texts) if text is not None], rejects
