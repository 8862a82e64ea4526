"""An on-disk cache of oracle answers that makes augmentation runs resumable.

One JSON file per answer, named by [`OracleRequest.cache_key`] and sharded by its first two hex digits. Each file
is written to a unique temporary name in the same folder and then renamed over its final name (`os.replace`, atomic
on POSIX and Windows), so several processes and threads can share a cache and a `kill -9` at any moment leaves
either the whole entry or none of it. Leftover temporary files are never read.

Only final answers are stored: successes and deterministic per-row failures (safety blocks, malformed or truncated
output after retries). Transient failures (timeouts, rate limits, 5xx) are not, so a resumed run retries them. The
API key is neither part of a key nor of a stored entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from .base import Oracle, OracleRequest, OracleResponse, StopCheck, Usage

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"


class OracleCache:
    """A folder of cached [`OracleResponse`]s, safe to share between processes.

    Args:
        cache_dir (`str` or `os.PathLike`):
            The folder; created when missing.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"OracleCache({str(self.cache_dir)!r})"

    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> OracleResponse | None:
        """The cached response for `key`, or `None` (also for an unreadable entry, which is then recomputed)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] != key or entry["version"] != CACHE_FORMAT_VERSION:
                return None
            return OracleResponse.from_dict(entry["response"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            # Only outside damage gets here (entries are renamed into place whole): treat it as a miss.
            logger.warning("Ignoring unreadable oracle cache entry %s (%s)", path, type(error).__name__)
            return None

    def put(self, key: str, response: OracleResponse, **metadata: Any) -> None:
        """Stores `response` under `key` atomically; `metadata` (model, template) is kept for inspection only."""
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        stored = OracleResponse(text=response.text, parsed=response.parsed, usage=response.usage, error=response.error)
        entry = {"version": CACHE_FORMAT_VERSION, "key": key, **metadata, "response": stored.to_dict()}
        temp = path.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            with open(temp, "w", encoding="utf-8") as file:
                json.dump(entry, file)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self.cache_dir.glob("??/*.json"))


class CachedOracle(Oracle):
    """Wraps any [`Oracle`] with an [`OracleCache`]: answered requests are never paid for twice.

    A cache hit returns the stored response with zero `usage` and the original call's usage in `cached_usage`.
    Misses go to the wrapped oracle (identical requests only once) and each final answer is stored the moment it
    arrives, so an interrupted run resumes where it stopped. `stats` / `summary()` count calls, cache hits, tokens
    and cost.

    Args:
        oracle ([`Oracle`]):
            The backend that answers cache misses.
        cache_dir (`str` or `os.PathLike`):
            The cache folder; one folder may serve several models (the model is part of each key).
    """

    def __init__(self, oracle: Oracle, cache_dir: str | os.PathLike):
        super().__init__(model=oracle.model, max_concurrency=oracle.max_concurrency)
        self.oracle = oracle
        self.cache = OracleCache(cache_dir)

    def __repr__(self) -> str:
        return f"CachedOracle({self.oracle!r}, cache_dir={str(self.cache.cache_dir)!r})"

    def cost(self, usage: Usage) -> float:
        return self.oracle.cost(usage)

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        async for _, response in self.astream([request]):
            return response
        raise AssertionError("unreachable: one request gives one response")

    def _store(self, request: OracleRequest, key: str, response: OracleResponse) -> None:
        if not response.transient:
            self.cache.put(key, response, model=self.model, template=request.template)

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        # Cache hits cost nothing and are always served; `should_stop` only holds back the misses not yet sent.
        misses: dict[str, list[int]] = {}  # key -> the indices asking for it
        for index, request in enumerate(requests):
            key = request.cache_key(self.model)
            if key in misses:
                misses[key].append(index)
                continue
            cached = self.cache.get(key)
            if cached is None:
                misses[key] = [index]
            else:
                yield index, _as_hit(cached)
        keys = list(misses)
        unique = [requests[misses[key][0]] for key in keys]
        async for position, response in self.oracle.astream(unique, should_stop):
            key = keys[position]
            first, *duplicates = misses[key]
            # Stored before it is handed on, in a thread: creating a file is slow next to an HTTP answer, and the
            # event loop must keep the other requests moving meanwhile.
            await asyncio.to_thread(self._store, requests[first], key, response)
            yield first, response
            for index in duplicates:  # the same request again in this batch: served like a cache hit
                yield index, _as_hit(response)


def _as_hit(response: OracleResponse) -> OracleResponse:
    return OracleResponse(
        text=response.text, parsed=response.parsed, usage=Usage(), error=response.error, cached_usage=response.usage
    )
