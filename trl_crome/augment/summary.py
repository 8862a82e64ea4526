"""What an augmentation run produced and spent, and the oracle calls of one stage with a live progress bar."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from ..oracles.base import Oracle, OracleRequest, OracleResponse


@dataclass
class AugmentationSummary:
    """Totals of one [`~trl_crome.CromeAugmenter`] run.

    Args:
        oracle (`str`):
            The oracle model's name.
        input_rows (`int`):
            Rows read from the input dataset (after `max_rows`).
        pairs (`dict[str, int]`):
            Output pairs per kind (`"original"`, `"causal"`, `"neutral"`).
        rejects (`dict[str, int]`):
            Counterfactual rewrites rejected, per reason: the oracle's (`"safety"`, `"malformed"`, `"truncated"`,
            `"http_<status>"`, `"timeout"`, ...) or the validation's (`"empty"`, `"identical"`, `"too_short"`,
            `"too_long"`, `"format_changed"`).
        rubric_fallbacks (`dict[str, int]`):
            Prompts whose rubric call gave nothing usable and which used the fallback attributes, per reason.
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
        seconds (`float`):
            Wall-clock duration of the run.
    """

    oracle: str = ""
    input_rows: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    rubric_fallbacks: dict[str, int] = field(default_factory=dict)
    neutrals_missing: int = 0
    filtered_out: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached_cost_usd: float = 0.0
    seconds: float = 0.0

    def record(self, oracle: Oracle, response: OracleResponse) -> None:
        """Add one oracle response's spending."""
        self.calls += response.usage.calls
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens
        self.cost_usd += oracle.cost(response.usage)
        if response.from_cache:
            self.cache_hits += 1
            self.cached_cost_usd += oracle.cost(response.cached_usage)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the summary as JSON."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2, sort_keys=False)
            file.write("\n")

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        rows = [("oracle", self.oracle), ("input rows", f"{self.input_rows:,}")]
        rows += [(f"pairs: {kind}", f"{count:,}") for kind, count in self.pairs.items()]
        rows.append(("pairs: total", f"{sum(self.pairs.values()):,}"))
        rows += [(f"rejected rewrites: {reason}", f"{count:,}") for reason, count in sorted(self.rejects.items())]
        rows += [(f"rubric fallbacks: {reason}", f"{n:,}") for reason, n in sorted(self.rubric_fallbacks.items())]
        if self.neutrals_missing:
            rows.append(("neutrals missing (too few prompts)", f"{self.neutrals_missing:,}"))
        rows += [(f"filtered out: {kind}", f"{count:,}") for kind, count in self.filtered_out.items()]
        rows += [
            ("oracle calls", f"{self.calls:,}"),
            ("cache hits", f"{self.cache_hits:,}"),
            ("tokens in / out", f"{self.input_tokens:,} / {self.output_tokens:,}"),
            ("estimated cost", f"${self.cost_usd:,.4f}"),
            ("cost of cached answers", f"${self.cached_cost_usd:,.4f}"),
            ("seconds", f"{self.seconds:,.1f}"),
        ]
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
) -> list[OracleResponse]:
    """Answer `requests` in order, with a progress bar showing calls, cache hits, tokens and estimated cost.

    Responses stream in as they arrive (a [`~trl_crome.oracles.CachedOracle`] stores each one at once), so an
    interrupted stage loses at most the calls in flight.
    """

    async def consume() -> list[OracleResponse]:
        responses: list[OracleResponse | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc=desc, unit=unit, disable=not show_progress) as bar:
            async for index, response in oracle.astream(requests):
                responses[index] = response
                summary.record(oracle, response)
                bar.set_postfix(
                    calls=summary.calls,
                    hits=summary.cache_hits,
                    tokens=summary.input_tokens + summary.output_tokens,
                    cost=f"${summary.cost_usd:.4f}",
                    refresh=False,
                )
                bar.update()
        return responses  # type: ignore[return-value]

    if not requests:
        return []
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(consume())
    # Called from a running event loop (a notebook): run on a fresh loop in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, consume()).result()


def counts(counter: Counter[str]) -> dict[str, int]:
    """A counter as a plain dict with its keys sorted, for stable JSON."""
    return {key: counter[key] for key in sorted(counter)}
