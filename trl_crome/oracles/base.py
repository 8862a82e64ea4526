"""The one small interface every LLM backend implements, and the request / response / usage types it speaks.

An oracle knows nothing of Crome: it turns rendered prompts into text (or JSON validated against a schema) and
reports the tokens it spent. Caching, resuming and cost accounting are built on top of this interface.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

# `should_stop` of `Oracle.astream`: asked before each new request is sent; True means send no more.
StopCheck = Callable[[], bool]


class OracleFatalError(RuntimeError):
    """A failure that no retry or other row can fix (a rejected API key, an unknown model): the run must stop.

    Per-row failures never raise; they come back as [`OracleResponse.error`].
    """


@dataclass(frozen=True)
class OracleRequest:
    """One call to an oracle.

    Args:
        prompt (`str`):
            The fully rendered user prompt.
        template (`str`):
            Name and version of the template that rendered `prompt`, e.g. `"degrade@1"`. Part of the cache key, so
            that editing a template invalidates exactly its cached answers.
        system (`str` or `None`):
            Optional system instruction.
        schema (`type[pydantic.BaseModel]` or `None`):
            When set, the oracle asks for JSON matching this schema and fills [`OracleResponse.parsed`].
        max_output_tokens (`int`):
            Upper bound on generated tokens.
        temperature (`float`):
            Sampling temperature; 0 keeps runs reproducible where the backend allows it.
    """

    prompt: str
    template: str = "raw@1"
    system: str | None = None
    schema: type[BaseModel] | None = None
    max_output_tokens: int = 1024
    temperature: float = 0.0

    def cache_key(self, model: str) -> str:
        """A stable hash of everything that determines the answer: the oracle model, the template and the input."""
        schema = _schema_json(self.schema) if self.schema is not None else None
        payload = {
            "model": model,
            "template": self.template,
            "system": self.system,
            "prompt": self.prompt,
            "schema": schema,
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def parse(self, text: str | None) -> dict[str, Any] | None:
        """Validates `text` against `schema`: the whole text, else its first JSON object (models often wrap JSON in
        prose or a code fence). Returns the JSON as a dict, or `None` when nothing validates."""
        if self.schema is None or text is None:
            return None
        for candidate in (text, first_json_object(text)):
            if candidate is None:
                continue
            try:
                return self.schema.model_validate_json(candidate).model_dump(mode="json")
            except ValidationError:
                pass
        return None


@functools.cache
def _schema_json(schema: type[BaseModel]) -> str:
    # Building a JSON schema is slow next to hashing: done once per schema class, not once per request.
    return json.dumps(schema.model_json_schema(), sort_keys=True)


def first_json_object(text: str) -> str | None:
    """The first `{...}` in `text` that parses as JSON, or `None`."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            _, end = decoder.raw_decode(text, start)
            return text[start:end]
        except ValueError:
            start = text.find("{", start + 1)
    return None


@dataclass
class Usage:
    """Tokens and calls spent; adds up with `+`.

    `calls` counts the requests sent to the backend, retries included (a 429 then a success is 2 calls).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.calls + other.calls,
        )


# Reasons that a later run may not meet again: they are retried on resume, never cached.
TRANSIENT_ERRORS = frozenset({"timeout", "connection", "bad_response", "http_408", "http_429", "batch_failed"})


def is_transient_error(error: str | None) -> bool:
    """Whether a failure reason is transient (timeouts, rate limits, 5xx): worth retrying later, not caching."""
    return error is not None and (error in TRANSIENT_ERRORS or error.startswith("http_5"))


@dataclass
class OracleResponse:
    """What an oracle returned for one request.

    `error` is `None` on success, otherwise a short machine-readable reason (`"safety"`, `"malformed"`,
    `"truncated"`, `"http_<status>"`, `"timeout"`, ...) used to count rejects per reason.

    A response served from a cache spends nothing (`usage` is zero) and keeps what the original call spent in
    `cached_usage`, so that a resumed run can still report the total cost of its data.
    """

    text: str | None = None
    parsed: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    cached_usage: Usage | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def from_cache(self) -> bool:
        return self.cached_usage is not None

    @property
    def transient(self) -> bool:
        """True for failures a later attempt may not meet (see [`is_transient_error`])."""
        return is_transient_error(self.error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OracleResponse:
        cached = data.get("cached_usage")
        return cls(
            text=data["text"],
            parsed=data["parsed"],
            usage=Usage(**data["usage"]),
            error=data["error"],
            cached_usage=Usage(**cached) if cached is not None else None,
        )


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter for transient failures (timeouts, 429, 5xx).

    Args:
        max_retries (`int`):
            Retries after the first attempt; a request makes at most `max_retries + 1` calls.
        backoff_base (`float`):
            Seconds before the first retry; doubles with each retry.
        backoff_max (`float`):
            Cap on one wait.
    """

    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt + 1`; a server's `Retry-After` wins (with a little jitter)."""
        if retry_after is not None:
            return retry_after * random.uniform(1.0, 1.1)
        # "Full jitter" over the upper half: clients that failed together do not retry together.
        return min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (the HTTP-date form is rare for APIs: ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class OracleStats:
    """Running totals of one oracle object: what it answered, what it spent and what its cache saved."""

    responses: int = 0
    cache_hits: int = 0
    usage: Usage = field(default_factory=Usage)
    saved_usage: Usage = field(default_factory=Usage)
    errors: Counter = field(default_factory=Counter)

    def record(self, response: OracleResponse) -> None:
        self.responses += 1
        self.usage += response.usage
        if response.cached_usage is not None:
            self.cache_hits += 1
            self.saved_usage += response.cached_usage
        if response.error is not None:
            self.errors[response.error] += 1


class Oracle(ABC):
    """Base class of every LLM backend.

    Subclasses implement [`~Oracle.agenerate`] for a single request; a backend that answers many requests at once
    (local batched generation, a batch API) also overrides [`~Oracle._astream`], honouring its `should_stop`.
    [`~Oracle.generate`] runs many requests with at most `max_concurrency` in flight and returns the responses in
    request order.

    Class attributes:
        input_price_per_million / output_price_per_million (`float`):
            USD per million tokens, for cost estimates (0 for local models).
    """

    input_price_per_million: float = 0.0
    output_price_per_million: float = 0.0

    def __init__(self, model: str, max_concurrency: int = 8):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.max_concurrency = max_concurrency
        self.stats = OracleStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, max_concurrency={self.max_concurrency})"

    @abstractmethod
    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        """Answer one request. Must not raise for per-request failures: return a response with `error` set."""

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        """Yields `(index, response)` as each answer arrives, `max_concurrency` requests in flight.

        Each worker waits until its answer has been handed on (counted by the caller, stored by a cache) before it
        sends its next request: answers never pile up unstored behind a slow consumer, so a killed run loses at most
        `max_concurrency` answers. With `should_stop`, the worker then asks it first: once it says True, no new
        request is sent, at most `max_concurrency - 1` requests already in flight finish after the answer that decided
        the stop, and requests never sent are not yielded.
        """
        queue: asyncio.Queue = asyncio.Queue()
        pending = iter(enumerate(requests))  # shared by the workers: each request is taken exactly once
        done = object()  # what a worker puts when it has no more request to send

        async def worker() -> None:
            try:
                while not (should_stop is not None and should_stop()):
                    item = next(pending, None)
                    if item is None:
                        break
                    index, request = item
                    handed_on = asyncio.Event()
                    await queue.put((index, await self.agenerate(request), handed_on))
                    await handed_on.wait()
            except Exception as error:  # a fatal error: hand it to the consumer, which re-raises it
                await queue.put(error)
            await queue.put(done)

        workers = [asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, len(requests)))]
        try:
            running = len(workers)
            while running:
                item = await queue.get()
                if item is done:
                    running -= 1
                    continue
                if isinstance(item, Exception):
                    raise item
                index, response, handed_on = item
                yield index, response
                handed_on.set()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        """Yields `(index, response)` for every request as soon as its answer arrives (not in request order).

        This is what lets a cache store each answer the moment it exists, so that a killed run loses nothing.

        Args:
            requests (`Sequence[OracleRequest]`):
                The requests to answer.
            should_stop (`Callable[[], bool]`, *optional*):
                Asked before each new request is sent (each batch job, for a batch backend). Once it returns True,
                nothing new is sent: the requests already sent finish and are yielded (and stored by a
                [`CachedOracle`]), the others are *not yielded*, so the caller gets fewer responses than requests.
                Used to stop a run at a budget; it must be cheap and must not raise.
        """
        async for index, response in self._astream(requests, should_stop):
            self.stats.record(response)
            yield index, response

    async def agenerate_many(self, requests: Sequence[OracleRequest], progress: bool = True) -> list[OracleResponse]:
        """Answers `requests` and returns the responses in request order, with a progress bar."""
        responses: list[OracleResponse | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc=f"oracle {self.model}", unit="req", disable=not progress) as bar:
            async for index, response in self.astream(requests):
                responses[index] = response
                bar.update()
        return responses  # type: ignore[return-value]

    def generate(self, requests: Sequence[OracleRequest], progress: bool = True) -> list[OracleResponse]:
        """Synchronous entry point: answers `requests` in order (also from code already inside an event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate_many(requests, progress=progress))
        # A running loop (a notebook, an async caller): run on a fresh loop in a helper thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.agenerate_many(requests, progress=progress)).result()

    def cost(self, usage: Usage) -> float:
        """Estimated USD for `usage` at this oracle's prices."""
        return (
            usage.input_tokens * self.input_price_per_million + usage.output_tokens * self.output_price_per_million
        ) / 1e6

    def summary(self) -> dict[str, Any]:
        """Totals so far, ready to log: responses, cache hits, calls, tokens, cost, errors per reason."""
        stats = self.stats
        return {
            "model": self.model,
            "responses": stats.responses,
            "cache_hits": stats.cache_hits,
            "calls": stats.usage.calls,
            "input_tokens": stats.usage.input_tokens,
            "output_tokens": stats.usage.output_tokens,
            "cost_usd": self.cost(stats.usage),
            "cached_input_tokens": stats.saved_usage.input_tokens,
            "cached_output_tokens": stats.saved_usage.output_tokens,
            "cached_cost_usd": self.cost(stats.saved_usage),
            "errors": dict(stats.errors),
        }
