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
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.augment.scripted import gemini_responder
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


@pytest.mark.slow
def test_killed_run_resumes_without_paying_twice_and_matches_an_uninterrupted_run(
    tmp_path, gemini_server, env, dataset_file, capsys
):
    # The reference: one uninterrupted run.
    reference = tmp_path / "reference" / "pairs.jsonl"
    assert main(_args(dataset_file, gemini_server, reference)) == 0
    total = _calls(gemini_server)
    assert total == 12 + 12 * 2 * 2  # one rubric per prompt, two attributes x two directions per row

    # The same command in a subprocess, killed with SIGKILL in the middle of the counterfactual stage.
    output = tmp_path / "run" / "pairs.jsonl"
    before = _calls(gemini_server)
    process = subprocess.Popen(CLI + _args(dataset_file, gemini_server, output), cwd=REPO, env=env)
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
    assert 12 < stored < total

    # The same command again: it only pays for what was not stored, and writes exactly the reference's data.
    before = _calls(gemini_server)
    assert main(_args(dataset_file, gemini_server, output)) == 0
    resumed_calls = _calls(gemini_server) - before
    assert resumed_calls == total - stored
    # Paid twice at most: the 2 calls in flight at the kill (--max-concurrency 2), plus one answer that had arrived
    # and freed its slot while its cache file was still being written.
    assert killed_calls + resumed_calls - total <= 2 + 1
    assert output.read_bytes() == reference.read_bytes()

    summary = json.loads(output.with_name("pairs.summary.json").read_text())
    assert summary["cache_hits"] == stored and summary["calls"] == resumed_calls
    assert summary["pairs"] == {"original": 12, "causal": 48, "neutral": 60}

    # The API key is never printed nor written: not in the output, the summary, the cache or the console.
    console = capsys.readouterr()
    assert FAKE_KEY not in console.out + console.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_KEY not in path.read_text(errors="ignore"), path


def test_folder_output_is_a_saved_dataset_with_its_summary(tmp_path, gemini_server, env, dataset_file):
    output = tmp_path / "crome-data"
    assert main(_args(dataset_file, gemini_server, output, "--max-rows", "3", "--no-rubrics", "--directions",
                      "degrade", "--neutrals-per-causal", "0")) == 0  # fmt: skip
    dataset = load_from_disk(str(output))
    assert dataset["kind"] == ["original", "causal", "causal", "neutral"] * 3
    assert dataset["source_row"] == [0] * 4 + [1] * 4 + [2] * 4
    assert _calls(gemini_server) == 3 * 2  # no rubric calls, two attributes x one direction per row
    summary = json.loads((output / "augmentation_summary.json").read_text())
    assert summary["input_rows"] == 3 and summary["pairs"] == {"original": 3, "causal": 6, "neutral": 3}
    assert (output / "oracle_cache").is_dir()


def test_bad_settings_are_reported_without_a_traceback(tmp_path, gemini_server, env, dataset_file, capsys):
    assert main(_args(dataset_file, gemini_server, tmp_path / "o.jsonl", "--attributes-per-example", "3")) == 2
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
