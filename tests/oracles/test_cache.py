"""The on-disk oracle cache: hits cost nothing, only final answers are stored, writes are atomic across processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time
from collections import Counter

from pydantic import BaseModel

from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage
from trl_crome.oracles.cache import CachedOracle, OracleCache


class Verdict(BaseModel):
    label: str


class CountingOracle(Oracle):
    """A deterministic in-process backend (no LLM needed to test caching): answers from a table, counts calls."""

    input_price_per_million = 1.0
    output_price_per_million = 2.0

    def __init__(self, errors: dict[str, str] | None = None):
        super().__init__(model="counting-1", max_concurrency=4)
        self.errors = errors or {}
        self.calls: Counter[str] = Counter()

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        self.calls[request.prompt] += 1
        usage = Usage(input_tokens=len(request.prompt), output_tokens=3, calls=1)
        if request.prompt in self.errors:
            return OracleResponse(usage=usage, error=self.errors[request.prompt])
        text = json.dumps({"label": request.prompt.upper()})
        return OracleResponse(text=text, parsed=request.parse(text), usage=usage)


def requests_for(*prompts: str) -> list[OracleRequest]:
    return [OracleRequest(prompt=p, template="test@1", schema=Verdict) for p in prompts]


def test_hits_make_no_call_and_keep_original_usage(tmp_path):
    inner = CountingOracle()
    oracle = CachedOracle(inner, tmp_path)
    first = oracle.generate(requests_for("ab", "cde"), progress=False)
    assert [r.parsed for r in first] == [{"label": "AB"}, {"label": "CDE"}]
    assert [r.from_cache for r in first] == [False, False]

    again = CachedOracle(CountingOracle(), tmp_path)  # a new process would see the same folder
    second = again.generate(requests_for("ab", "cde", "f"), progress=False)
    assert again.oracle.calls == Counter({"f": 1})
    assert [r.parsed for r in second] == [{"label": "AB"}, {"label": "CDE"}, {"label": "F"}]
    assert [r.from_cache for r in second] == [True, True, False]
    assert second[0].usage == Usage() and second[0].cached_usage == Usage(2, 3, 1)

    summary = again.summary()
    assert summary["cache_hits"] == 2 and summary["calls"] == 1
    assert summary["input_tokens"] == 1 and summary["cached_input_tokens"] == 5
    assert summary["cost_usd"] == (1 * 1.0 + 3 * 2.0) / 1e6
    assert summary["cached_cost_usd"] == (5 * 1.0 + 6 * 2.0) / 1e6


def test_duplicates_in_one_batch_are_called_once(tmp_path):
    inner = CountingOracle()
    responses = CachedOracle(inner, tmp_path).generate(requests_for("x", "x", "y", "x"), progress=False)
    assert inner.calls == Counter({"x": 1, "y": 1})
    assert [r.parsed["label"] for r in responses] == ["X", "X", "Y", "X"]
    assert [r.usage.calls for r in responses] == [1, 0, 1, 0]


def test_final_failures_are_cached_transient_ones_are_not(tmp_path):
    errors = {"blocked": "safety", "bad": "malformed", "slow": "timeout", "down": "http_503", "busy": "http_429"}
    first = CachedOracle(CountingOracle(errors), tmp_path)
    assert [r.error for r in first.generate(requests_for(*errors), progress=False)] == list(errors.values())
    assert first.summary()["errors"] == {e: 1 for e in errors.values()}

    resumed_inner = CountingOracle()
    resumed = CachedOracle(resumed_inner, tmp_path).generate(requests_for(*errors), progress=False)
    assert resumed_inner.calls == Counter({"slow": 1, "down": 1, "busy": 1})
    assert [r.error for r in resumed] == ["safety", "malformed", None, None, None]


def test_partial_temp_files_and_damaged_entries_are_ignored(tmp_path):
    cache = OracleCache(tmp_path)
    request = requests_for("q")[0]
    key = request.cache_key("counting-1")
    # What a kill -9 in the middle of a write leaves behind: a half-written temporary file.
    shard = tmp_path / key[:2]
    shard.mkdir()
    (shard / f".{key}.123.abc.tmp").write_text('{"version": 1, "key": "' + key + '", "resp')
    assert cache.get(key) is None and len(cache) == 0
    # An entry damaged from outside is a miss, recomputed and replaced.
    cache.path(key).write_text('{"version": 1, "key": "')
    inner = CountingOracle()
    (response,) = CachedOracle(inner, tmp_path).generate([request], progress=False)
    assert inner.calls == Counter({"q": 1}) and response.ok
    assert cache.get(key).parsed == {"label": "Q"}


def _write_many(cache_dir: str, worker: int, count: int) -> None:
    cache = OracleCache(cache_dir)
    for i in range(count):
        # All workers write the same keys, each its own payload: whoever wins a race, the entry is whole.
        text = json.dumps({"label": f"w{worker}-" + "x" * (i * 50)})
        cache.put(f"{i:064x}", OracleResponse(text=text, parsed={"label": text}, usage=Usage(1, 1, 1)))


def test_concurrent_writers_never_leave_corrupt_entries(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_many, args=(str(tmp_path), w, 60)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    cache = OracleCache(tmp_path)
    assert len(cache) == 60
    for i in range(60):
        entry = json.loads(cache.path(f"{i:064x}").read_text())
        assert entry["response"]["text"].endswith("x" * (i * 50) + '"}')
    assert not list(tmp_path.glob("*/*.tmp"))


def test_cache_entries_hold_no_prompt_secrets_or_usage_of_hits(tmp_path):
    oracle = CachedOracle(CountingOracle(), tmp_path)
    oracle.generate(requests_for("hello"), progress=False)
    (path,) = tmp_path.glob("*/*.json")
    entry = json.loads(path.read_text())
    assert entry["model"] == "counting-1" and entry["template"] == "test@1"
    assert entry["response"]["usage"] == {"input_tokens": 5, "output_tokens": 3, "calls": 1}
    assert entry["response"]["cached_usage"] is None


def test_kill_9_mid_writes_leaves_only_whole_entries(tmp_path):
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_write_many, args=(str(tmp_path), 0, 100_000))
    writer.start()
    cache = OracleCache(tmp_path)
    deadline = time.monotonic() + 60
    while len(cache) < 20 and time.monotonic() < deadline:  # killed in the middle of its writes
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(10)
    assert writer.exitcode == -signal.SIGKILL
    entries = list(tmp_path.glob("*/*.json"))
    assert len(entries) >= 20
    for path in entries:  # every entry that exists is whole; a half-written one can only be a temporary file
        key = path.stem
        assert cache.get(key).text.endswith('"}')


def test_single_request_agenerate_is_cached_and_counted(tmp_path):
    inner = CountingOracle()
    oracle = CachedOracle(inner, tmp_path)
    first = asyncio.run(oracle.agenerate(requests_for("solo")[0]))
    second = asyncio.run(oracle.agenerate(requests_for("solo")[0]))
    assert first.parsed == second.parsed == {"label": "SOLO"} and second.from_cache
    assert inner.calls == Counter({"solo": 1})
    assert oracle.stats.responses == 2 and oracle.stats.cache_hits == 1
