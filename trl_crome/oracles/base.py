"""The one small interface every LLM backend implements, and the request / response / usage types it speaks.

An oracle knows nothing of Crome: it turns rendered prompts into text (or JSON validated against a schema) and
reports the tokens it spent. Caching, resuming and cost accounting are built on top of this interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel


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
        schema = self.schema.model_json_schema() if self.schema is not None else None
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


@dataclass
class Usage:
    """Tokens and calls spent; adds up with `+`."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.calls + other.calls,
        )


@dataclass
class OracleResponse:
    """What an oracle returned for one request.

    `error` is `None` on success, otherwise a short machine-readable reason (`"safety"`, `"malformed"`,
    `"truncated"`, `"http_<status>"`, `"timeout"`, ...) used to count rejects per reason.
    """

    text: str | None = None
    parsed: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OracleResponse:
        return cls(text=data["text"], parsed=data["parsed"], usage=Usage(**data["usage"]), error=data["error"])


class Oracle(ABC):
    """Base class of every LLM backend.

    Subclasses implement [`~Oracle.agenerate`] for a single request. [`~Oracle.generate`] runs many requests with at
    most `max_concurrency` in flight and returns the responses in request order.

    Class attributes:
        input_price_per_million / output_price_per_million (`float`):
            USD per million tokens, for cost estimates (0 for local models).
    """

    input_price_per_million: float = 0.0
    output_price_per_million: float = 0.0

    def __init__(self, model: str, max_concurrency: int = 8):
        self.model = model
        self.max_concurrency = max_concurrency

    @abstractmethod
    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        """Answer one request. Must not raise for per-request failures: return a response with `error` set."""

    async def agenerate_many(self, requests: Sequence[OracleRequest]) -> list[OracleResponse]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(request: OracleRequest) -> OracleResponse:
            async with semaphore:
                return await self.agenerate(request)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def generate(self, requests: Sequence[OracleRequest]) -> list[OracleResponse]:
        """Synchronous entry point: answers `requests` in order."""
        return asyncio.run(self.agenerate_many(requests))

    def cost(self, usage: Usage) -> float:
        """Estimated USD for `usage` at this oracle's prices."""
        return (
            usage.input_tokens * self.input_price_per_million + usage.output_tokens * self.output_price_per_million
        ) / 1e6
