"""`trl-crome augment` in chunks, as a user runs it: killed with SIGKILL between chunks and run again, and its output
shared with `--push-to-hub`. The CLI talks through the real google-genai client to the local Gemini server of
`tests/servers/gemini.py` (no real LLM can run here), which counts every call."""

# ruff: noqa: F811 (the tests take the fixtures of test_cli.py as arguments)
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import time
from collections import Counter

import pytest
from huggingface_hub import HfApi

from tests.augment.test_chunks import mock_hub
from tests.augment.test_cli import CLI, FAKE_KEY, REPO, _args, dataset_file, env, gemini_server  # noqa: F401 (fixtures)
from trl_crome.cli import main
from trl_crome.oracles.cache import DATABASE_NAME

HF_TOKEN = "hf_FAKEcrometesttoken0123456789abcdef"


def _row_calls(prompts: Counter) -> Counter:
    """Calls per source row: every prompt of the pipeline quotes its row's question ("Question <row>: ...") once."""
    rows = Counter()
    for prompt, count in prompts.items():
        found = re.findall(r"Question (\d+):", prompt)
        assert len(found) == 1, prompt[:300]
        rows[int(found[0])] += count
    return rows


def _files(folder) -> dict[str, tuple[bytes, int, int]]:
    """Each file's bytes, modification time and inode: a file rewritten with the same bytes still differs."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in folder.iterdir()}


@pytest.mark.slow
def test_a_kill_between_chunks_loses_no_finished_chunk_and_the_rerun_asks_nothing_for_them(
    tmp_path, gemini_server, env, dataset_file
):
    args = ("--max-rows", "6", "--chunk-size", "2")
    reference = tmp_path / "reference" / "pairs.jsonl"
    assert main(_args(dataset_file, gemini_server, reference, *args)) == 0
    per_row = _row_calls(gemini_server.prompts)
    assert sorted(per_row) == list(range(6)) and set(per_row.values()) == {26}  # the paper preset's calls per row

    # The same command in its own process, killed with SIGKILL as soon as its first chunk is on disk.
    output = tmp_path / "run" / "pairs.jsonl"
    chunks = tmp_path / "run" / "pairs.jsonl.state" / "chunks"
    process = subprocess.Popen(CLI + _args(dataset_file, gemini_server, output, *args), cwd=REPO, env=env)
    deadline = time.monotonic() + 180
    while not (chunks.is_dir() and list(chunks.glob("*.json"))):
        assert process.poll() is None, "the run ended before a chunk was written"
        assert time.monotonic() < deadline, "no chunk was written in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists()
    records = [json.loads(path.read_text()) for path in sorted(chunks.glob("*.json"))]
    finished = {row for record in records for row in range(record["start"], record["stop"])}
    assert 2 <= len(finished) < 6, "the kill came after the last chunk"
    kept = _files(chunks)
    assert {name for name in kept if name.endswith(".arrow")} == {
        f"{r['start']:012d}-{r['stop']:012d}.arrow" for r in records
    }

    # Run again: the finished chunks are read back as they are, and not one call is made for their rows.
    before = gemini_server.prompts.copy()
    assert main(_args(dataset_file, gemini_server, output, *args)) == 0
    resumed = _row_calls(gemini_server.prompts - before)
    assert not finished & set(resumed), resumed
    assert set(resumed) <= set(range(6)) - finished
    assert {name: files for name, files in _files(chunks).items() if name in kept} == kept
    assert output.read_bytes() == reference.read_bytes()
    summary = json.loads(output.with_name("pairs.summary.json").read_text())
    assert summary["rows_reused"] == len(finished) and summary["rows_done"] == 6


def test_push_to_hub_uploads_the_output_and_the_saved_card_and_no_secret_is_written_anywhere(
    tmp_path, gemini_server, env, dataset_file, monkeypatch, capsys, caplog
):
    """The Hub is mocked at its network boundary (see `mock_hub`): what would be uploaded is recorded and compared
    with what the run saved locally."""
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    pushed = mock_hub(monkeypatch)
    output = tmp_path / "out" / "pairs.jsonl"
    caplog.set_level(logging.DEBUG)
    args = _args(dataset_file, gemini_server, output, "--max-rows", "3", "--chunk-size", "2")
    assert main([*args, "--push-to-hub", "someone/crome-data", "--hub-private"]) == 0

    card = output.with_name("pairs.README.md").read_text(encoding="utf-8")
    assert [call["repo_id"] for call in pushed["create_repo"]] == ["someone/crome-data"]
    assert pushed["create_repo"][0]["repo_type"] == "dataset" and pushed["create_repo"][0]["private"] is True
    (upload,) = pushed["upload_file"]
    assert upload["path_in_repo"] == "README.md" and upload["repo_type"] == "dataset"
    assert upload["path_or_fileobj"].decode() == card  # the card saved beside the output
    (data,) = pushed["dataset"]
    assert data["repo_id"] == "someone/crome-data" and data["private"] is True
    assert data["rows"] == [json.loads(line) for line in output.read_text().splitlines()]
    assert "https://huggingface.co/datasets/someone/crome-data" in capsys.readouterr().out

    # No secret (the API key, the HF token) in the console, the logs or any file the run wrote (the card, the summary,
    # the state folder: chunks and oracle cache); not even the oracle's URL in those files.
    console = capsys.readouterr()
    for text in (console.out + console.err, caplog.text):
        assert FAKE_KEY not in text and HF_TOKEN not in text
    written = [path for path in output.parent.rglob("*") if path.is_file()]
    assert {path.name for path in written} >= {"pairs.jsonl", "pairs.summary.json", "pairs.README.md", DATABASE_NAME}
    assert any(path.suffix == ".arrow" for path in written)
    for path in written:
        text = path.read_text(errors="ignore")
        assert not [s for s in (FAKE_KEY, HF_TOKEN, gemini_server.url, f"127.0.0.1:{gemini_server.port}") if s in text]


def test_push_to_hub_exit_status_when_the_upload_fails_and_nothing_pushed_at_max_cost(
    tmp_path, gemini_server, env, dataset_file, monkeypatch, capsys
):
    """The Hub is mocked at its network boundary (see `mock_hub`)."""
    pushed = mock_hub(monkeypatch)
    args = ("--max-rows", "4", "--chunk-size", "2", "--model", "gemini-2.5-flash", "--push-to-hub", "someone/data")

    # A run stopped at --max-cost is partial: exit status 3, nothing is uploaded.
    capped = tmp_path / "capped" / "pairs.jsonl"
    assert main([*_args(dataset_file, gemini_server, capped, *args), "--max-cost", "1e-9"]) == 3
    assert capped.exists() and pushed == {"create_repo": [], "upload_file": [], "dataset": []}
    assert "nothing was pushed to the Hub" in capsys.readouterr().err

    # An upload that fails: exit status 4, the output is saved, and a rerun pushes it without a call to the oracle.
    def offline(self, repo_id, **kwargs):
        raise ConnectionError("the Hub cannot be reached")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    output = tmp_path / "run" / "pairs.jsonl"
    assert main(_args(dataset_file, gemini_server, output, *args)) == 4
    assert "the upload to someone/data failed (ConnectionError" in capsys.readouterr().err
    saved = output.read_bytes()
    calls = gemini_server.requests["generateContent"]
    pushed = mock_hub(monkeypatch)
    assert main(_args(dataset_file, gemini_server, output, *args)) == 0
    assert gemini_server.requests["generateContent"] == calls and output.read_bytes() == saved
    assert pushed["dataset"][0]["rows"] == [json.loads(line) for line in saved.decode().splitlines()]
