"""`trl-crome augment` end to end: the real google-genai client (inside `GeminiOracle`) talks over HTTP to the local
Gemini server of `tests/servers/gemini.py`, whose answers follow `tests/augment/scripted.py` (no real LLM can run
here). The server counts every request it receives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.augment.scripted import gemini_responder, step_of
from tests.servers.gemini import GeminiServer
from trl_crome.cli import main
from trl_crome.oracles.cache import OracleCache

REPO = Path(__file__).resolve().parents[2]
FAKE_KEY = "AIzaFAKE-crome-test-key-0123456789"
CLI = [sys.executable, "-c", "import sys; from trl_crome.cli import main; sys.exit(main())"]

ROWS = [
    {
        "prompt": f"Question {i}: how should I {task}?",
        "chosen": f"To {task}, start early, follow the steps in order, and check each result before moving on ({i}).",
        "rejected": f"Just {task} however you like; the details never matter and nobody checks them ({i}).",
    }
    for i, task in enumerate(
        [
            "water a cactus",
            "store rice",
            "clean a cast iron pan",
            "learn scales",
            "back up photos",
            "fold a shirt",
            "sharpen a knife",
            "plan a budget",
            "brew green tea",
            "train for 5k",
            "label cables",
            "repot a fern",
        ]
    )
]


@pytest.fixture
def gemini_server():
    with GeminiServer(responder=gemini_responder, latency=0.1) as server:
        yield server


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def dataset_file(tmp_path):
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def _args(dataset_file, server, output, *extra):
    return [
        "augment", "--dataset", str(dataset_file), "--oracle", "gemini", "--model", "gemini-test",
        "--base-url", server.url, "--max-concurrency", "2", "--output", str(output), "--no-progress", *extra,
    ]  # fmt: skip


def _calls(server):
    return server.requests["generateContent"]


def _calls_per_step(server) -> dict[str, int]:
    steps = Counter()
    for prompt, count in server.prompts.items():
        steps[step_of(prompt)] += count
    return dict(steps)


@pytest.mark.slow
def test_killed_run_resumes_without_paying_twice_and_matches_an_uninterrupted_run(
    tmp_path, gemini_server, env, dataset_file, capsys
):
    # The reference: one uninterrupted run of the paper preset (the default) on 6 rows.
    reference = tmp_path / "reference" / "pairs.jsonl"
    assert main(_args(dataset_file, gemini_server, reference, "--max-rows", "6")) == 0
    total = _calls(gemini_server)
    assert total == 6 * 26  # per row: 1 attributes + 5 causal elements + 10 rewrites + 10 verifications

    # The same command in a subprocess, killed with SIGKILL in the middle of the counterfactual stage.
    output = tmp_path / "run" / "pairs.jsonl"
    before = _calls(gemini_server)
    process = subprocess.Popen(CLI + _args(dataset_file, gemini_server, output, "--max-rows", "6"), cwd=REPO, env=env)
    deadline = time.monotonic() + 180
    while _calls(gemini_server) - before < total // 2:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made too few calls in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_calls = _calls(gemini_server) - before
    stored = len(OracleCache(output.with_name("pairs.jsonl.state") / "oracle_cache"))
    assert not output.exists()  # nothing half-written
    assert 6 < stored < total

    # The same command again: it only pays for what was not stored, and writes exactly the reference's data.
    before = _calls(gemini_server)
    assert main(_args(dataset_file, gemini_server, output, "--max-rows", "6")) == 0
    resumed_calls = _calls(gemini_server) - before
    assert resumed_calls == total - stored
    # Paid twice at most: the 2 calls in flight at the kill (--max-concurrency 2), plus one answer that had arrived
    # and freed its slot while its cache file was still being written.
    assert killed_calls + resumed_calls - total <= 2 + 1
    assert output.read_bytes() == reference.read_bytes()

    summary = json.loads(output.with_name("pairs.summary.json").read_text())
    assert summary["cache_hits"] == stored and summary["calls"] == resumed_calls
    assert summary["pairs"] == {"original": 6, "causal": 60, "neutral": 6}

    # The API key is never printed nor written: not in the output, the summary, the cache or the console.
    console = capsys.readouterr()
    assert FAKE_KEY not in console.out + console.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_KEY not in path.read_text(errors="ignore"), path


def test_folder_output_is_a_saved_dataset_with_its_summary(tmp_path, gemini_server, env, dataset_file):
    output = tmp_path / "crome-data"
    assert main(_args(dataset_file, gemini_server, output, "--max-rows", "3", "--no-rubrics", "--directions",
                      "degrade", "--neutrals-per-causal", "0", "--preset", "lite")) == 0  # fmt: skip
    dataset = load_from_disk(str(output))
    assert dataset["kind"] == ["original", "causal", "causal", "neutral"] * 3
    assert dataset["source_row"] == [0] * 4 + [1] * 4 + [2] * 4
    assert _calls(gemini_server) == 3 * 2  # no rubric calls, two attributes x one direction per row
    summary = json.loads((output / "augmentation_summary.json").read_text())
    assert summary["input_rows"] == 3 and summary["pairs"] == {"original": 3, "causal": 6, "neutral": 3}
    assert (output / "oracle_cache").is_dir()


def test_bad_settings_are_reported_without_a_traceback(tmp_path, gemini_server, env, dataset_file, capsys):
    args = _args(
        dataset_file, gemini_server, tmp_path / "o.jsonl", "--attributes-per-example", "3", "--preset", "lite"
    )
    assert main(args) == 2
    assert "attributes_per_example" in capsys.readouterr().err
    output = str(tmp_path / "o.jsonl")
    args = ["augment", "--dataset", str(dataset_file), "--oracle", "openai", "--output", output, "--batch"]
    assert main(args) == 2
    assert "--batch is only available with --oracle gemini" in capsys.readouterr().err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "fine answer", "rejected": ""}) + "\n")
    assert main(_args(bad, gemini_server, tmp_path / "o.jsonl")) == 2
    assert "row 0, field 'rejected': is empty" in capsys.readouterr().err
    assert _calls(gemini_server) == 0


def test_dry_run_reaches_the_server_zero_times_and_plans_the_calls_of_the_real_run(
    tmp_path, gemini_server, env, dataset_file, capsys, monkeypatch
):
    monkeypatch.delenv("GEMINI_API_KEY")  # an estimate needs no key
    output = tmp_path / "pairs.jsonl"
    args = [*_args(dataset_file, gemini_server, output, "--max-rows", "5"), "--model", "gemini-2.5-flash"]
    assert main([*args, "--dry-run"]) == 0
    assert sum(gemini_server.requests.values()) == 0 and not output.exists()
    estimate = json.loads(output.with_name("pairs.estimate.json").read_text())
    planned = {step["step"]: step["calls"] for step in estimate["steps"]}
    assert planned == {"attributes": 5, "causal_elements": 25, "rewrites": 50, "verification": 50}
    assert estimate["thinking_tokens_per_call"] == 1000  # gemini-2.5-flash thinks unless told not to
    assert estimate["cost_usd"]["batch"] == pytest.approx(estimate["cost_usd"]["standard"] / 2)
    table = capsys.readouterr().out
    assert "verification" in table and "batch $" in table and "nothing was sent" in table

    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    assert main(args) == 0
    assert _calls_per_step(gemini_server) == planned  # counted at the server, step by step

    # Resumed: a second dry run sees every answer in the cache, so nothing is left to pay.
    assert main([*args, "--dry-run", "--thinking-tokens", "0"]) == 0
    again = json.loads(output.with_name("pairs.estimate.json").read_text())
    assert {s["step"]: (s["calls"], s["cached_calls"]) for s in again["steps"]} == {
        step: (0, calls) for step, calls in planned.items()
    }
    assert again["cost_usd"]["standard"] == 0


def test_max_cost_stops_within_one_round_and_a_rerun_with_a_higher_cap_matches_an_uncapped_run(
    tmp_path, gemini_server, env, dataset_file, capsys
):
    def args(output, *extra):
        return [*_args(dataset_file, gemini_server, output, "--max-rows", "6", "--model", "gemini-2.5-flash",
                       "--chunk-size", "2"), *extra]  # fmt: skip

    reference = tmp_path / "reference" / "pairs.jsonl"
    assert main(args(reference)) == 0
    total = _calls(gemini_server)
    reference_summary = json.loads(reference.with_name("pairs.summary.json").read_text())
    cache = OracleCache(reference.with_name("pairs.jsonl.state") / "oracle_cache")
    entries = [response.usage for _, response in cache.items()]
    most = max(e.input_tokens * 0.30 + e.output_tokens * 2.50 for e in entries) / 1e6
    cap = reference_summary["cost_usd"] * 0.45

    output = tmp_path / "run" / "pairs.jsonl"
    before = _calls(gemini_server)
    assert main(args(output, "--max-cost", f"{cap!r}")) == 3
    capped_calls = _calls(gemini_server) - before
    summary = json.loads(output.with_name("pairs.summary.json").read_text())
    stopped = summary["stopped"]
    assert stopped["reason"] == "max_cost" and stopped["step"] in summary["steps"]
    # Over the cap by no more than the calls in flight when it was reached (--max-concurrency 2).
    assert cap <= summary["cost_usd"] < cap + 2 * most
    assert summary["rows_done"] in (2, 4) and stopped["next_row"] == summary["rows_done"]
    lines = reference.read_text().splitlines()
    written = [line for line in lines if json.loads(line)["source_row"] < summary["rows_done"]]
    assert output.read_text().splitlines() == written  # the finished rows, exactly as an uncapped run writes them
    assert "Rerun with a higher --max-cost" in capsys.readouterr().err

    before = _calls(gemini_server)
    assert main(args(output, "--max-cost", f"{cap * 10!r}")) == 0
    assert output.read_bytes() == reference.read_bytes()
    assert capped_calls + _calls(gemini_server) - before == total  # nothing paid twice


def test_gemini_is_asked_for_the_analysis_before_the_answer(tmp_path, monkeypatch):
    from trl_crome.augment.attributes import CausalElement
    from trl_crome.augment.counterfactuals import RewriteTask
    from trl_crome.augment.pairs import SourceRow
    from trl_crome.augment.rubrics import CausalAttribute
    from trl_crome.augment.verification import verify_request
    from trl_crome.oracles import GeminiOracle

    schemas = []

    def recording(call):
        schemas.append(call.schema)
        return gemini_responder(call)

    row = SourceRow(0, "How do I boil an egg?", "Boil it nine minutes.", "Fry it.")
    task = RewriteTask(row, CausalAttribute(name="accuracy", description="d"), "degrade", (CausalElement(
        element="the time", direction="increases"),))  # fmt: skip
    with GeminiServer(responder=recording) as server:
        oracle = GeminiOracle(api_key=FAKE_KEY, http_options={"base_url": server.url})
        rewrite, verdict = oracle.generate([task.request(256, 0.0), verify_request(task, "Boil it.", 256, 0.0)])
    assert rewrite.parsed["rewritten"].startswith("Boil it nine minutes.") and verdict.parsed["verdict"] == "Pass"
    # The JSON schema the server received orders the analysis first: the oracle reasons, then answers.
    # (google-genai writes the field in snake case, which the REST API also accepts).
    ordering = [schema.get("propertyOrdering") or schema.get("property_ordering") for schema in schemas]
    assert sorted(ordering) == [["analysis", "rewritten"], ["analysis", "verdict"]]  # the two calls race
