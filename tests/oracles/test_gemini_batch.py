"""The Gemini Batch API at scale, against the local Gemini server's batch and file endpoints (counted at the server):
jobs in flight, file jobs, partial and expired jobs, and resuming after a kill at any point without a second
submission of an accepted job."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter

import pytest
from google import genai
from google.genai import types
from pydantic import BaseModel

from tests.servers.common import Call
from tests.servers.gemini import GeminiServer
from trl_crome.oracles import CachedOracle, GeminiOracle, OracleFatalError, OracleRequest, gemini_batch
from trl_crome.oracles.cache import OracleCache

FAKE_KEY = "AIzaFAKE-batch-test-0123456789"


class Verdict(BaseModel):
    label: str


def verdict_responder(call: Call) -> str:
    return json.dumps({"label": call.prompt.upper()})


@pytest.fixture
def server():
    with GeminiServer(responder=verdict_responder) as running:
        yield running


def batch_oracle(url: str, state_dir, **kwargs) -> GeminiOracle:
    kwargs = {"timeout": 5.0, "backoff_base": 0.01, "max_retries": 3, "poll_interval": 0.02, **kwargs}
    return GeminiOracle(api_key=FAKE_KEY, http_options={"base_url": url}, batch=True, state_dir=state_dir, **kwargs)


def ask(*prompts: str) -> list[OracleRequest]:
    return [OracleRequest(prompt=p, template="t@1", schema=Verdict) for p in prompts]


def labels(responses) -> list[str | None]:
    return [r.parsed["label"] if r.parsed else r.error for r in responses]


def test_at_most_batch_max_jobs_in_flight_the_rest_queued(server, tmp_path):
    server.batch_polls_until_done = 3
    prompts = [f"q{i}" for i in range(24)]
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=2, batch_max_jobs=3)
    responses = oracle.generate(ask(*prompts), progress=False)
    assert labels(responses) == [p.upper() for p in prompts]
    assert server.requests["batchGenerateContent"] == 12 and server.peak_active_batches == 3
    assert server.prompts == Counter(dict.fromkeys(prompts, 1))


def test_jobs_are_submitted_a_few_at_a_time(server, tmp_path):
    # Each create call takes 0.2 s at the server: eight jobs allowed in flight are still sent two at a time, so that
    # large uploads in parallel do not each run past the HTTP timeout.
    server.batch_create_delay = 0.2
    prompts = [f"q{i}" for i in range(8)]
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=1, batch_max_jobs=8)
    assert labels(oracle.generate(ask(*prompts), progress=False)) == [p.upper() for p in prompts]
    assert server.requests["batchGenerateContent"] == 8
    assert server.peak_concurrent_creates == gemini_batch.SUBMITS_AT_ONCE == 2


def test_a_server_refusing_new_jobs_lowers_the_jobs_in_flight(server, tmp_path):
    server.batch_max_active = 2  # the account's limit is below ours: creates past it answer 429
    prompts = [f"q{i}" for i in range(10)]
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=2, batch_max_jobs=5)
    responses = oracle.generate(ask(*prompts), progress=False)
    assert labels(responses) == [p.upper() for p in prompts]
    assert server.peak_active_batches == 2
    accepted = len(server.batches)
    assert accepted == 5 and server.requests["batchGenerateContent"] - accepted <= 5  # a refusal or so per slot
    assert all(r.usage.calls == 1 for r in responses)


def test_enqueued_token_budget_limits_the_jobs_in_flight(server, tmp_path):
    prompts = [f"{'word ' * 40}{i}" for i in range(8)]  # ~50 estimated tokens each, 100 per job of 2
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=2, batch_max_enqueued_tokens=250)
    assert labels(oracle.generate(ask(*prompts), progress=False)) == [p.upper() for p in prompts]
    assert server.peak_active_batches == 2 and len(server.batches) == 4


def test_large_jobs_go_as_a_jsonl_file_and_come_back_as_one(server, tmp_path):
    server.inline_limit_bytes = 1_500  # an inline job this size would be refused with 400
    server.add_fault("safety", match="unsafe")
    server.add_fault("503", match="busy")
    prompts = ["alpha " * 30, "unsafe " * 30, "busy " * 30, "beta"]
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=4, batch_inline_max_bytes=1_000)
    responses = oracle.generate(ask(*prompts), progress=False)
    assert labels(responses) == [prompts[0].upper(), "safety", prompts[2].upper(), "BETA"]
    # Two file jobs: all four rows, then the one that failed with a 503 (too small for a file: inline).
    assert server.requests["files.upload"] == 1 and server.requests["files.download"] == 1
    assert server.requests["batchGenerateContent"] == 2 and server.prompts[prompts[2]] == 2
    assert not server.files  # the input and result files are deleted once the answers are handed on
    assert not list((tmp_path / "state").iterdir())
    tokens = responses[0].usage.input_tokens
    assert tokens == 30 and responses[0].usage.calls == 1  # usage read from the result file


def test_expired_and_partial_jobs_resubmit_only_their_unanswered_requests(server, tmp_path):
    server.batch_outcomes = ["BATCH_STATE_EXPIRED"]  # the first job expires without output
    server.batch_drop_rows = 1  # the next job that succeeds leaves its first row out
    server.add_fault("429", match="q5")  # and a row fails with a transient error once
    prompts = [f"q{i}" for i in range(6)]
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=3, batch_max_jobs=1)
    responses = oracle.generate(ask(*prompts), progress=False)
    assert labels(responses) == [p.upper() for p in prompts]
    # Job 1 (q0-q2) expired: all three again, in job 2, which left q0 out: q0 alone in job 3. Then job 4 (q3-q5),
    # where q5 failed with a 429: q5 alone in job 5. Nothing answered was asked again.
    assert server.prompts == Counter({"q0": 3, "q1": 2, "q2": 2, "q3": 1, "q4": 1, "q5": 2})
    assert [r.usage.calls for r in responses] == [3, 2, 2, 1, 1, 2]
    assert server.requests["batchGenerateContent"] == 5


def test_resubmissions_are_bounded_and_end_as_transient_failures(server, tmp_path):
    server.batch_drop_rows = 10**6  # the server never answers any row
    oracle = CachedOracle(batch_oracle(server.url, tmp_path / "state", batch_resubmits=2), tmp_path / "cache")
    responses = oracle.generate(ask("x", "y"), progress=False)
    assert [r.error for r in responses] == ["batch_failed", "batch_failed"]
    assert server.requests["batchGenerateContent"] == 3 and len(OracleCache(tmp_path / "cache")) == 0


def test_a_lost_create_answer_finds_the_accepted_job_instead_of_submitting_again(server, tmp_path):
    server.batch_create_delay = 1.0  # the job is registered, then the answer comes after the client's timeout
    oracle = batch_oracle(server.url, tmp_path / "state", timeout=0.5)
    responses = oracle.generate(ask("a", "b"), progress=False)
    assert labels(responses) == ["A", "B"]
    assert server.requests["batchGenerateContent"] == 1 and server.requests["batches.list"] >= 1


def test_the_lookup_of_a_lost_job_lists_the_account_in_small_pages(server, tmp_path):
    """A listing carries every finished job with its answers: it is read `LIST_PAGE_SIZE` jobs at a time."""
    earlier = [f"e{i}" for i in range(gemini_batch.LIST_PAGE_SIZE + 2)]
    earlier_run = batch_oracle(server.url, tmp_path / "earlier", batch_size=1, batch_max_jobs=4)
    earlier_run.generate(ask(*earlier), progress=False)
    server.batch_create_delay = 1.0
    responses = batch_oracle(server.url, tmp_path / "state", timeout=0.5).generate(ask("a", "b"), progress=False)
    assert labels(responses) == ["A", "B"]
    assert server.requests["batchGenerateContent"] == len(earlier) + 1
    assert server.requests["batches.list"] >= 2  # 13 jobs: two pages, where one page of 100 held them all


def test_a_batch_api_refusing_every_job_stops_the_run(server, tmp_path):
    server.batch_max_active = 0  # every create answers 429, and none of this run's jobs is in flight
    oracle = batch_oracle(server.url, tmp_path / "state", max_retries=2)
    with pytest.raises(OracleFatalError, match="refused every new job 3 times"):
        oracle.generate(ask("a"), progress=False)
    assert server.requests["batchGenerateContent"] == 3 and not server.batches


# -- killed at any point ------------------------------------------------------------------------------------------
def _batch_child(url: str, tmp: str, prompts: list[str]) -> None:
    """One run of the batch pipeline in its own process, killed from outside with SIGKILL."""
    oracle = batch_oracle(url, os.path.join(tmp, "state"), batch_size=3, batch_max_jobs=2, poll_interval=0.05)
    CachedOracle(oracle, os.path.join(tmp, "cache")).generate(ask(*prompts), progress=False)


def _kill_when(process, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.is_alive(), "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)


@pytest.mark.slow
def test_killed_at_any_point_no_accepted_job_is_submitted_twice(server, tmp_path):
    server.batch_polls_until_done = 4
    server.batch_create_delay = 0.5  # a wide window between the server accepting a job and the client hearing of it
    prompts = [f"q{i}" for i in range(12)]  # 4 jobs of 3, 2 in flight
    context = multiprocessing.get_context("spawn")
    stored = OracleCache(tmp_path / "cache")
    kill_points = [
        lambda: server.requests["batchGenerateContent"] >= 1,  # inside the first create call: accepted, unanswered
        lambda: server.requests["batches.get"] >= 3,  # while polling
        lambda: len(stored) >= 1,  # while the first job's answers are being stored
        lambda: server.requests["batchGenerateContent"] >= 3,  # inside a later create call
    ]
    for condition in kill_points:
        process = context.Process(target=_batch_child, args=(server.url, str(tmp_path), prompts))
        process.start()
        _kill_when(process, condition)

    creates = server.requests["batchGenerateContent"]
    oracle = CachedOracle(batch_oracle(server.url, tmp_path / "state", batch_size=3), tmp_path / "cache")
    responses = oracle.generate(ask(*prompts), progress=False)
    assert labels(responses) == [p.upper() for p in prompts]
    assert server.prompts == Counter(dict.fromkeys(prompts, 1))  # every request was in exactly one accepted job
    assert len(server.batches) == server.requests["batchGenerateContent"] == 4 >= creates
    assert server.requests["batches.list"] >= 1  # the jobs accepted during a kill were found by their display name
    assert not list((tmp_path / "state").iterdir())


@pytest.mark.slow
def test_a_job_accepted_during_the_kill_is_adopted_without_waiting_for_the_http_timeout(server, tmp_path, caplog):
    server.batch_create_delay = 2.0  # the server has registered the job; its answer is still on the way at the kill
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_batch_child, args=(server.url, str(tmp_path), ["a"]))
    process.start()
    _kill_when(process, lambda: server.requests["batchGenerateContent"] >= 1)
    server.batch_create_delay = 0.0
    oracle = CachedOracle(batch_oracle(server.url, tmp_path / "state", timeout=600.0), tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="trl_crome.oracles.gemini_batch"):
        assert labels(oracle.generate(ask("a"), progress=False)) == ["A"]
    assert server.requests["batchGenerateContent"] == 1  # found by its display name, not submitted again
    assert "accepted before the last run was stopped" in caplog.text and "to settle" not in caplog.text


def test_an_interrupted_run_resumes_from_its_state_in_process(server, tmp_path):
    server.batch_polls_until_done = 10**6

    async def interrupted():
        oracle = CachedOracle(batch_oracle(server.url, tmp_path / "state", batch_size=1), tmp_path / "cache")
        await asyncio.wait_for(oracle.agenerate_many(ask("a", "b", "c"), progress=False), timeout=2.0)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(interrupted())
    states = [json.loads(p.read_text()) for p in (tmp_path / "state").glob("*.json")]
    # Each job is recorded (by its display name; with its server name once the create call has returned).
    assert len(states) == 3 and all(s["display_name"].startswith("trl-crome-") for s in states)
    server.batch_polls_until_done = 0
    responses = CachedOracle(batch_oracle(server.url, tmp_path / "state"), tmp_path / "cache").generate(
        ask("c", "b", "a", "d"), progress=False
    )
    assert labels(responses) == ["C", "B", "A", "D"]
    assert server.requests["batchGenerateContent"] == 4 and server.prompts == Counter(dict.fromkeys("abcd", 1))


def test_a_stop_submits_no_new_job_but_collects_the_accepted_ones(server, tmp_path):
    server.batch_polls_until_done = 10**6

    async def interrupted():  # leaves two accepted jobs of an earlier run, stopped once both are recorded
        oracle = batch_oracle(server.url, tmp_path / "state", batch_size=2)
        run = asyncio.create_task(oracle.agenerate_many(ask("a", "b", "c", "d"), progress=False))
        while sum(bool(json.loads(p.read_text())["name"]) for p in (tmp_path / "state").glob("*.json")) < 2:
            await asyncio.sleep(0.01)
        run.cancel()

    asyncio.run(interrupted())
    assert server.requests["batchGenerateContent"] == 2
    server.batch_polls_until_done = 0

    async def stopped() -> dict[int, str]:
        oracle = batch_oracle(server.url, tmp_path / "state", batch_size=2, batch_max_jobs=1)
        answers = {}
        async for index, response in oracle.astream(ask("a", "b", "c", "d", "e", "f"), should_stop=lambda: True):
            answers[index] = response.parsed["label"]
        return answers

    # The two accepted jobs are collected (they are paid for); the new one (e, f) is never submitted nor yielded.
    assert asyncio.run(stopped()) == {0: "A", 1: "B", 2: "C", 3: "D"}
    assert server.requests["batchGenerateContent"] == 2


@pytest.mark.slow
def test_a_listing_taken_before_a_jobs_create_call_could_arrive_does_not_prove_it_absent(server, tmp_path, caplog):
    """The killed run left two jobs with their create calls sent and unanswered. `first` never reached the server;
    `late` arrives just after the resumed run listed the account's jobs (for `first`), within the HTTP timeout of its
    sending. By the time `late` is looked up, that timeout has passed, but the listing is older than its arrival: it
    is listed again (and found), not submitted a second time."""
    server.batch_polls_until_done = 60  # 3 s per job at 0.05 s per poll: `late` is looked up after it settled
    oracle = batch_oracle(server.url, tmp_path / "state", batch_max_jobs=1, poll_interval=0.05)
    requests = ask("a", "b")
    keys = [request.cache_key(oracle.model) for request in requests]
    now = time.time()
    first = gemini_batch.PlannedJob.new([keys[0]], oracle.model, 1)
    late = gemini_batch.PlannedJob.new([keys[1]], oracle.model, 1)
    # Adopted in this order (by state file name); sent 100 s ago, and 3 s ago with a 5 s HTTP timeout.
    first.id, first.sent, late.id, late.sent = "0" * 32, now - 100, "1" * 32, now - 3
    (tmp_path / "state").mkdir()
    for job in (first, late):
        (tmp_path / "state" / f"{job.id}.json").write_text(json.dumps(dataclasses.asdict(job)))

    def arrive_after_the_first_listing() -> None:
        while server.requests["batches.list"] < 1:
            time.sleep(0.005)
        source = [types.InlinedRequest(contents="b", config=oracle._config(requests[1]), metadata={"key": keys[1]})]
        config = types.CreateBatchJobConfig(display_name=late.display_name)
        client = genai.Client(api_key=FAKE_KEY, http_options={"base_url": server.url})  # the killed run's call
        client.batches.create(model=oracle.model, src=source, config=config)

    arrival = threading.Thread(target=arrive_after_the_first_listing)
    arrival.start()
    with caplog.at_level(logging.INFO, logger="trl_crome.oracles.gemini_batch"):
        assert labels(oracle.generate(requests, progress=False)) == ["A", "B"]
    arrival.join()
    assert server.requests["batches.list"] == 2  # the second listing found `late`
    assert server.prompts == Counter({"a": 1, "b": 1}) and len(server.batches) == 2
    assert "accepted before the last run was stopped" in caplog.text


def test_jobs_looked_up_at_once_after_a_kill_share_one_listing(server, tmp_path, caplog):
    """The killed run had sent the create calls of four jobs, accepted by the server, and heard none of the answers.
    The resume looks all four up at once (four jobs in flight): one listing serves them all, instead of one listing
    each (a listing reads every finished job's answers: at scale, each took about a minute)."""
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=1, batch_max_jobs=4)
    prompts = ["a", "b", "c", "d"]
    requests = ask(*prompts)
    client = genai.Client(api_key=FAKE_KEY, http_options={"base_url": server.url})  # the killed run's calls
    (tmp_path / "state").mkdir()
    for request in requests:
        key = request.cache_key(oracle.model)
        job = gemini_batch.PlannedJob.new([key], oracle.model, 1)
        job.sent = time.time() - 100  # long settled: found in the listing, adopted without waiting
        (tmp_path / "state" / f"{job.id}.json").write_text(json.dumps(dataclasses.asdict(job)))
        source = [types.InlinedRequest(contents=request.prompt, config=oracle._config(request), metadata={"key": key})]
        client.batches.create(
            model=oracle.model, src=source, config=types.CreateBatchJobConfig(display_name=job.display_name)
        )
    with caplog.at_level(logging.INFO, logger="trl_crome.oracles.gemini_batch"):
        assert labels(oracle.generate(requests, progress=False)) == ["A", "B", "C", "D"]
    assert caplog.text.count("accepted before the last run was stopped") == 4
    assert server.requests["batchGenerateContent"] == 4 and server.prompts == Counter(dict.fromkeys(prompts, 1))
    assert server.requests["batches.list"] == 1  # four jobs: one page of one listing


@pytest.mark.slow
def test_jobs_whose_create_calls_never_arrived_are_listed_again_together(server, tmp_path, caplog):
    """Three jobs of the killed run whose create calls, sent 4.6, 4.3 and 4.0 s ago (HTTP timeout 5 s), never reached
    the server: the resume waits until the last of them has settled, then one listing proves all three absent (one
    listing after each one's own timeout made three), and each is submitted once."""
    oracle = batch_oracle(server.url, tmp_path / "state", batch_size=1, batch_max_jobs=3)
    requests = ask("a", "b", "c")
    (tmp_path / "state").mkdir()
    now = time.time()
    for request, age in zip(requests, (4.6, 4.3, 4.0)):
        job = gemini_batch.PlannedJob.new([request.cache_key(oracle.model)], oracle.model, 1)
        job.sent = now - age
        (tmp_path / "state" / f"{job.id}.json").write_text(json.dumps(dataclasses.asdict(job)))
    with caplog.at_level(logging.INFO, logger="trl_crome.oracles.gemini_batch"):
        assert labels(oracle.generate(requests, progress=False)) == ["A", "B", "C"]
    assert time.time() >= now + 1.0  # none was submitted before the last create call had settled
    assert server.requests["batches.list"] == 2  # the first lookup, then one listing after they all settled
    assert server.requests["batchGenerateContent"] == 3 and server.prompts == Counter({"a": 1, "b": 1, "c": 1})
    assert "accepted before the last run was stopped" not in caplog.text
