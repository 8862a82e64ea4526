"""Paper preset, step 4: an oracle verification of every rewrite that passed the sanity checks.

A separate call shows the original answer, the rewrite, the attribute and its causal elements, and asks for an
analysis and then a verdict: "Pass" only when the attribute moved significantly in the intended direction and nothing
else changed. Fails are dropped and counted per direction and attribute. An answer without a usable verdict (the call
failed, the JSON is malformed, or the verdict is neither Pass nor Fail) also drops the rewrite, counted per reason:
an unverified rewrite is not trusted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, ValidationError

from ..oracles.base import OracleRequest, OracleResponse
from .attributes import render_elements
from .counterfactuals import DEGRADE, RewriteTask
from .pairs import CromePair, answer_text, prompt_text
from .templates import load_template

VERIFY_TEMPLATE = "verify@1"
PASS, FAIL = "pass", "fail"


class Verification(BaseModel):
    """The oracle's structured verdict, its analysis first."""

    analysis: str = Field(description="Whether the attribute moved as intended, and whether anything else changed.")
    verdict: str = Field(description='"Pass" or "Fail".')


def verify_request(task: RewriteTask, rewritten: str, max_output_tokens: int, temperature: float) -> OracleRequest:
    """Ask whether `rewritten` changed `task.source` along `task.attribute` in `task.direction`, and nothing else."""
    text = load_template(VERIFY_TEMPLATE).render(
        goal="worse" if task.direction == DEGRADE else "better",
        attribute=task.attribute.name,
        description=task.attribute.description,
        elements=render_elements(task.elements or ()),
        prompt=prompt_text(task.row.prompt),
        original=answer_text(task.source),
        rewrite=rewritten,
    )
    return OracleRequest(
        prompt=text,
        template=VERIFY_TEMPLATE,
        schema=Verification,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
    )


def parse_verdict(response: OracleResponse) -> tuple[str | None, str | None]:
    """`(PASS or FAIL, None)`, or `(None, reason)` when the answer has no usable verdict (the oracle's error,
    `"malformed"`, or `"invalid_verdict"` for a verdict that is neither Pass nor Fail, case and a final period
    aside)."""
    if not response.ok:
        return None, response.error
    try:
        verdict = Verification.model_validate(response.parsed).verdict
    except ValidationError:
        return None, "malformed"
    verdict = verdict.strip().strip(".").lower()
    if verdict not in (PASS, FAIL):
        return None, "invalid_verdict"
    return verdict, None


@dataclass
class VerificationCounts:
    """What the verification step decided: passes, fails per direction and attribute, unusable answers per reason."""

    passed: int = 0
    failed: dict[str, Counter[str]] = field(default_factory=dict)
    unverified: Counter[str] = field(default_factory=Counter)

    def add(self, task: RewriteTask, verdict: str | None, reason: str | None) -> None:
        if verdict == PASS:
            self.passed += 1
        elif verdict == FAIL:
            self.failed.setdefault(task.direction, Counter())[task.attribute.name] += 1
        else:
            self.unverified[reason] += 1


def verified_pairs(
    tasks: list[RewriteTask], texts: list[str], responses: list[OracleResponse], counts: VerificationCounts
) -> list[CromePair]:
    """The pairs of the rewrites whose verification passed, in task order; `counts` records every decision."""
    pairs = []
    for task, text, response in zip(tasks, texts, responses, strict=True):
        verdict, reason = parse_verdict(response)
        counts.add(task, verdict, reason)
        if verdict == PASS:
            pairs.append(task.pair(text))
    return pairs
