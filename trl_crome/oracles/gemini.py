"""Gemini through the official `google-genai` client: async with bounded concurrency, quota pacing and retries, or
the Batch API (see `gemini_batch.py`)."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx2 as httpx  # the HTTP client google-genai talks through (a dependency of this package)
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, SecretStr

from ..models import default_cache_dir
from .base import (
    Oracle,
    OracleFatalError,
    OracleRequest,
    OracleResponse,
    RetryPolicy,
    StopCheck,
    Usage,
    is_transient_error,
    parse_retry_after,
)
from .gemini_batch import BatchRunner
from .pacing import Throttle

logger = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

SAFETY_FINISH_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}


class GeminiOracle(Oracle):
    """A Gemini model through `google-genai`, online (async, bounded concurrency) or through the Batch API.

    Structured output: a request with a `schema` is sent with `response_mime_type="application/json"` and
    `response_schema=schema`; an answer that does not validate is retried `malformed_retries` times, then reported
    as `"malformed"`. Safety blocks give `"safety"`, MAX_TOKENS truncation `"truncated"` (text kept). Timeouts, 429
    and 5xx are retried with exponential backoff and jitter, honouring `Retry-After`; when retries run out the
    reason (`"timeout"`, `"http_429"`, `"http_503"`, ...) is returned, and a cache does not store it. A rejected
    API key or an unknown model raises [`OracleFatalError`], and so does an unreachable API (see `outage_timeout`).
    Online calls can be paced to the account's quota (`requests_per_minute`, `tokens_per_minute`), and the calls in
    flight halve on a 429 and grow back with successes ([`~trl_crome.oracles.pacing.Throttle`]).

    Args:
        model (`str`, defaults to `"gemini-2.5-flash"`):
            The Gemini model. The paper used gemini-2.0-flash, which is retired.
        api_key (`str` or `None`):
            Defaults to the `GEMINI_API_KEY` or `GOOGLE_API_KEY` environment variable. Held as a `SecretStr`: never
            logged, cached, or shown in a repr or an exception.
        max_concurrency (`int`, defaults to `32`):
            Requests in flight at once (online mode); the most, when 429s lower it for a while.
        requests_per_minute (`float`, *optional*):
            Online calls per minute, retries included, spaced evenly (the account's RPM quota for the model).
        tokens_per_minute (`float`, *optional*):
            Input tokens per minute (the account's TPM quota), estimated from the prompt and corrected by the answer.
        outage_timeout (`float`, defaults to `120.0`):
            Seconds of consecutive failed calls (connection refused, timeouts, 429, 5xx) after which the run stops
            with [`OracleFatalError`], keeping what it was paid for; `startup_timeout` (defaults to `15.0`) when no
            call has succeeded yet (a wrong URL stops the run in about that time).
        http_options (`dict` or `google.genai.types.HttpOptions`, *optional*):
            Passed to `genai.Client`, e.g. `{"base_url": "http://127.0.0.1:8080"}` for a local server.
        max_retries (`int`, defaults to `5`):
            Retries of a transient failure; `backoff_base` / `backoff_max` shape the waits (see [`RetryPolicy`]).
        timeout (`float`, defaults to `120.0`):
            Seconds before one HTTP call is abandoned (and retried).
        malformed_retries (`int`, defaults to `1`):
            Extra attempts when the JSON answer does not validate.
        thinking_budget (`int`, *optional*):
            Thinking tokens allowed (0 turns thinking off on Flash models); `None` keeps the model's default.
        batch (`bool`, defaults to `False`):
            Use the Batch API (half price, answers within hours): requests go in jobs of `batch_size` rows, at most
            `batch_max_jobs` jobs in flight, inline or, past `batch_inline_max_bytes`, as a JSONL file through the
            Files API. Each job is recorded in `state_dir` before it is submitted, so an interrupted run resumes its
            jobs instead of paying again (see [`~trl_crome.oracles.gemini_batch.BatchRunner`]).
        batch_size (`int`, defaults to `1000`):
            Requests per batch job.
        batch_max_jobs (`int`, defaults to `50`):
            Batch jobs in flight at once (Google allows 100 per project); the others wait their turn. Lowered for
            the rest of the run when the server refuses a new job with 429.
        batch_max_enqueued_tokens (`int`, *optional*):
            Most estimated input tokens in the jobs in flight (the model's enqueued-token quota).
        batch_inline_max_bytes (`int`, defaults to `18_000_000`):
            Jobs whose requests' JSON is larger go as a file (Google refuses inline jobs past 20 MB).
        batch_resubmits (`int`, defaults to `3`):
            How many times the rows a job left unanswered (missing, transient errors, a failed or expired job) are
            submitted again in a new job before they are reported as failed.
        state_dir (`str` or `os.PathLike`, *optional*):
            Defaults to `~/.cache/trl_crome/gemini_batches` (or `$TRL_CROME_CACHE/gemini_batches`).
        poll_interval (`float`, defaults to `30.0`):
            Seconds between two polls of a batch job.
        prices (`tuple[float, float]`, *optional*):
            USD per million input / output tokens; defaults to the `PRICES` entry of `model`.
    """

    # USD per million (input, output) tokens, standard tier, text, prompts up to 200k tokens (ai.google.dev/pricing).
    # Thinking tokens are billed as output. Override with `prices=` or by editing this table in a subclass.
    PRICES: ClassVar[dict[str, tuple[float, float]]] = {
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-flash-lite": (0.10, 0.40),
        "gemini-2.5-pro": (1.25, 10.00),
        "gemini-2.0-flash": (0.10, 0.40),
        "gemini-2.0-flash-lite": (0.075, 0.30),
    }
    BATCH_DISCOUNT: ClassVar[float] = 0.5

    def __init__(
        self,
        model: str = "gemini-2.5-flash",
        api_key: str | None = None,
        max_concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        outage_timeout: float = 120.0,
        startup_timeout: float = 15.0,
        http_options: dict[str, Any] | types.HttpOptions | None = None,
        max_retries: int = 5,
        timeout: float = 120.0,
        malformed_retries: int = 1,
        thinking_budget: int | None = None,
        batch: bool = False,
        batch_size: int = 1000,
        batch_max_jobs: int = 50,
        batch_max_enqueued_tokens: int | None = None,
        batch_inline_max_bytes: int = 18_000_000,
        batch_resubmits: int = 3,
        state_dir: str | os.PathLike | None = None,
        poll_interval: float = 30.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        prices: tuple[float, float] | None = None,
    ):
        super().__init__(model=model, max_concurrency=max_concurrency)
        api_key = api_key or next((os.environ[v] for v in API_KEY_ENV_VARS if os.environ.get(v)), None)
        if not api_key:
            raise ValueError(f"No Gemini API key: pass `api_key=` or set {' or '.join(API_KEY_ENV_VARS)}.")
        self._api_key = SecretStr(api_key)
        options = types.HttpOptions.model_validate(http_options or {}).model_copy()  # never edit the caller's
        if options.timeout is None:
            options.timeout = int(timeout * 1000)  # google-genai counts milliseconds
        self._http_options = options
        self.http_timeout = options.timeout / 1000  # seconds
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max)
        self.malformed_retries = malformed_retries
        self.thinking_budget = thinking_budget
        self.batch = batch
        if batch_size < 1 or batch_max_jobs < 1:
            raise ValueError(f"batch_size ({batch_size}) and batch_max_jobs ({batch_max_jobs}) must be >= 1")
        self.batch_size = batch_size
        self.batch_max_jobs = batch_max_jobs
        self.batch_max_enqueued_tokens = batch_max_enqueued_tokens
        self.batch_inline_max_bytes = batch_inline_max_bytes
        self.batch_resubmits = batch_resubmits
        self.state_dir = Path(state_dir) if state_dir is not None else default_cache_dir() / "gemini_batches"
        self.poll_interval = poll_interval
        where = f"Gemini ({options.base_url or 'generativelanguage.googleapis.com'}, model {model!r})"
        limits = (requests_per_minute, tokens_per_minute, outage_timeout, startup_timeout)
        self.throttle = Throttle(max_concurrency, *limits, where=where)
        if prices is None and model not in self.PRICES:
            logger.warning("No price known for %s: cost estimates will be 0 (pass `prices=(input, output)`).", model)
        input_price, output_price = prices or self.PRICES.get(model, (0.0, 0.0))
        discount = self.BATCH_DISCOUNT if batch else 1.0
        self.input_price_per_million = input_price * discount
        self.output_price_per_million = output_price * discount
        self._ssl_context = None
        # One client per event loop: an async HTTP connection pool cannot outlive the loop that opened it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, genai.Client] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"GeminiOracle(model={self.model!r}, batch={self.batch}, max_concurrency={self.max_concurrency})"

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _client(self) -> genai.Client:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            options = self._http_options
            if options.httpx_async_client is None:
                # Loading the CA store costs ~0.1 s of CPU: once per oracle, not once per client (one per loop).
                if self._ssl_context is None:
                    self._ssl_context = httpx.create_ssl_context()
                limits = httpx.Limits(max_connections=max(100, self.max_concurrency))
                options = options.model_copy(
                    update={
                        "httpx_client": options.httpx_client or httpx.Client(verify=self._ssl_context),
                        "httpx_async_client": httpx.AsyncClient(verify=self._ssl_context, limits=limits),
                    }
                )
            self._clients[loop] = genai.Client(api_key=self._api_key.get_secret_value(), http_options=options)
        return self._clients[loop]

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key.get_secret_value(), "***")

    def _config(self, request: OracleRequest) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
        )
        if request.schema is not None:
            config.response_mime_type = "application/json"
            config.response_schema = request.schema
        if self.thinking_budget is not None:
            config.thinking_config = types.ThinkingConfig(thinking_budget=self.thinking_budget)
        return config

    def _api_error_reason(self, error: errors.APIError) -> str:
        """The reason of a failed call, or raises for failures that no retry or other row can fix."""
        message = self._redact(f"{error.code} {error.status}: {error.message}")
        rejected_key = error.code == 400 and ("API_KEY_INVALID" in str(error.details) or "API key" in message)
        if error.code in (401, 403, 404) or rejected_key:
            raise OracleFatalError(f"Gemini rejected the request for model {self.model!r}: {message}") from None
        return f"http_{error.code}"

    def _to_response(
        self, request: OracleRequest, response: types.GenerateContentResponse, usage: Usage
    ) -> OracleResponse:
        """An [`OracleResponse`] from a GenerateContentResponse (online or a batch row); adds its tokens to `usage`."""
        metadata = response.usage_metadata
        if metadata is not None:
            usage.input_tokens += metadata.prompt_token_count or 0
            usage.output_tokens += (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
        if response.prompt_feedback is not None and response.prompt_feedback.block_reason is not None:
            return OracleResponse(usage=usage, error="safety")
        if not response.candidates:
            return OracleResponse(usage=usage, error="empty")
        candidate = response.candidates[0]
        finish = getattr(candidate.finish_reason, "value", candidate.finish_reason) or "STOP"
        parts = candidate.content.parts if candidate.content is not None and candidate.content.parts else []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        if finish in SAFETY_FINISH_REASONS:
            return OracleResponse(text=text or None, usage=usage, error="safety")
        if finish == "RECITATION":
            return OracleResponse(text=text or None, usage=usage, error="recitation")
        if finish == "MAX_TOKENS":
            return OracleResponse(text=text, usage=usage, error="truncated")
        if request.schema is None:
            return OracleResponse(text=text, usage=usage)
        parsed = response.parsed if isinstance(response.parsed, BaseModel) else None
        parsed = parsed.model_dump(mode="json") if parsed is not None else request.parse(text)
        return OracleResponse(text=text, parsed=parsed, usage=usage, error=None if parsed is not None else "malformed")

    # -- online ----------------------------------------------------------------------------------------------------
    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        usage = Usage()
        config = self._config(request)
        retries = malformed = 0
        while True:
            usage.calls += 1
            answer = None
            async with self.throttle.call(request) as outcome:  # pacing, adaptive concurrency, outage breaker
                try:
                    answer = await self._client().aio.models.generate_content(
                        model=self.model, contents=request.prompt, config=config
                    )
                except errors.APIError as error:
                    outcome.failure = self._api_error_reason(error)
                    headers = getattr(error.response, "headers", None) or {}
                    outcome.retry_after = parse_retry_after(headers.get("retry-after"))
                except httpx.TimeoutException:
                    outcome.failure = "timeout"
                except httpx.TransportError:
                    outcome.failure = "connection"
                else:
                    metadata = answer.usage_metadata
                    outcome.input_tokens = metadata.prompt_token_count if metadata is not None else None
            if answer is not None:
                response = self._to_response(request, answer, usage)
                if response.error != "malformed" or malformed >= self.malformed_retries:
                    return response
                malformed += 1
                logger.debug(
                    "Malformed JSON from %s, asking again (%d/%d)", self.model, malformed, self.malformed_retries
                )
                continue
            reason = outcome.failure
            if not is_transient_error(reason) or retries >= self.retry.max_retries:
                return OracleResponse(usage=usage, error=reason)
            delay = self.throttle.retry_delay(self.retry.delay(retries, outcome.retry_after))
            retries += 1
            logger.info(
                "%s from %s; retry %d/%d in %.1f s", reason, self.model, retries, self.retry.max_retries, delay
            )
            await asyncio.sleep(delay)

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        if not self.batch:
            async for item in super()._astream(requests, should_stop):
                yield item
            return
        async for item in BatchRunner(self, requests).run(should_stop):
            yield item
