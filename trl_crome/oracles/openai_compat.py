"""Any OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp, SGLang, OpenAI itself) over async HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

import httpx2 as httpx  # the HTTP client google-genai talks through (a dependency of this package)
from pydantic import SecretStr

from .base import (
    Oracle,
    OracleFatalError,
    OracleRequest,
    OracleResponse,
    RetryPolicy,
    Usage,
    is_transient_error,
    parse_retry_after,
)
from .pacing import Throttle

logger = logging.getLogger(__name__)


class OpenAICompatibleOracle(Oracle):
    """A model behind `POST {base_url}/chat/completions`.

    A request with a `schema` asks for `response_format={"type": "json_schema", ...}`; a server that rejects it (400)
    is asked again without it, and from then on the JSON is read from the text (the first JSON object that
    validates). Retries, reasons, usage, quota pacing and the outage breaker follow [`GeminiOracle`]: 429 / 5xx /
    timeouts retried with backoff and `Retry-After`; finish_reason `length` -> `"truncated"`, `content_filter` ->
    `"safety"`; tokens from `usage.prompt_tokens` / `usage.completion_tokens`.

    Args:
        model (`str`):
            The model name the server expects.
        base_url (`str`):
            E.g. `"http://localhost:8000/v1"` (vLLM) or `"https://api.openai.com/v1"`.
        api_key (`str` or `None`):
            Defaults to `OPENAI_API_KEY` (local servers usually need none). Never logged, cached or shown.
        max_concurrency (`int`, defaults to `32`):
            Requests in flight at once; the most, when 429s lower it for a while.
        requests_per_minute / tokens_per_minute (`float`, *optional*), outage_timeout / startup_timeout (`float`,
        defaults to `120.0` / `15.0`), max_retries (`int`, defaults to `5`), timeout (`float`, defaults to
        `120.0`), malformed_retries (`int`, defaults to `1`), backoff_base / backoff_max (`float`):
            As in [`GeminiOracle`]. `tokens_per_minute` counts input tokens (OpenAI's own limit also counts
            `max_tokens`: set it lower there).
        prices (`tuple[float, float]`, defaults to `(0.0, 0.0)`):
            USD per million input / output tokens.
        extra_body (`dict`, *optional*):
            Extra fields for every request body (e.g. `{"top_p": 1.0}` or server-specific options).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        max_concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        outage_timeout: float = 120.0,
        startup_timeout: float = 15.0,
        max_retries: int = 5,
        timeout: float = 120.0,
        malformed_retries: int = 1,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        prices: tuple[float, float] = (0.0, 0.0),
        extra_body: dict[str, Any] | None = None,
    ):
        super().__init__(model=model, max_concurrency=max_concurrency)
        self.base_url = base_url.rstrip("/")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self._api_key = SecretStr(api_key) if api_key else None
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max)
        self.malformed_retries = malformed_retries
        self.input_price_per_million, self.output_price_per_million = prices
        self.extra_body = extra_body or {}
        self.json_schema_supported = True  # turned off when the server rejects `response_format`
        limits = (requests_per_minute, tokens_per_minute, outage_timeout, startup_timeout)
        self.throttle = Throttle(max_concurrency, *limits, where=f"{self.base_url} (model {model!r})")
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleOracle(model={self.model!r}, base_url={self.base_url!r})"

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"} if self._api_key else {}
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._clients[loop] = httpx.AsyncClient(headers=headers, timeout=self.timeout, limits=limits)
        return self._clients[loop]

    def _body(self, request: OracleRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.prompt})
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            **self.extra_body,
        }
        if request.schema is not None and self.json_schema_supported:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema.__name__, "schema": request.schema.model_json_schema()},
            }
        return body

    def _to_response(self, request: OracleRequest, data: dict[str, Any], usage: Usage) -> OracleResponse:
        counts = data.get("usage") or {}
        usage.input_tokens += counts.get("prompt_tokens") or 0
        usage.output_tokens += counts.get("completion_tokens") or 0
        choices = data.get("choices") or []
        if not choices:
            return OracleResponse(usage=usage, error="empty")
        text = (choices[0].get("message") or {}).get("content")
        finish = choices[0].get("finish_reason")
        if finish == "content_filter":
            return OracleResponse(text=text, usage=usage, error="safety")
        if finish == "length":
            return OracleResponse(text=text, usage=usage, error="truncated")
        if request.schema is None:
            return OracleResponse(text=text, usage=usage)
        parsed = request.parse(text)
        return OracleResponse(text=text, parsed=parsed, usage=usage, error=None if parsed is not None else "malformed")

    def _raise_if_fatal(self, answer: httpx.Response) -> None:
        """A rejected key, a forbidden or unknown model: no retry and no other row can fix it."""
        if answer.status_code in (401, 403, 404):
            detail = answer.text[:200]
            if self._api_key is not None:
                detail = detail.replace(self._api_key.get_secret_value(), "***")
            raise OracleFatalError(
                f"{self.base_url} rejected the request for model {self.model!r}: HTTP {answer.status_code} {detail}"
            )

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        usage = Usage()
        retries = malformed = 0
        url = f"{self.base_url}/chat/completions"
        while True:
            usage.calls += 1
            body = self._body(request)
            data = None
            async with self.throttle.call(request) as outcome:  # pacing, adaptive concurrency, outage breaker
                try:
                    answer = await self._client().post(url, json=body)
                except httpx.TimeoutException:
                    outcome.failure = "timeout"
                except httpx.TransportError:
                    outcome.failure = "connection"
                else:
                    if answer.status_code == 200:
                        data = _json_or_none(answer)
                        # None: a proxy's error page or a cut body, worth another try
                        outcome.failure = None if data is not None else "bad_response"
                        outcome.input_tokens = ((data or {}).get("usage") or {}).get("prompt_tokens")
                    elif answer.status_code == 400 and "response_format" in body:
                        outcome.failure = "http_400"  # the API answered: not an outage
                    else:
                        self._raise_if_fatal(answer)
                        outcome.failure = f"http_{answer.status_code}"
                        outcome.retry_after = parse_retry_after(answer.headers.get("retry-after"))
            if data is not None:
                response = self._to_response(request, data, usage)
                if response.error != "malformed" or malformed >= self.malformed_retries:
                    return response
                malformed += 1
                continue
            if outcome.failure == "http_400" and "response_format" in body:
                logger.warning("%s rejected response_format; reading JSON from the answer text", self.base_url)
                self.json_schema_supported = False
                continue
            reason = outcome.failure
            if not is_transient_error(reason) or retries >= self.retry.max_retries:
                return OracleResponse(usage=usage, error=reason)
            delay = self.throttle.retry_delay(self.retry.delay(retries, outcome.retry_after))
            retries += 1
            logger.info(
                "%s from %s; retry %d/%d in %.1f s", reason, self.base_url, retries, self.retry.max_retries, delay
            )
            await asyncio.sleep(delay)


def _json_or_none(answer: httpx.Response) -> dict[str, Any] | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
