"""What a run will call and cost, before anything is paid: [`CromeAugmenter.estimate`] runs the real pipeline on the
rows with a [`PlanningOracle`] in place of the oracle.

How each figure is obtained:

- **Calls**: the requests the pipeline makes when every call succeeds (retries of failed or malformed answers are
  not counted). Identical requests count once, as a real run sends them once.
- **Already cached**: a request whose answer is in the run's cache costs nothing; its answer is used as it is, so the
  prompts that depend on it are rendered exactly, and its recorded tokens are reported as already paid.
- **Input tokens**: counted on the real rendered prompts, with the local oracle's tokenizer when it has one, else at
  4 characters per token (Google's rule of thumb for Gemini; the JSON schema sent beside a prompt is not counted).
- **Output tokens**: a request not yet answered gets a typical successful answer, whose tokens are counted: five
  attributes with one-sentence descriptions; five one-line causal elements per attribute; a rewrite as long as the
  answer it rewrites plus a 150-word analysis (the templates ask for at most about 150 words); a verification with a
  100-word analysis and its verdict; a paraphrase as long as its source. Where a prompt depends on an answer not yet
  known, it is rendered with that typical answer (e.g. a verification shows a rewrite as long as its source).
- **Thinking tokens** (Gemini 2.5 and later bill them as output): the oracle's `thinking_budget` per call when set;
  otherwise, for a model that thinks by default, `DYNAMIC_THINKING_TOKENS` per call, an assumption (the model
  decides, up to the request's output limit); else 0. Pass `thinking_tokens=` to use another figure.
- **Cost**: tokens at the oracle's prices: for Gemini, `GeminiOracle.PRICES` (standard) and those times
  `BATCH_DISCOUNT` (Batch API); other oracles have one price.
- **Projection**: estimated on a sample of rows, the figures are scaled by `total rows / sample rows`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field

from ..oracles.base import Oracle, OracleRequest, OracleResponse, StopCheck, Usage
from ..oracles.cache import CachedOracle
from .attributes import AttributeList, CausalElementList
from .counterfactuals import AnalyzedRewrite, Rewrite
from .rubrics import Rubric
from .summary import AugmentationSummary
from .verification import Verification

CHARS_PER_TOKEN = 4
# Thinking tokens per call assumed for models that think unless told not to (gemini-2.5-flash / -pro, gemini-3).
DYNAMIC_THINKING_TOKENS = 1000
_DEFAULT_THINKING_MODELS = re.compile(r"^gemini-(2\.5-(flash|pro)(?!-lite)|[3-9])")

_SENTENCE = "The response states the key facts of the question clearly and checks each claim it makes."
_DESCRIPTION = _SENTENCE  # 16 words: a one-sentence attribute description
_ELEMENT = "Gives the one concrete fact that the question asks for."
_ANALYSIS_WORDS, _VERDICT_WORDS = 150, 100
_RESPONSE_BLOCK = re.compile(r"<response>\n(.*)\n</response>", re.DOTALL)


def _words(count: int) -> str:
    words = _SENTENCE.split()
    return " ".join(words[i % len(words)] for i in range(count))


def approx_tokens(text: str) -> int:
    """Tokens of `text` at 4 characters per token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def typical_answer(request: OracleRequest, attributes: int, elements: int) -> dict | None:
    """A typical successful answer to `request`, by its schema (`None` for a schema this module does not know)."""
    schema = request.schema
    if schema is Rubric:
        return {"attributes": [{"name": f"attribute_{i}", "description": _DESCRIPTION} for i in range(attributes)]}
    if schema is AttributeList:
        return {
            "attributes": [
                {"name": f"attribute_{i}", "description": _DESCRIPTION, "importance": 1 / attributes}
                for i in range(attributes)
            ]
        }
    if schema is CausalElementList:
        return {"elements": [{"element": _ELEMENT, "direction": "increases"} for _ in range(elements)]}
    if schema is Verification:
        return {"analysis": _words(_VERDICT_WORDS), "verdict": "Pass"}
    if schema in (Rewrite, AnalyzedRewrite):
        source = _RESPONSE_BLOCK.search(request.prompt)
        # A changed text as long as the source: passes the checks, as a successful rewrite would.
        rewritten = (source.group(1) if source else _SENTENCE) + " (rewritten)"
        if schema is Rewrite:
            return {"rewritten": rewritten}
        return {"analysis": _words(_ANALYSIS_WORDS), "rewritten": rewritten}
    return None


class PlanningOracle(Oracle):
    """Stands in for a [`~trl_crome.oracles.CachedOracle`] during an estimate; never calls its backend.

    A request in the cache gets its cached answer (a cache hit: already paid). Any other request gets a typical
    successful answer (see [`typical_answer`]) whose `usage` is the estimate: 1 call, the prompt's tokens in, the
    answer's tokens out (thinking excluded: the estimate adds it per call). A request already planned in this estimate
    is free (a real run would send it once and then read it from the cache).
    """

    def __init__(
        self,
        oracle: CachedOracle,
        token_counter: Callable[[str], int] | None = None,
        attributes: int = 5,
        elements: int = 5,
    ):
        super().__init__(model=oracle.model, max_concurrency=1)
        self.cached = oracle
        self.count_tokens, self.token_note = _token_counter(oracle, token_counter)
        self.attributes, self.elements = attributes, elements
        self._planned: set[str] = set()

    def cost(self, usage: Usage) -> float:
        return self.cached.cost(usage)

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        key = request.cache_key(self.model)
        stored = self.cached.cache.get(key)
        if stored is not None:
            return OracleResponse(stored.text, stored.parsed, Usage(), stored.error, cached_usage=stored.usage)
        answer = typical_answer(request, self.attributes, self.elements)
        text = json.dumps(answer) if answer is not None else _SENTENCE
        if key in self._planned:
            return OracleResponse(text=text, parsed=answer)
        self._planned.add(key)
        input_tokens = self.count_tokens(request.prompt) + self.count_tokens(request.system or "")
        usage = Usage(input_tokens=input_tokens, output_tokens=self.count_tokens(text), calls=1)
        return OracleResponse(text=text, parsed=answer, usage=usage)

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        for index, request in enumerate(requests):  # in order: which duplicate is "first" is then deterministic
            yield index, await self.agenerate(request)


def _token_counter(oracle: Oracle, counter: Callable[[str], int] | None) -> tuple[Callable[[str], int], str]:
    if counter is not None:
        return counter, "the given token counter"
    tokenizer = getattr(getattr(oracle, "oracle", oracle), "tokenizer", None)
    if tokenizer is not None:
        return (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), "the oracle's tokenizer"
    return approx_tokens, f"{CHARS_PER_TOKEN} characters per token"


def _backend(oracle: Oracle) -> Oracle:
    return oracle.oracle if isinstance(oracle, CachedOracle) else oracle


def price_tiers(oracle: Oracle) -> dict[str, tuple[float, float]]:
    """USD per million input / output tokens per price tier of the oracle: `"standard"`, and `"batch"` for an
    oracle with a Batch API discount (`BATCH_DISCOUNT`, as `GeminiOracle`)."""
    backend = _backend(oracle)
    prices = (backend.input_price_per_million, backend.output_price_per_million)
    discount = getattr(backend, "BATCH_DISCOUNT", None)
    if discount is None:
        return {"standard": prices}
    if getattr(backend, "batch", False):  # its prices already carry the discount
        prices = (prices[0] / discount, prices[1] / discount)
    return {"standard": prices, "batch": (prices[0] * discount, prices[1] * discount)}


def default_thinking_tokens(oracle: Oracle) -> int:
    """Thinking tokens per call assumed for the oracle (see the module docstring)."""
    backend = _backend(oracle)
    budget = getattr(backend, "thinking_budget", None)
    if budget is not None and budget >= 0:
        return budget
    return DYNAMIC_THINKING_TOKENS if _DEFAULT_THINKING_MODELS.match(backend.model) else 0


@dataclass
class StepEstimate:
    """The planned calls of one pipeline step: those to pay and those already cached, with their tokens."""

    step: str
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_input_tokens: int = 0
    cached_output_tokens: int = 0

    def cost(self, prices: tuple[float, float], cached: bool = False) -> float:
        """USD at `prices` of the calls to pay (or, with `cached`, of the cached ones)."""
        if cached:
            return (self.cached_input_tokens * prices[0] + self.cached_output_tokens * prices[1]) / 1e6
        return (self.input_tokens * prices[0] + (self.output_tokens + self.thinking_tokens) * prices[1]) / 1e6


@dataclass
class CostEstimate:
    """What [`CromeAugmenter.estimate`] found: per step, on `rows` rows out of `total_rows`.

    `steps` holds the figures of the estimated rows; `scale` (`total_rows / rows`) projects them to the whole run.
    Costs are per price tier (`prices`): what a run would still pay (cached answers excluded), and what the cached
    answers cost.
    """

    oracle: str
    preset: str
    rows: int
    total_rows: int
    prices: dict[str, tuple[float, float]]
    thinking_tokens_per_call: int
    steps: list[StepEstimate] = field(default_factory=list)
    token_note: str = ""

    @classmethod
    def from_summary(
        cls,
        summary: AugmentationSummary,
        rows: int,
        total_rows: int,
        prices: dict[str, tuple[float, float]],
        thinking_tokens: int,
        token_note: str,
    ) -> CostEstimate:
        steps = [
            StepEstimate(
                step,
                calls=totals["calls"],
                cached_calls=totals["cache_hits"],
                input_tokens=totals["input_tokens"],
                output_tokens=totals["output_tokens"],
                thinking_tokens=totals["calls"] * thinking_tokens,
                cached_input_tokens=totals["cached_input_tokens"],
                cached_output_tokens=totals["cached_output_tokens"],
            )
            for step, totals in summary.steps.items()
        ]
        return cls(summary.oracle, summary.preset, rows, total_rows, prices, thinking_tokens, steps, token_note)

    @property
    def scale(self) -> float:
        return self.total_rows / self.rows if self.rows else 0.0

    @property
    def calls(self) -> int:
        """Calls still to pay on the estimated rows."""
        return sum(step.calls for step in self.steps)

    def cost(self, tier: str = "standard", projected: bool = True) -> float:
        """USD still to pay at `tier` prices, for the whole run (`projected`) or the estimated rows."""
        total = sum(step.cost(self.prices[tier]) for step in self.steps)
        return total * (self.scale if projected else 1.0)

    def calls_per_row(self) -> dict[str, float]:
        """Planned calls per row and step, cached ones included."""
        return {step.step: (step.calls + step.cached_calls) / max(1, self.rows) for step in self.steps}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scale"] = self.scale
        data["calls_per_row"] = self.calls_per_row()
        data["cost_usd"] = {tier: self.cost(tier) for tier in self.prices}
        data["cost_usd_sample"] = {tier: self.cost(tier, projected=False) for tier in self.prices}
        return data

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        tiers = list(self.prices)
        header = ["step", "calls/row", "calls", "cached", "in tok", "out tok", "thinking"] + [f"{t} $" for t in tiers]
        lines = []

        def row(name: str, steps: list[StepEstimate], scale: float = 1.0, per_row: bool = True) -> None:
            calls = sum(s.calls for s in steps)
            cached = sum(s.cached_calls for s in steps)
            values = [
                name,
                f"{(calls + cached) / max(1, self.rows):,.2f}" if per_row else "",
                f"{calls * scale:,.0f}",
                f"{cached * scale:,.0f}",
                f"{sum(s.input_tokens for s in steps) * scale:,.0f}",
                f"{sum(s.output_tokens for s in steps) * scale:,.0f}",
                f"{sum(s.thinking_tokens for s in steps) * scale:,.0f}",
            ] + [f"{sum(s.cost(self.prices[t]) for s in steps) * scale:,.2f}" for t in tiers]
            lines.append(values)

        for step in self.steps:
            row(step.step, [step])
        row(f"total ({self.rows:,} rows)", self.steps)
        if self.rows != self.total_rows:
            row(f"projected ({self.total_rows:,} rows)", self.steps, self.scale, per_row=False)
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
        table = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in [header, *lines]
        ]
        cached_cost = {t: sum(s.cost(self.prices[t], cached=True) for s in self.steps) for t in tiers}
        prices = ", ".join(f"{t} ${p[0]:g} / ${p[1]:g}" for t, p in self.prices.items())
        notes = [
            f"Estimate for oracle {self.oracle}, preset {self.preset}: {self.rows:,} of {self.total_rows:,} rows; "
            f"nothing was sent to the oracle.",
            *table,
            "calls, tokens and $: what a run still pays (cached answers excluded; they cost "
            + ", ".join(f"{t} ${c:,.2f}" for t, c in cached_cost.items())
            + " when paid).",
            f"prices per million input / output tokens: {prices}. Input tokens: {self.token_note}.",
            f"Output tokens: typical answers (rewrites as long as their source + a 150-word analysis); thinking: "
            f"{self.thinking_tokens_per_call:,} tokens per call, billed as output.",
        ]
        return "\n".join(notes)

    def __str__(self) -> str:
        return self.to_table()


__all__ = ["CostEstimate", "PlanningOracle", "StepEstimate", "approx_tokens", "price_tiers"]
