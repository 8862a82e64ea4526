"""`Oracle.astream(requests, should_stop)`: once the check says stop, nothing new is sent, what was in flight finishes
and is cached, and the requests not sent are not yielded; a later run pays only for those. Checked on the base
streaming path, the cache, Gemini online and Batch (against the local Gemini server) and the local oracle."""

from __future__ import annotations

import asyncio

from tests.oracles.test_cache import CountingOracle, requests_for
from tests.oracles.test_gemini import ask, batch_oracle, make_oracle, server  # noqa: F401 (the server fixture)
from tests.oracles.test_local import tiny_oracle
from trl_crome.oracles import CachedOracle, OracleRequest


class SlowOracle(CountingOracle):
    """Takes a little time per answer, as a real backend does (an instant one would answer everything at once)."""

    async def agenerate(self, request):
        await asyncio.sleep(0.01)
        return await super().agenerate(request)


def stream(oracle, requests, should_stop):
    async def consume():
        return [item async for item in oracle.astream(requests, should_stop)]

    return asyncio.run(consume())


def test_stop_sends_nothing_new_and_a_rerun_pays_only_for_the_rest(tmp_path):
    inner = SlowOracle()  # max_concurrency 4
    oracle = CachedOracle(inner, tmp_path)
    prompts = [f"p{i}" for i in range(20)]
    received = []

    def stop():
        return len(received) >= 3

    async def consume():
        async for index, response in oracle.astream(requests_for(*prompts), stop):
            received.append((index, response))

    asyncio.run(consume())
    sent = sum(inner.calls.values())
    # The check runs before each new request: 3 answers asked for a stop, at most the 3 others in flight finished.
    assert 3 <= sent <= 3 + (inner.max_concurrency - 1)
    assert len(received) == sent and len({index for index, _ in received}) == sent
    assert len(oracle.cache) == sent  # every answer that was paid for is stored

    rerun = CachedOracle(CountingOracle(), tmp_path)
    responses = rerun.generate(requests_for(*prompts), progress=False)
    assert sum(rerun.oracle.calls.values()) == 20 - sent
    assert [r.parsed["label"] for r in responses] == [p.upper() for p in prompts]


def test_cache_hits_are_served_even_when_stopped(tmp_path):
    CachedOracle(CountingOracle(), tmp_path).generate(requests_for("a", "b"), progress=False)
    inner = CountingOracle()
    items = stream(CachedOracle(inner, tmp_path), requests_for("a", "b", "c"), lambda: True)
    assert sorted(index for index, _ in items) == [0, 1] and all(r.from_cache for _, r in items)
    assert not inner.calls


def test_gemini_online_stop_reaches_the_server_zero_times(server):  # noqa: F811
    assert stream(make_oracle(server), ask("a", "b", "c"), lambda: True) == []
    assert server.requests["generateContent"] == 0
    assert len(stream(make_oracle(server), ask("a", "b"), lambda: False)) == 2
    assert server.requests["generateContent"] == 2


def test_gemini_batch_submits_no_new_job_once_stopped(server, tmp_path):  # noqa: F811
    server.batch_polls_until_done = 0
    assert stream(batch_oracle(server, tmp_path), ask("a", "b"), lambda: True) == []
    assert server.requests["batchGenerateContent"] == 0
    items = stream(batch_oracle(server, tmp_path), ask("a", "b"), lambda: False)
    assert sorted(index for index, _ in items) == [0, 1]
    assert server.requests["batchGenerateContent"] == 1


def test_local_oracle_checks_before_each_batch(tokenizer):
    oracle = tiny_oracle(tokenizer, batch_size=2)
    requests = [OracleRequest(prompt=f"Say {i}", max_output_tokens=2) for i in range(5)]
    received = []

    async def consume():
        async for item in oracle.astream(requests, lambda: len(received) >= 2):
            received.append(item)

    asyncio.run(consume())
    assert len(received) == 2  # the first batch of two, then the check stops the next ones
