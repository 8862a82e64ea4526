"""Gemini through the official `google-genai` client: async with bounded concurrency, retries, the Batch API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx2 as httpx  # the HTTP client google-genai talks through (a dependency of this package)
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, SecretStr
from tqdm.auto import tqdm

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

logger = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

SAFETY_FINISH_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
# A failed row of a batch job carries a google.rpc.Status: gRPC codes, mapped to the reasons of online calls.
GRPC_REASONS = {3: "http_400", 4: "timeout", 8: "http_429", 13: "http_500", 14: "http_503"}
BATCH_DONE_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


class GeminiOracle(Oracle):
    """A Gemini model through `google-genai`, online (async, bounded concurrency) or through the Batch API.

    Structured output: a request with a `schema` is sent with `response_mime_type="application/json"` and
    `response_schema=schema`; an answer that does not validate is retried `malformed_retries` times, then reported
    as `"malformed"`. Safety blocks give `"safety"`, MAX_TOKENS truncation `"truncated"` (text kept). Timeouts, 429
    and 5xx are retried with exponential backoff and jitter, honouring `Retry-After`; when retries run out the
    reason (`"timeout"`, `"http_429"`, `"http_503"`, ...) is returned, and a cache does not store it. A rejected
    API key or an unknown model raises [`OracleFatalError`].

    Args:
        model (`str`, defaults to `"gemini-2.5-flash"`):
            The Gemini model. The paper used gemini-2.0-flash, which is retired.
        api_key (`str` or `None`):
            Defaults to the `GEMINI_API_KEY` or `GOOGLE_API_KEY` environment variable. Held as a `SecretStr`: never
            logged, cached, or shown in a repr or an exception.
        max_concurrency (`int`, defaults to `32`):
            Requests in flight at once (online mode).
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
            Use the Batch API (half price, answers within hours): requests are submitted as inlined batch jobs of
            `batch_size` rows. Each job's name is written to `state_dir` before polling, keyed by a hash of its
            requests, so an interrupted run resumes polling the same job instead of paying again.
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
        http_options: dict[str, Any] | types.HttpOptions | None = None,
        max_retries: int = 5,
        timeout: float = 120.0,
        malformed_retries: int = 1,
        thinking_budget: int | None = None,
        batch: bool = False,
        batch_size: int = 1000,
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
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max)
        self.malformed_retries = malformed_retries
        self.thinking_budget = thinking_budget
        self.batch = batch
        self.batch_size = batch_size
        self.state_dir = Path(state_dir) if state_dir is not None else default_cache_dir() / "gemini_batches"
        self.poll_interval = poll_interval
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
            retry_after = None
            try:
                answer = await self._client().aio.models.generate_content(
                    model=self.model, contents=request.prompt, config=config
                )
            except errors.APIError as error:
                reason = self._api_error_reason(error)
                headers = getattr(error.response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("retry-after"))
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError:
                reason = "connection"
            else:
                response = self._to_response(request, answer, usage)
                if response.error != "malformed" or malformed >= self.malformed_retries:
                    return response
                malformed += 1
                logger.debug(
                    "Malformed JSON from %s, asking again (%d/%d)", self.model, malformed, self.malformed_retries
                )
                continue
            if not is_transient_error(reason) or retries >= self.retry.max_retries:
                return OracleResponse(usage=usage, error=reason)
            delay = self.retry.delay(retries, retry_after)
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
        chunks = [
            range(start, min(start + self.batch_size, len(requests)))
            for start in range(0, len(requests), self.batch_size)
        ]
        jobs = [asyncio.create_task(self._run_batch_job(requests, chunk, should_stop)) for chunk in chunks]
        try:
            for finished in asyncio.as_completed(jobs):
                state_path, rows = await finished
                for item in rows:
                    yield item
                # Only now, when every answer has been handed on (and stored by a cache): a run killed earlier
                # resumes this job rather than paying for it again.
                state_path.unlink(missing_ok=True)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    # -- Batch API -------------------------------------------------------------------------------------------------
    def _state_path(self, keys: Sequence[str]) -> Path:
        digest = hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()[:32]
        return self.state_dir / f"{digest}.json"

    async def _run_batch_job(
        self, requests: Sequence[OracleRequest], indices: range, should_stop: StopCheck | None = None
    ) -> tuple[Path, list[tuple[int, OracleResponse]]]:
        """Submits (or resumes) one batch job, polls it to the end; returns its state file and its rows' responses.

        A job already submitted is always resumed (it is paid for); a new one is not submitted once `should_stop()`
        says so, and then gives no rows."""
        client = self._client()
        keys = [requests[i].cache_key(self.model) for i in indices]
        state_path = self._state_path(keys)
        if state_path.exists():
            name = json.loads(state_path.read_text())["name"]
            logger.info("Resuming batch job %s (%d requests) from %s", name, len(keys), state_path)
        elif should_stop is not None and should_stop():
            return state_path, []
        else:
            inlined = [
                types.InlinedRequest(
                    contents=requests[i].prompt, config=self._config(requests[i]), metadata={"key": k}
                )
                for i, k in zip(indices, keys)
            ]
            job = await self._call_with_retries(
                client.aio.batches.create,
                model=self.model,
                src=inlined,
                config=types.CreateBatchJobConfig(display_name=f"trl-crome-{state_path.stem[:12]}"),
            )
            name = job.name
            # Written before the first poll: a run killed from now on resumes this job instead of paying again.
            _write_atomically(
                state_path, {"name": name, "model": self.model, "requests": len(keys), "time": time.time()}
            )
            logger.info("Submitted batch job %s (%d requests); state in %s", name, len(keys), state_path)
        with tqdm(desc=f"polling {name}", unit="poll", leave=False) as bar:
            job = await self._call_with_retries(client.aio.batches.get, name=name)
            while job.state is None or job.state.value not in BATCH_DONE_STATES:
                bar.set_postfix_str(job.state.value if job.state is not None else "unknown", refresh=False)
                bar.update()
                await asyncio.sleep(self.poll_interval)
                job = await self._call_with_retries(client.aio.batches.get, name=name)
        state = job.state.value
        if state != "JOB_STATE_SUCCEEDED" or job.dest is None or job.dest.inlined_responses is None:
            logger.warning(
                "Batch job %s ended in %s: its %d requests are reported as batch_failed", name, state, len(keys)
            )
            state_path.unlink(missing_ok=True)  # the next run submits them again
            return state_path, [(i, OracleResponse(usage=Usage(calls=1), error="batch_failed")) for i in indices]
        rows = job.dest.inlined_responses
        by_key = {row.metadata["key"]: row for row in rows if row.metadata and "key" in row.metadata}
        results = []
        for position, (index, key) in enumerate(zip(indices, keys)):
            row = by_key.get(key, rows[position] if position < len(rows) else None)
            usage = Usage(calls=1)
            if row is None or (row.response is None and row.error is None):
                results.append((index, OracleResponse(usage=usage, error="batch_missing")))
            elif row.error is not None:
                code = row.error.code or 0
                results.append(
                    (index, OracleResponse(usage=usage, error=GRPC_REASONS.get(code, f"batch_error_{code}")))
                )
            else:
                results.append((index, self._to_response(requests[index], row.response, usage)))
        return state_path, results

    async def _call_with_retries(self, method, **kwargs):
        """A Batch API call (create / get), retried like online calls; raises when retries run out."""
        for attempt in range(self.retry.max_retries + 1):
            retry_after = None
            try:
                return await method(**kwargs)
            except errors.APIError as error:
                reason = self._api_error_reason(error)
                if not is_transient_error(reason) or attempt == self.retry.max_retries:
                    raise OracleFatalError(
                        self._redact(f"Batch API call failed: {error.code} {error.message}")
                    ) from None
                headers = getattr(error.response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("retry-after"))
            except httpx.TransportError as error:
                if attempt == self.retry.max_retries:
                    raise OracleFatalError(f"Batch API unreachable: {type(error).__name__}") from None
            await asyncio.sleep(self.retry.delay(attempt, retry_after))


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)
