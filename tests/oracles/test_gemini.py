"""GeminiOracle: the real google-genai client against a real local Gemini REST server with injected faults."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from pydantic import BaseModel

from tests.servers.common import Call
from tests.servers.gemini import GeminiServer
from trl_crome.oracles import CachedOracle, GeminiOracle, OracleFatalError, OracleRequest, Usage

FAKE_KEY = "AIzaFAKE-LEAK-CHECK-0123456789"


class Verdict(BaseModel):
    label: str
    score: int


def verdict_responder(call: Call) -> str:
    return json.dumps({"label": call.prompt.upper(), "score": len(call.prompt.split())})


@pytest.fixture
def server():
    with GeminiServer(responder=verdict_responder) as running:
        yield running


def make_oracle(server: GeminiServer, **kwargs) -> GeminiOracle:
    kwargs = {"timeout": 2.0, "backoff_base": 0.01, "max_retries": 3, **kwargs}
    return GeminiOracle(api_key=FAKE_KEY, http_options={"base_url": server.url}, **kwargs)


def ask(*prompts: str, system: str | None = None) -> list[OracleRequest]:
    return [OracleRequest(prompt=p, template="t@1", system=system, schema=Verdict) for p in prompts]


def test_structured_answers_in_order_with_token_usage(server):
    server.thoughts_tokens = 3
    oracle = make_oracle(server, max_concurrency=4)
    prompts = [f"prompt number {i}" for i in range(10)]
    responses = oracle.generate(ask(*prompts, system="be brief"), progress=False)
    assert [r.parsed for r in responses] == [{"label": p.upper(), "score": 3} for p in prompts]
    assert all(r.ok for r in responses)
    # 3 prompt words + 2 system words in; the answer's words plus 3 thoughts tokens out (billed as output).
    assert responses[0].usage == Usage(input_tokens=5, output_tokens=len(responses[0].text.split()) + 3, calls=1)
    assert server.requests["generateContent"] == 10
    assert server.headers["x-goog-api-key"] == FAKE_KEY  # the key is sent, in a header
    assert oracle.summary()["input_tokens"] == 50


def test_429_retry_after_is_honoured(server):
    server.add_fault("429", retry_after=0.6)
    oracle = make_oracle(server)
    start = time.perf_counter()
    (response,) = oracle.generate(ask("hello"), progress=False)
    assert time.perf_counter() - start >= 0.6
    assert response.ok and response.usage.calls == 2
    assert server.requests["generateContent"] == 2 and server.prompts["hello"] == 2


def test_5xx_are_retried_with_backoff_until_success_or_exhaustion(server):
    server.add_fault("500", match="flaky")
    server.add_fault("503", match="flaky")
    server.add_fault("503", match="down", times=10)
    oracle = make_oracle(server, max_retries=2)
    flaky, down = oracle.generate(ask("flaky", "down"), progress=False)
    assert flaky.ok and flaky.usage.calls == 3
    assert down.error == "http_503" and down.transient and down.usage.calls == 3
    assert server.prompts == {"flaky": 3, "down": 3}


def test_timeouts_are_retried(server):
    server.add_fault("timeout", match="slow", delay=1.5)
    oracle = make_oracle(server, timeout=0.5)
    (response,) = oracle.generate(ask("slow"), progress=False)
    assert response.ok and response.usage.calls == 2
    server.add_fault("timeout", match="slow", delay=1.5)
    (response,) = make_oracle(server, timeout=0.5, max_retries=0).generate(ask("slow"), progress=False)
    assert response.error == "timeout" and response.transient


def test_malformed_json_is_asked_again_then_reported(server):
    server.add_fault("malformed", match="once")
    server.add_fault("malformed", match="always", times=2)
    oracle = make_oracle(server, malformed_retries=1)
    once, always = oracle.generate(ask("once", "always"), progress=False)
    assert once.ok and once.usage.calls == 2
    assert always.error == "malformed" and always.parsed is None and not always.transient
    assert always.text.endswith("<not json") and always.usage.calls == 2


def test_safety_blocks_truncation_and_client_errors(server):
    server.add_fault("safety", match="unsafe answer")
    server.add_fault("prompt_blocked", match="unsafe prompt")
    server.add_fault("max_tokens", match="long")
    server.add_fault("http_400", match="invalid")
    responses = make_oracle(server).generate(ask("unsafe answer", "unsafe prompt", "long", "invalid"), progress=False)
    assert [r.error for r in responses] == ["safety", "safety", "truncated", "http_400"]
    assert responses[2].text == verdict_responder(Call("long"))[: len(verdict_responder(Call("long"))) // 2]
    assert responses[1].usage.input_tokens == 2 and responses[1].usage.output_tokens == 0
    assert [r.usage.calls for r in responses] == [1, 1, 1, 1]  # deterministic failures are not retried
    assert not any(r.transient for r in responses)


def test_cache_resume_pays_only_for_transient_failures(server, tmp_path):
    server.add_fault("503", match="busy", times=10)
    server.add_fault("safety", match="unsafe")
    first = CachedOracle(make_oracle(server, max_retries=1), tmp_path)
    assert [r.error for r in first.generate(ask("fine", "busy", "unsafe"), progress=False)] == [
        None,
        "http_503",
        "safety",
    ]
    server.faults.clear()
    calls_before = server.requests["generateContent"]
    resumed = CachedOracle(make_oracle(server), tmp_path)
    responses = resumed.generate(ask("fine", "busy", "unsafe"), progress=False)
    assert [r.error for r in responses] == [None, None, "safety"]
    assert server.requests["generateContent"] - calls_before == 1  # only "busy" is asked again
    assert resumed.summary()["cache_hits"] == 2


def test_fatal_errors_raise_and_the_key_never_leaks(server, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, google-genai's and httpx's included
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    server.add_fault("429", retry_after=0.01)
    server.add_fault("malformed", match="bad")
    oracle = GeminiOracle(http_options={"base_url": server.url}, backoff_base=0.01, state_dir=tmp_path / "state")
    cached = CachedOracle(oracle, tmp_path / "cache")
    cached.generate(ask("ok", "bad"), progress=False)
    server.add_fault("http_403")
    with pytest.raises(OracleFatalError) as raised:
        oracle.generate(ask("forbidden"), progress=False)
    batch = GeminiOracle(
        http_options={"base_url": server.url}, batch=True, state_dir=tmp_path / "state", poll_interval=0.01
    )
    CachedOracle(batch, tmp_path / "cache").generate(ask("in a batch"), progress=False)

    assert server.headers["x-goog-api-key"] == FAKE_KEY
    texts = [
        caplog.text,
        str(raised.value),
        repr(raised.value),
        repr(oracle),
        repr(cached),
        repr(batch),
        str(vars(oracle)),
    ]
    # Every file written, the cache database and its write-ahead log included.
    texts += [path.read_bytes().decode(errors="ignore") for path in tmp_path.rglob("*") if path.is_file()]
    assert "403" in str(raised.value)
    assert len(texts) > 8 and not any(FAKE_KEY in text for text in texts)


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        GeminiOracle()


def test_prices_and_batch_discount():
    oracle = GeminiOracle(api_key=FAKE_KEY)
    assert oracle.cost(Usage(1_000_000, 1_000_000, 1)) == pytest.approx(0.30 + 2.50)
    batch = GeminiOracle(model="gemini-2.0-flash", api_key=FAKE_KEY, batch=True)
    assert batch.cost(Usage(2_000_000, 1_000_000, 1)) == pytest.approx((2 * 0.10 + 0.40) / 2)
    custom = GeminiOracle(model="gemini-9-flash", api_key=FAKE_KEY, prices=(1.0, 4.0))
    assert custom.cost(Usage(500_000, 250_000, 1)) == pytest.approx(0.5 + 1.0)


# -- Batch API ---------------------------------------------------------------------------------------------------
def batch_oracle(server: GeminiServer, tmp_path, **kwargs) -> GeminiOracle:
    return make_oracle(server, batch=True, state_dir=tmp_path / "state", poll_interval=0.02, **kwargs)


def test_batch_submit_poll_collect_with_row_errors(server, tmp_path):
    server.batch_polls_until_done = 3
    server.add_fault("safety", match="unsafe")
    server.add_fault("500", match="broken")
    server.add_fault("malformed", match="garbled")
    oracle = batch_oracle(server, tmp_path, batch_size=3)
    prompts = ["a", "unsafe", "b c", "broken", "garbled", "d"]
    responses = oracle.generate(ask(*prompts), progress=False)
    # The row that failed with a 500 went again, alone, in a third job; the final failures did not.
    assert [r.error for r in responses] == [None, "safety", None, None, "malformed", None]
    assert responses[2].parsed == {"label": "B C", "score": 2}
    assert responses[1].transient is False
    assert [r.usage.calls for r in responses] == [1, 1, 1, 2, 1, 1]
    assert server.requests["batchGenerateContent"] == 3  # two jobs of 3 rows, then one of the unanswered row
    assert server.prompts == {"a": 1, "unsafe": 1, "b c": 1, "broken": 2, "garbled": 1, "d": 1}
    assert server.requests["batches.get"] == 3 * 3
    assert not list((tmp_path / "state").glob("*.json"))  # finished jobs leave no state behind
    assert oracle.cost(oracle.stats.usage) == pytest.approx(
        (oracle.stats.usage.input_tokens * 0.30 + oracle.stats.usage.output_tokens * 2.50) / 2 / 1e6
    )


def test_interrupted_batch_resumes_polling_without_a_second_submit(server, tmp_path):
    server.batch_polls_until_done = 10**6  # the job never finishes while the first run polls
    requests = ask("first", "second")

    async def interrupted_run():
        oracle = CachedOracle(batch_oracle(server, tmp_path), tmp_path / "cache")
        await asyncio.wait_for(oracle.agenerate_many(requests, progress=False), timeout=0.5)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(interrupted_run())
    assert server.requests["batchGenerateContent"] == 1
    assert len(list((tmp_path / "state").glob("*.json"))) == 1

    server.batch_polls_until_done = 0  # the job is done by the time the run is resumed
    resumed = CachedOracle(batch_oracle(server, tmp_path), tmp_path / "cache")
    responses = resumed.generate(requests, progress=False)
    assert [r.parsed["label"] for r in responses] == ["FIRST", "SECOND"]
    assert server.requests["batchGenerateContent"] == 1  # polled the same job: no second submit, no second bill
    assert server.prompts == {"first": 1, "second": 1}
    # And once cached, a third run calls nothing at all.
    gets = server.requests["batches.get"]
    CachedOracle(batch_oracle(server, tmp_path), tmp_path / "cache").generate(requests, progress=False)
    assert server.requests["batches.get"] == gets and server.requests["batchGenerateContent"] == 1


def test_failed_batch_job_gives_transient_row_errors_and_is_resubmitted(server, tmp_path):
    server.batch_final_state = "BATCH_STATE_FAILED"
    oracle = batch_oracle(server, tmp_path, batch_resubmits=1)
    responses = oracle.generate(ask("x", "y"), progress=False)
    assert [r.error for r in responses] == ["batch_failed", "batch_failed"] and responses[0].transient
    assert [r.usage.calls for r in responses] == [2, 2]  # the job, then its one resubmission
    assert server.requests["batchGenerateContent"] == 2
    assert not list((tmp_path / "state").glob("*.json"))
    server.batch_final_state = "BATCH_STATE_SUCCEEDED"
    assert all(r.ok for r in oracle.generate(ask("x", "y"), progress=False))  # the next run asks again
    assert server.requests["batchGenerateContent"] == 3
