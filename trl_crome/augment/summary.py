"""What an augmentation run produced and spent, and the oracle calls of one stage with a live progress bar."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from ..oracles.base import Oracle, OracleRequest, OracleResponse, StopCheck, Usage

STEP_FIELDS = (
    "calls",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cached_input_tokens",
    "cached_output_tokens",
)


@dataclass
class AugmentationSummary:
    """Totals of one [`~trl_crome.CromeAugmenter`] run.

    Args:
        oracle (`str`):
            The oracle model's name.
        preset (`str`):
            The configuration's preset (`"paper"` or `"lite"`).
        input_rows (`int`):
            Rows read from the input dataset (after `max_rows`).
        rows_done (`int`):
            Rows whose pairs are in the output: all of them, unless the run stopped early (see `stopped`).
        rows_reused (`int`):
            Rows of the output whose chunk an earlier run had finished: read back from disk, nothing recomputed (their
            answers count as cache hits below).
        rows_incomplete (`int`):
            Rows of chunks where a call failed transiently (a timeout, 429 or 5xx after the retries). What depended on
            that answer was not asked (an attribute call: the row's elements, rewrites and verifications; an elements
            call: that attribute's rewrites), so no fallback work is paid for; rerun the same command to complete them
            (those chunks are computed again, answered calls come from the cache).
        pairs (`dict[str, int]`):
            Output pairs per kind (`"original"`, `"causal"`, `"neutral"`).
        neutrals (`dict[str, int]`):
            Output neutral pairs per type (`"iqn"`, `"aligned"`, `"paraphrase"`).
        rejects (`dict[str, int]`):
            Rewrites (counterfactual and neutral) rejected before verification, per reason: the oracle's
            (`"safety"`, `"malformed"`, `"truncated"`, `"http_<status>"`, `"timeout"`, ...) or the checks'
            (`"empty"`, `"identical"`, `"runaway_length"`, and with the lite gates `"too_short"`, `"too_long"`,
            `"format_changed"`).
        rubric_fallbacks (`dict[str, int]`):
            Prompts (lite) or rows (paper) whose attribute call gave nothing usable and which used the fallback
            attributes, per reason (`"invalid_scores"`: importance scores missing, negative, non-finite or all zero).
            A call that failed transiently does not fall back (see `rows_incomplete`).
        rescaled_scores (`int`):
            Rows whose importance scores did not sum to 1 and were rescaled.
        element_failures (`dict[str, int]`):
            Attributes whose causal-elements call gave nothing usable (their rewrites went on without elements; a
            transient failure is not one, see `rows_incomplete`).
        verification (`dict`):
            `{"passed": n, "failed": {direction: {attribute: n}}, "unverified": {reason: n}}`: the verdicts on the
            rewrites; failed and unverified rewrites are dropped.
        neutrals_missing (`int`):
            Neutral pairs that could not be made because the data has too few distinct prompts.
        filtered_out (`dict[str, int]`):
            Augmented pairs dropped by the baseline filter, per kind.
        calls (`int`):
            Requests sent to the oracle by this run, retries included.
        cache_hits (`int`):
            Requests answered from the cache (already paid for by an earlier run).
        input_tokens / output_tokens (`int`):
            Tokens spent by this run's calls.
        cost_usd (`float`):
            Estimated cost of this run's calls at the oracle's prices.
        cached_cost_usd (`float`):
            What the cache hits cost when they were first answered.
        steps (`dict[str, dict]`):
            Per pipeline step (`"attributes"`, `"causal_elements"`, `"rewrites"`, `"verification"`, ...): `calls`,
            `cache_hits`, `input_tokens`, `output_tokens` and `cost_usd` of its oracle requests, and the tokens of its
            cache hits when they were paid (`cached_input_tokens`, `cached_output_tokens`).
        templates (`dict[str, list[str]]`):
            Per step, the prompt templates (name@version) of the output's answers.
        max_cost (`float`, *optional*):
            The run's cap, when it had one.
        stopped (`dict`, *optional*):
            Set when the run stopped early at `max_cost`: the cap, what was spent (this run and cached answers), the
            step it stopped in and the first row not written. Rerun with a higher cap to go on.
        seconds (`float`):
            Wall-clock duration of the run.
    """

    oracle: str = ""
    preset: str = ""
    input_rows: int = 0
    rows_done: int = 0
    rows_reused: int = 0
    rows_incomplete: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    neutrals: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    rubric_fallbacks: dict[str, int] = field(default_factory=dict)
    rescaled_scores: int = 0
    element_failures: dict[str, int] = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    neutrals_missing: int = 0
    filtered_out: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached_cost_usd: float = 0.0
    steps: dict[str, dict] = field(default_factory=dict)
    templates: dict[str, list[str]] = field(default_factory=dict)
    max_cost: float | None = None
    stopped: dict | None = None
    seconds: float = 0.0

    def record(self, oracle: Oracle, response: OracleResponse, step: str | None = None) -> None:
        """Add one oracle response's spending (to `step`'s totals too, when given)."""
        usage, cost = response.usage, oracle.cost(response.usage)
        self.calls += usage.calls
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += cost
        if response.from_cache:
            self.cache_hits += 1
            self.cached_cost_usd += oracle.cost(response.cached_usage)
        if step is not None:
            cached = response.cached_usage or Usage()
            values = (usage.calls, int(response.from_cache), usage.input_tokens, usage.output_tokens, cost)
            values += (cached.input_tokens, cached.output_tokens)
            totals = self.steps.setdefault(step, dict.fromkeys(STEP_FIELDS, 0))
            for name, value in zip(STEP_FIELDS, values):
                totals[name] += value

    def add_reused(self, report: dict, rows: int) -> None:
        """Add the answers of a chunk an earlier run finished (see [`~trl_crome.augment.chunks.ChunkReport`]) as cache
        hits: what a rerun that asked them again from the cache would record, without asking."""
        self.rows_reused += rows
        for step, (requests, input_tokens, output_tokens, cost) in report["answers"].items():
            totals = self.steps.setdefault(step, dict.fromkeys(STEP_FIELDS, 0))
            totals["cache_hits"] += requests
            totals["cached_input_tokens"] += input_tokens
            totals["cached_output_tokens"] += output_tokens
            self.cache_hits += requests
            self.cached_cost_usd += cost

    def add_counts(self, report: dict, rows: int) -> None:
        """Add what a finished chunk of the output produced: pairs, rejects, verdicts, templates."""
        self.rows_done += rows
        self.rows_incomplete += rows if report["transient"] else 0  # a rerun computes the chunk again
        for name, value in report["counts"].items():
            setattr(self, name, _added(getattr(self, name), value))
        for step, names in report["templates"].items():
            self.templates[step] = sorted(set(self.templates.get(step, [])) | set(names))

    def finish(self, kinds: Sequence[str], neutral_types: Sequence[str], verified: bool, filtered: Sequence[str]):
        """Put the counts in their stable order: every kind, the neutral types made, reasons sorted; the
        verification only when the run verified, `filtered_out` only when it filtered (per kind in `filtered`)."""
        self.pairs = {kind: self.pairs.get(kind, 0) for kind in kinds}
        self.neutrals = {kind: self.neutrals[kind] for kind in neutral_types if self.neutrals.get(kind)}
        self.rejects, self.rubric_fallbacks = _sorted(self.rejects), _sorted(self.rubric_fallbacks)
        self.element_failures = _sorted(self.element_failures)
        verification = self.verification
        self.verification = {}
        if verified:
            self.verification = {
                "passed": verification.get("passed", 0),
                "failed": {d: _sorted(n) for d, n in sorted(verification.get("failed", {}).items())},
                "unverified": _sorted(verification.get("unverified", {})),
            }
        self.filtered_out = {kind: self.filtered_out.get(kind, 0) for kind in filtered}

    @property
    def incomplete_message(self) -> str:
        """What a run with `rows_incomplete` tells its user (logged by the augmenter, printed by the CLI)."""
        return (
            f"{self.rows_incomplete:,} rows are incomplete: oracle calls failed transiently (timeouts, 429, 5xx after "
            "the retries) and what depended on them was not asked. Rerun the same command to complete them; answered "
            "calls are cached and finished chunks kept."
        )

    @property
    def spent_usd(self) -> float:
        """What the run's answers cost: paid by this run, plus what the cache hits cost when they were paid."""
        return self.cost_usd + self.cached_cost_usd

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the summary as JSON."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2, sort_keys=False)
            file.write("\n")

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        rows = [("oracle", self.oracle), ("preset", self.preset), ("input rows", f"{self.input_rows:,}")]
        if self.stopped is not None:
            rows.append(("rows written (stopped early)", f"{self.rows_done:,}"))
        if self.rows_reused:
            rows.append(("rows reused (chunks of an earlier run)", f"{self.rows_reused:,}"))
        if self.rows_incomplete:
            rows.append(("rows incomplete (transient failures: rerun)", f"{self.rows_incomplete:,}"))
        rows += [(f"pairs: {kind}", f"{count:,}") for kind, count in self.pairs.items()]
        rows.append(("pairs: total", f"{sum(self.pairs.values()):,}"))
        rows += [(f"neutral pairs: {kind}", f"{count:,}") for kind, count in self.neutrals.items()]
        rows += [(f"rejected rewrites: {reason}", f"{count:,}") for reason, count in sorted(self.rejects.items())]
        rows += [(f"rubric fallbacks: {reason}", f"{n:,}") for reason, n in sorted(self.rubric_fallbacks.items())]
        if self.rescaled_scores:
            rows.append(("importance scores rescaled", f"{self.rescaled_scores:,}"))
        rows += [(f"no causal elements: {reason}", f"{n:,}") for reason, n in sorted(self.element_failures.items())]
        if self.verification:
            rows.append(("verification: pass", f"{self.verification['passed']:,}"))
            for direction, failed in self.verification["failed"].items():
                rows.append((f"verification: fail ({direction})", f"{sum(failed.values()):,}"))
            rows += [(f"unverified: {r}", f"{n:,}") for r, n in sorted(self.verification["unverified"].items())]
        if self.neutrals_missing:
            rows.append(("neutrals missing (too few prompts)", f"{self.neutrals_missing:,}"))
        rows += [(f"filtered out: {kind}", f"{count:,}") for kind, count in self.filtered_out.items()]
        rows += [
            ("oracle calls", f"{self.calls:,}"),
            ("cache hits", f"{self.cache_hits:,}"),
            ("tokens in / out", f"{self.input_tokens:,} / {self.output_tokens:,}"),
            ("estimated cost", f"${self.cost_usd:,.4f}"),
            ("cost of cached answers", f"${self.cached_cost_usd:,.4f}"),
        ]
        rows += [(f"calls: {step}", f"{totals['calls']:,}") for step, totals in self.steps.items()]
        if self.stopped is not None:
            stop = self.stopped
            rows.append((f"STOPPED at max_cost ${stop['max_cost']:,.4f}", f"in {stop['step']}"))
            rows.append(("first row not written", f"{stop['next_row']:,}"))
        rows.append(("seconds", f"{self.seconds:,.1f}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value:>14}" for name, value in rows)

    def __str__(self) -> str:
        return self.to_table()


def ask_oracle(
    oracle: Oracle,
    requests: Sequence[OracleRequest],
    summary: AugmentationSummary,
    desc: str,
    unit: str = "req",
    show_progress: bool = True,
    steps: Sequence[str] | None = None,
    should_stop: StopCheck | None = None,
) -> list[OracleResponse | None]:
    """Answer `requests` in order, with a progress bar showing calls, cache hits, tokens and estimated cost.

    Responses stream in as they arrive (a [`~trl_crome.oracles.CachedOracle`] stores each one at once), so an
    interrupted stage loses at most the calls in flight. `steps` names each request's pipeline step, for the
    summary's per-step totals. With `should_stop` (see [`~trl_crome.oracles.Oracle.astream`]), requests never sent
    are `None` in the result.
    """

    async def consume() -> list[OracleResponse | None]:
        responses: list[OracleResponse | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc=desc, unit=unit, disable=not show_progress) as bar:
            async for index, response in oracle.astream(requests, should_stop):
                responses[index] = response
                summary.record(oracle, response, steps[index] if steps is not None else None)
                bar.set_postfix(
                    calls=summary.calls,
                    hits=summary.cache_hits,
                    tokens=summary.input_tokens + summary.output_tokens,
                    cost=f"${summary.cost_usd:.4f}",
                    refresh=False,
                )
                bar.update()
        return responses

    if not requests:
        return []
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(consume())
    # Called from a running event loop (a notebook): run on a fresh loop in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, consume()).result()


def _sorted(counts: dict) -> dict:
    """A dict with its keys sorted, for stable JSON."""
    return {key: counts[key] for key in sorted(counts)}


def _added(total, value):
    """`total + value` for numbers, and key by key for (nested) dicts of numbers."""
    if isinstance(value, dict):
        merged = dict(total)
        for key, item in value.items():
            merged[key] = _added(merged.get(key, {} if isinstance(item, dict) else 0), item)
        return merged
    return total + value
