"""The on-disk oracle cache: hits cost nothing, only final answers are stored, writes are atomic across processes and
threads, lookups go by batches, and caches of the one-file-per-answer version are migrated."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage
from trl_crome.oracles.cache import DATABASE_NAME, LOOKUP_BATCH, CachedOracle, OracleCache

LEGACY_CACHE = Path(__file__).parent / "data" / "legacy_cache"


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


def test_damaged_entries_are_misses_recomputed_and_replaced(tmp_path):
    cache = OracleCache(tmp_path)
    request = requests_for("q")[0]
    key = request.cache_key("counting-1")
    # Damage from outside (the database's own writes are transactions): a row whose JSON is cut short.
    with sqlite3.connect(tmp_path / DATABASE_NAME) as connection:
        columns = "key, parsed, input_tokens, output_tokens, calls"
        connection.execute(f"INSERT INTO answers ({columns}) VALUES (?, '{{\"label\": ', 0, 0, 1)", (key,))
    assert cache.get(key) is None and len(cache) == 1
    inner = CountingOracle()
    (response,) = CachedOracle(inner, tmp_path).generate([request], progress=False)
    assert inner.calls == Counter({"q": 1}) and response.ok
    assert cache.get(key).parsed == {"label": "Q"} and len(cache) == 1


def test_batched_lookups_span_several_queries(tmp_path):
    cache = OracleCache(tmp_path)
    keys = [f"{i:064x}" for i in range(3 * LOOKUP_BATCH + 7)]
    cache.put_many((key, OracleResponse(text=key[-6:], usage=Usage(1, 1, 1)), {}) for key in keys[::2])
    found = cache.get_many(keys)
    assert sorted(found) == sorted(keys[::2])
    assert all(response.text == key[-6:] for key, response in found.items())
    assert dict(cache.items()) == found  # every stored entry, streamed


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
        assert process.exitcode == 0  # no "database is locked": writers wait for each other
    cache = OracleCache(tmp_path)
    assert len(cache) == 60
    for i in range(60):
        assert cache.get(f"{i:064x}").text.endswith("x" * (i * 50) + '"}')


def _open_new_caches(folders: list[str], barrier, errors) -> None:
    for folder in folders:  # all processes open the same new cache at the same moment
        barrier.wait()
        try:
            OracleCache(folder)
        except sqlite3.OperationalError as error:
            errors.put(str(error))


def test_processes_opening_a_new_cache_at_once_never_see_a_locked_database(tmp_path):
    """Seen failing before the fix: 1-2 of 160 openings answered "database is locked" on the WAL pragma."""
    context = multiprocessing.get_context("spawn")
    barrier, errors = context.Barrier(8), context.Queue()
    folders = [str(tmp_path / str(i)) for i in range(20)]
    processes = [context.Process(target=_open_new_caches, args=(folders, barrier, errors)) for _ in range(8)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert errors.empty()
    assert all(
        OracleCache(folder)._connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal" for folder in folders
    )


def _generate_in_threads(cache_dir: str, worker: int, prompts: list[str], results) -> None:
    """One process: two threads, each running its own event loop over a shared CachedOracle."""
    inner = CountingOracle()
    oracle = CachedOracle(inner, cache_dir)
    threads = [threading.Thread(target=oracle.generate, args=(requests_for(*half),), kwargs={"progress": False})
               for half in (prompts[::2], prompts[1::2])]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(sum(inner.calls.values()))


def test_processes_and_threads_share_one_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    prompts = [f"p{i}" for i in range(200)]
    processes = [
        context.Process(target=_generate_in_threads, args=(str(tmp_path), w, prompts, results)) for w in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    paid = sum(results.get(timeout=10) for _ in processes)
    assert 200 <= paid <= 3 * 200  # racing processes may each pay for a request that is not yet stored
    inner = CountingOracle()
    responses = CachedOracle(inner, tmp_path).generate(requests_for(*prompts), progress=False)
    assert not inner.calls and [r.parsed["label"] for r in responses] == [p.upper() for p in prompts]


def test_cache_entries_hold_no_prompt_secrets_or_usage_of_hits(tmp_path):
    oracle = CachedOracle(CountingOracle(), tmp_path)
    oracle.generate(requests_for("hello"), progress=False)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as connection:
        connection.row_factory = sqlite3.Row
        (row,) = connection.execute("SELECT * FROM answers").fetchall()
    entry = dict(row)
    assert entry["model"] == "counting-1" and entry["template"] == "test@1"
    assert not any("hello" in str(value) for value in entry.values())  # the prompt is not stored
    # The parsed JSON is the text itself: stored once (the text), parsed again on reading.
    assert entry["text"] == '{"label": "HELLO"}' and entry["parsed"] is None and entry["parsed_from_text"] == 1
    assert oracle.cache.get(entry["key"]).parsed == {"label": "HELLO"}
    # A parsed answer that is not its text (JSON found inside prose) is stored as it is.
    oracle.cache.put("f" * 64, OracleResponse(text='Sure: {"label": "X"} done', parsed={"label": "X"}))
    assert oracle.cache.get("f" * 64).parsed == {"label": "X"}
    # What the call spent, not the usage of a later hit.
    assert (entry["input_tokens"], entry["output_tokens"], entry["calls"]) == (5, 3, 1)


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
    reopened = OracleCache(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        keys = [key for (key,) in connection.execute("SELECT key FROM answers")]
    assert len(keys) >= 20
    for key in keys:  # every entry that exists is whole
        assert reopened.get(key).text.endswith('"}')
    reopened.put("f" * 64, OracleResponse(text="after"))  # and the cache still takes writes
    assert reopened.get("f" * 64).text == "after"


def test_a_cache_written_by_the_one_file_per_answer_version_is_migrated_once(tmp_path):
    # tests/oracles/data/legacy_cache was written by OracleCache before the SQLite storage (commit 8309ad9).
    shutil.copytree(LEGACY_CACHE, tmp_path / "cache")
    (tmp_path / "cache" / "a4" / ".a4b.123.abc.tmp").write_text('{"version": 1, "ke')  # a kill -9 leftover
    inner = CountingOracle()
    oracle = CachedOracle(inner, tmp_path / "cache")
    responses = oracle.generate(requests_for("alpha", "beta", "gamma", "unsafe", "new"), progress=False)
    assert inner.calls == Counter({"new": 1})  # the four legacy answers are hits
    assert [r.parsed for r in responses[:3]] == [{"label": "ALPHA"}, {"label": "BETA"}, {"label": "GAMMA"}]
    assert responses[3].error == "safety" and responses[3].cached_usage == Usage(6, 0, 1)
    assert responses[0].cached_usage == Usage(5, 3, 1)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [DATABASE_NAME, *_wal_files(tmp_path)]
    assert len(OracleCache(tmp_path / "cache")) == 5


def _wal_files(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(DATABASE_NAME + "-"))


def _open_cache(cache_dir: str) -> None:
    OracleCache(cache_dir)


def test_processes_migrating_the_same_legacy_cache_at_once_lose_nothing(tmp_path):
    template = json.loads(next(LEGACY_CACHE.glob("*/*.json")).read_text())
    keys = [f"{i:064x}" for i in range(1_000)]
    for key in keys:
        entry = {**template, "key": key, "response": {**template["response"], "text": key}}
        (tmp_path / key[:2]).mkdir(exist_ok=True)
        (tmp_path / key[:2] / f"{key}.json").write_text(json.dumps(entry))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open_cache, args=(str(tmp_path),)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    cache = OracleCache(tmp_path)
    assert len(cache) == len(keys) and not list(tmp_path.glob("??"))
    assert all(response.text == key for key, response in cache.get_many(keys).items())


def test_single_request_agenerate_is_cached_and_counted(tmp_path):
    inner = CountingOracle()
    oracle = CachedOracle(inner, tmp_path)
    first = asyncio.run(oracle.agenerate(requests_for("solo")[0]))
    second = asyncio.run(oracle.agenerate(requests_for("solo")[0]))
    assert first.parsed == second.parsed == {"label": "SOLO"} and second.from_cache
    assert inner.calls == Counter({"solo": 1})
    assert oracle.stats.responses == 2 and oracle.stats.cache_hits == 1
