"""`make_oracle` (the CLI's factory) and the test servers started as subprocesses, as other tests and benchmarks do."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.augment.scripted import gemini_responder
from tests.servers.gemini import GeminiServer
from trl_crome.oracles import CachedOracle, GeminiOracle, OpenAICompatibleOracle, OracleRequest, make_oracle

ROOT = Path(__file__).resolve().parents[2]


def start(module: str, tmp_path: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port_file = tmp_path / f"{module}.port"
    command = [sys.executable, "-m", f"tests.servers.{module}", "--port", "0", "--port-file", str(port_file)]
    process = subprocess.Popen([*command, *options], cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text()}"


def test_make_oracle_builds_each_backend(tmp_path):
    gemini = make_oracle("gemini", "gemini-2.0-flash", api_key="k", batch=True)
    assert isinstance(gemini, GeminiOracle) and gemini.model == "gemini-2.0-flash" and gemini.batch
    openai = make_oracle("openai", "qwen", base_url="http://127.0.0.1:1/v1", cache_dir=str(tmp_path))
    assert isinstance(openai, CachedOracle) and isinstance(openai.oracle, OpenAICompatibleOracle)
    assert openai.model == "qwen" and openai.cache.cache_dir == tmp_path
    with pytest.raises(ValueError, match="claude"):
        make_oracle("claude")


def test_gemini_server_subprocess_with_latency_and_faults(tmp_path):
    server, url = start("gemini", tmp_path, "--latency", "0.2", "--fault", "503::1")
    try:
        oracle = GeminiOracle(api_key="k", http_options={"base_url": url}, backoff_base=0.01, max_concurrency=4)
        start_time = time.perf_counter()
        responses = oracle.generate([OracleRequest(prompt=f"q{i}") for i in range(4)], progress=False)
        elapsed = time.perf_counter() - start_time
    finally:
        server.terminate()
        server.wait(10)
    assert all(r.ok for r in responses) and [r.parsed for r in responses] == [None] * 4
    assert sum(r.usage.calls for r in responses) == 5  # one 503, retried
    assert 0.4 <= elapsed < 3.0  # the 503 was answered after the latency too, then the retry: two latencies


def test_openai_server_subprocess(tmp_path):
    server, url = start("openai", tmp_path)
    try:
        oracle = OpenAICompatibleOracle(model="m", base_url=url + "/v1")
        (response,) = oracle.generate([OracleRequest(prompt="hello there")], progress=False)
    finally:
        server.terminate()
        server.wait(10)
    assert response.ok and response.text == '{"answer": "Answer to: hello there"}'
    assert response.usage.input_tokens == 2


def test_a_server_quota_from_the_command_line(tmp_path):
    server, url = start("openai", tmp_path, "--quota", "2:60")
    try:
        oracle = OpenAICompatibleOracle(model="m", base_url=url + "/v1", max_retries=0, max_concurrency=1)
        responses = oracle.generate([OracleRequest(prompt=f"q{i}") for i in range(3)], progress=False)
    finally:
        server.terminate()
        server.wait(10)
    assert [r.error for r in responses] == [None, None, "http_429"]  # the third call in a minute is refused


def test_a_request_cut_off_by_a_killed_client_is_neither_answered_nor_counted():
    """A client SIGKILLed after sending a request's headers but not all of its body: the server must not answer an
    empty call (it was counted as a call with the prompt "", one distinct prompt too many in the scale benchmark)."""
    with GeminiServer(responder=gemini_responder) as server:
        port = int(server.url.rsplit(":", 1)[1])
        head = "POST /v1beta/models/m:generateContent HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(head.encode() + b'{"contents": [')  # the rest never comes
        oracle = GeminiOracle(api_key="k", model="m", http_options={"base_url": server.url})
        request = OracleRequest(prompt='Return JSON: {"verdict": "Pass"}', template="t@1")
        assert oracle.generate([request], progress=False)[0].ok  # the server still answers the next client
    assert server.prompts == {request.prompt: 1} and server.requests["generateContent"] == 1
