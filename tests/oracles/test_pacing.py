"""Quota pacing, adaptive concurrency and the outage breaker (`trl_crome/oracles/pacing.py`), alone and through both
online backends against local servers that enforce a quota (429 past it, counted at the server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.servers.gemini import GeminiServer
from tests.servers.openai import OpenAIServer
from trl_crome.oracles import GeminiOracle, OpenAICompatibleOracle, OracleFatalError, OracleRequest
from trl_crome.oracles.pacing import OutageBreaker, Throttle

REQUEST = OracleRequest(prompt="x" * 400)  # 100 estimated tokens


def make(backend: str, server, **kwargs):
    kwargs = {"timeout": 5.0, "backoff_base": 0.05, "max_retries": 8, **kwargs}
    if backend == "gemini":
        return GeminiOracle(api_key="k", http_options={"base_url": server.url}, **kwargs)
    return OpenAICompatibleOracle(model="m", base_url=server.url + "/v1", **kwargs)


SERVERS = {"gemini": GeminiServer, "openai": OpenAIServer}


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_a_run_paced_to_the_quota_stays_within_it(backend):
    # The quota: 10 calls in any second (600 per minute). The client, which could send 160 calls per second, is paced
    # to 95% of it (570 per minute), as the docs advise: a call on the window's very edge would meet a 429.
    with SERVERS[backend](latency=0.05) as server:
        server.quota = (10, 1.0)
        oracle = make(backend, server, max_concurrency=8, requests_per_minute=570)
        started = time.perf_counter()
        responses = oracle.generate([OracleRequest(prompt=f"q{i}") for i in range(40)], progress=False)
        elapsed = time.perf_counter() - started
    assert all(r.ok for r in responses)
    # Counted at the server, 429s included: never more than the quota in any second, + a slack of 1 for the
    # network (two calls sent 0.105 s apart may arrive closer).
    assert server.max_in_window(1.0) <= 10 + 1
    rejected = len(server.arrivals) - 40
    assert rejected <= 1 and oracle.throttle.rate_limited == rejected
    assert 39 * 60 / 570 - 0.1 <= elapsed < 39 * 60 / 570 * 2  # paced, and not stalled


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_without_a_quota_setting_429s_halve_the_concurrency_and_the_run_completes(backend):
    with SERVERS[backend](latency=0.05) as server:
        server.quota = (10, 1.0)
        oracle = make(backend, server, max_concurrency=16)
        responses = oracle.generate([OracleRequest(prompt=f"q{i}") for i in range(40)], progress=False)
    assert all(r.ok for r in responses)
    assert oracle.throttle.rate_limited == len(server.arrivals) - 40 > 0
    assert oracle.throttle.limit < 16  # it backed off, and with Retry-After honoured it never hammered
    assert len(server.arrivals) < 40 * 2


def test_token_pacing_spends_at_most_the_tokens_per_minute():
    throttle = Throttle(max_concurrency=8, tokens_per_minute=60_000)  # 1,000 tokens per second: 10 requests

    async def run() -> list[float]:
        starts = []

        async def one():
            async with throttle.call(REQUEST) as outcome:
                starts.append(time.monotonic())
                outcome.input_tokens = 100

        await asyncio.gather(*(one() for _ in range(25)))
        return starts

    starts = asyncio.run(run())
    assert 2.4 - 0.1 <= max(starts) - min(starts) < 2.4 * 1.5  # 2,500 tokens at 1,000 per second after the first
    # The server's count corrects the estimate: 200 real tokens instead of 100 push the next call further.
    throttle = Throttle(max_concurrency=1, tokens_per_minute=60_000)

    async def corrected() -> float:
        async with throttle.call(REQUEST) as outcome:
            outcome.input_tokens = 300
        started = time.monotonic()
        async with throttle.call(REQUEST):
            pass
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(corrected()) < 0.6  # waited for 300 tokens, not the estimated 100


def test_concurrency_halves_on_429_at_most_once_per_cooldown_and_recovers():
    throttle = Throttle(max_concurrency=16, cooldown=0.05)

    async def calls(failure: str | None, count: int) -> None:
        async def one():
            async with throttle.call(REQUEST) as outcome:
                await asyncio.sleep(0.001)
                outcome.failure = failure

        await asyncio.gather(*(one() for _ in range(count)))  # at most `limit` of them in flight at once

    asyncio.run(calls("http_429", 5))  # five calls in flight together meet a 429: one halving, not five
    assert throttle.limit == 8 and throttle.rate_limited == 5
    time.sleep(0.06)
    asyncio.run(calls("http_429", 1))
    assert throttle.limit == 4
    asyncio.run(calls(None, 4 + 5 + 6 + 7))  # +1 per round of `limit` successes
    assert throttle.limit == pytest.approx(8, abs=0.3)
    asyncio.run(calls(None, 200))
    assert throttle.limit == 16  # never above max_concurrency


@pytest.mark.parametrize(("retry_after", "pause"), [(0.3, 0.3), (0.0, 0.0), (None, 0.5)])
def test_a_429_pauses_every_new_call_for_retry_after(retry_after, pause):
    throttle = Throttle(max_concurrency=4, cooldown=0.5)  # without Retry-After: the cooldown; "Retry-After: 0": none

    async def run() -> float:
        async with throttle.call(REQUEST) as outcome:
            outcome.failure, outcome.retry_after = "http_429", retry_after
        started = time.monotonic()
        async with throttle.call(REQUEST):
            pass
        return time.monotonic() - started

    assert pause - 0.01 <= asyncio.run(run()) < pause + 0.25


def test_the_outage_breaker_trips_on_long_streaks_of_transient_failures_only():
    breaker = OutageBreaker(outage_timeout=0.2, startup_timeout=0.1, min_failures=3)
    breaker.record("connection", "X")
    breaker.record("connection", "X")
    time.sleep(0.11)
    with pytest.raises(OracleFatalError, match=r"X looks unreachable: 3 calls in a row .* no call has succeeded"):
        breaker.record("timeout", "X")

    breaker = OutageBreaker(outage_timeout=0.2, startup_timeout=0.1, min_failures=3)
    breaker.record(None, "X")  # once something succeeded, the longer patience applies
    for _ in range(5):
        breaker.record("http_503", "X")
    time.sleep(0.12)
    breaker.record("http_503", "X")  # 0.12 s < 0.2 s: still patient
    breaker.record("safety", "X")  # the API answered (a deterministic failure): the streak ends
    assert breaker.streak == 0
    for reason in ("http_429", "connection", "http_500"):
        breaker.record(reason, "X")
    time.sleep(0.21)
    with pytest.raises(OracleFatalError, match=r"4 calls in a row .*http_429 x1.*since the last successful call"):
        breaker.record("connection", "X")
