"""`trl-crome augment` against a dead oracle (nothing listening, a rejected key, an outage in the middle of a run) and
bad input at scale: the run stops early with a clear error and a non-zero exit, and keeps what it paid for.

The CLI runs as a user runs it, in its own process, against the local servers of `tests/servers` (real HTTP)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections import Counter

import pytest

from tests.augment.scripted import gemini_responder, step_of
from tests.augment.test_cli import CLI, FAKE_KEY, REPO, ROWS, dataset_file, env  # noqa: F401 (the fixtures)
from tests.servers.gemini import GeminiServer
from tests.servers.openai import OpenAIServer
from trl_crome.cli import main
from trl_crome.oracles.cache import OracleCache


def oracle_args(backend: str, url: str) -> list[str]:
    if backend == "gemini":
        return ["--oracle", "gemini", "--model", "gemini-test", "--base-url", url]
    return ["--oracle", "openai", "--model", "m", "--base-url", url + "/v1"]


def run_cli(args: list[str], environ: dict[str, str], timeout: float = 120) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(CLI + args, cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr, time.monotonic() - started


def refused_port() -> int:
    """Port 9 (the issue's example) when nothing listens there, else a port just freed."""
    for port in (9, 0):
        with socket.socket() as probe:
            if port == 9 and probe.connect_ex(("127.0.0.1", 9)) != 0:
                return 9
            if port == 0:
                probe.bind(("127.0.0.1", 0))
                return probe.getsockname()[1]
    raise AssertionError("unreachable")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_nothing_listening_stops_the_run_early(backend, tmp_path, env, dataset_file):  # noqa: F811
    url = f"http://127.0.0.1:{refused_port()}"
    output = tmp_path / "out.jsonl"
    args = ["augment", "--dataset", str(dataset_file), "--output", str(output), "--no-progress"]
    code, stderr, seconds = run_cli(args + oracle_args(backend, url), env)
    assert code == 2 and not output.exists()
    assert "looks unreachable" in stderr and "connection" in stderr and "no call has succeeded" in stderr
    assert "Traceback" not in stderr
    # The bound: startup_timeout (15 s) after the first failed call (retry waits are cut short to try again then;
    # a refused connection fails at once), plus the CLI's start-up (10-15 s on a loaded 2-core machine).
    failing = float(re.search(r"failed over (\d+) s", stderr).group(1))
    assert 15 <= failing <= 16 and seconds < 16 + 60


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_a_server_answering_401_stops_the_run_at_once(backend, tmp_path, env, dataset_file):  # noqa: F811
    server_class = GeminiServer if backend == "gemini" else OpenAIServer
    with server_class() as server:
        server.reject_status = 401
        output = tmp_path / "out.jsonl"
        args = ["augment", "--dataset", str(dataset_file), "--output", str(output), "--no-progress"]
        args += ["--max-concurrency", "4", *oracle_args(backend, server.url)]
        code, stderr, seconds = run_cli(args, env)
    assert code == 2 and not output.exists()
    assert "401" in stderr and "rejected" in stderr and FAKE_KEY not in stderr
    assert server.requests["rejected"] <= 4  # one round of calls in flight, none retried
    assert seconds < 60  # no retries, no backoff: the CLI's start-up and one round trip


@pytest.mark.slow
def test_an_outage_mid_run_stops_it_and_the_paid_answers_are_kept(tmp_path, env, dataset_file):  # noqa: F811
    output = tmp_path / "run" / "pairs.jsonl"
    with GeminiServer(responder=gemini_responder, latency=0.05) as server:
        args = ["augment", "--dataset", str(dataset_file), "--output", str(output), "--no-progress"]
        args += ["--max-concurrency", "2", "--outage-timeout", "3", *oracle_args("gemini", server.url)]
        process = subprocess.Popen(CLI + args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while server.requests["generateContent"] < 20:  # the rubrics (12) and a few rewrites are paid for
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        server.down = True  # from now on every request is dropped without an answer
        went_down = time.monotonic()
        stderr = process.communicate(timeout=120)[1]
        seconds = time.monotonic() - went_down
        paid = server.requests["generateContent"]
        stored = len(OracleCache(output.with_name("pairs.jsonl.state") / "oracle_cache"))
        assert process.returncode == 2 and not output.exists()
        assert "looks unreachable" in stderr and "since the last successful call" in stderr
        # The bound: --outage-timeout (3 s) after the first failed call (retry waits are cut short to try then).
        failing = float(re.search(r"failed over (\d+) s", stderr).group(1))
        assert 3 <= failing <= 4 and seconds < 4 + 5
        assert paid - 2 <= stored <= paid  # every answer received is stored (2 were in flight at the outage)

        # The network is back: the same command pays only for what was not stored.
        server.down = False
        assert main(args) == 0
        rerun = server.requests["generateContent"] - paid
        assert rerun == len(server.prompts) - stored  # every distinct call not stored, once; the stored ones never
        assert sum(server.prompts.values()) - len(server.prompts) <= 2  # paid twice: at most the 2 in flight


def test_bad_input_lines_and_values_are_named_before_any_call(tmp_path, env, capsys):  # noqa: F811
    with GeminiServer(responder=gemini_responder) as server:
        args = ["--output", str(tmp_path / "out.jsonl"), "--no-progress", *oracle_args("gemini", server.url)]
        broken = tmp_path / "broken.jsonl"
        broken.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n" + '{"prompt": "p", "chosen": \n')
        assert main(["augment", "--dataset", str(broken), *args]) == 2
        err = capsys.readouterr().err
        assert f"{broken}, line 3: not valid JSON" in err and "DatasetGenerationError" not in err

        ties = tmp_path / "ties.jsonl"
        ties.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "tie": "yes"}) + "\n")
        assert main(["augment", "--dataset", str(ties), *args]) == 2
        assert "input dataset, row 1, field 'tie': must be a bool" in capsys.readouterr().err
    assert server.requests["generateContent"] == 0


def test_a_failed_call_leaves_rows_incomplete_and_a_rerun_completes_them(tmp_path, env, dataset_file, capsys):  # noqa: F811
    def run(server, output):
        args = ["augment", "--dataset", str(dataset_file), "--output", str(output), "--no-progress", "--max-rows", "4"]
        return main([*args, "--chunk-size", "2", *oracle_args("gemini", server.url)])

    with GeminiServer(responder=gemini_responder) as server:
        assert run(server, tmp_path / "reference.jsonl") == 0
    unlucky = ROWS[3]["prompt"]
    output = tmp_path / "run" / "pairs.jsonl"
    with GeminiServer(responder=gemini_responder) as server:
        # Its attribute call gets 429 on every attempt (6: the first and 5 retries), without a wait.
        server.add_fault("429", match=unlucky, times=6, retry_after=0)
        assert run(server, output) == 5
        assert "2 rows are incomplete" in capsys.readouterr().err  # the rows of its chunk
        summary = json.loads(output.with_name("pairs.summary.json").read_text())
        assert summary["rows_incomplete"] == 2 and summary["rubric_fallbacks"] == {}
        card = output.with_name("pairs.README.md").read_text()
        assert re.search(r"\| rows incomplete \(transient oracle failures\) +\| 2 +\|", card)
        # Nothing built on the failed call was asked: the row's only calls are the 6 attempts of its attribute call.
        about_it = {prompt: n for prompt, n in server.prompts.items() if unlucky in prompt}
        assert list(about_it.values()) == [6] and step_of(next(iter(about_it))) == "attributes"
        before = Counter(server.prompts)
        assert run(server, output) == 0  # the fault is spent
        rerun = Counter(server.prompts) - before
    assert output.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
    # The rerun asked the row's attribute call again and the 25 calls built on it, each once; nothing else.
    assert len(rerun) == 26 and set(rerun.values()) == {1} and all(unlucky in prompt for prompt in rerun)
