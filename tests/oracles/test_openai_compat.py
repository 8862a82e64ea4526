"""OpenAICompatibleOracle: real async HTTP against a real local chat-completions server with injected faults."""

from __future__ import annotations

import json
import logging
import time

import pytest
from pydantic import BaseModel

from tests.servers.common import Call
from tests.servers.openai import OpenAIServer
from trl_crome.oracles import CachedOracle, OpenAICompatibleOracle, OracleFatalError, OracleRequest, Usage

FAKE_KEY = "sk-FAKE-LEAK-CHECK-9876543210"


class Rewrite(BaseModel):
    text: str


def rewrite_responder(call: Call) -> str:
    return json.dumps({"text": call.prompt[::-1]})


@pytest.fixture
def server():
    with OpenAIServer(responder=rewrite_responder) as running:
        yield running


def make_oracle(server: OpenAIServer, **kwargs) -> OpenAICompatibleOracle:
    kwargs = {"timeout": 2.0, "backoff_base": 0.01, "max_retries": 3, **kwargs}
    return OpenAICompatibleOracle(model="smol", base_url=server.url + "/v1", api_key=FAKE_KEY, **kwargs)


def ask(*prompts: str, system: str | None = None) -> list[OracleRequest]:
    return [OracleRequest(prompt=p, template="t@1", system=system, schema=Rewrite) for p in prompts]


def test_json_schema_answers_usage_and_auth_header(server):
    oracle = make_oracle(server, max_concurrency=3)
    responses = oracle.generate(ask("one two", "three", "four five six", system="you rewrite"), progress=False)
    assert [r.parsed for r in responses] == [{"text": "owt eno"}, {"text": "eerht"}, {"text": "xis evif ruof"}]
    assert responses[0].usage == Usage(input_tokens=4, output_tokens=3, calls=1)
    assert server.headers["authorization"] == f"Bearer {FAKE_KEY}"
    body = server.last_body
    assert body["response_format"]["json_schema"]["schema"] == Rewrite.model_json_schema()
    assert body["messages"][0] == {"role": "system", "content": "you rewrite"}
    assert body["max_tokens"] == 1024 and body["temperature"] == 0.0


def test_retries_retry_after_timeouts_and_final_reasons(server):
    server.add_fault("429", match="rate", retry_after=0.4)
    server.add_fault("500", match="down", times=10)
    server.add_fault("timeout", match="slow", delay=1.2)
    server.add_fault("max_tokens", match="long")
    server.add_fault("safety", match="unsafe")
    server.add_fault("malformed", match="garbled", times=2)
    oracle = make_oracle(server, max_retries=2, timeout=0.4)
    start = time.perf_counter()
    prompts = ["rate", "down", "slow", "long", "unsafe", "garbled"]
    responses = oracle.generate(ask(*prompts), progress=False)
    assert time.perf_counter() - start >= 0.4
    assert [r.error for r in responses] == [None, "http_500", None, "truncated", "safety", "malformed"]
    assert [r.usage.calls for r in responses] == [2, 3, 2, 1, 1, 2]
    assert server.prompts == {"rate": 2, "down": 3, "slow": 2, "long": 1, "unsafe": 1, "garbled": 2}
    assert [r.transient for r in responses] == [False, True, False, False, False, False]


def test_server_without_structured_output_falls_back_to_json_in_text(server):
    server.reject_response_format = True
    server.responder = lambda call: 'Sure! Here it is:\n```json\n{"text": "' + call.prompt.upper() + '"}\n```'
    oracle = make_oracle(server)
    responses = oracle.generate(ask("abc", "de"), progress=False)
    assert [r.parsed for r in responses] == [{"text": "ABC"}, {"text": "DE"}]
    assert not oracle.json_schema_supported and "response_format" not in server.last_body


def test_rejected_key_raises_without_leaking_it(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.add_fault("http_403")
    oracle = CachedOracle(make_oracle(server), tmp_path)
    with pytest.raises(OracleFatalError, match="403") as raised:
        oracle.generate(ask("x"), progress=False)
    oracle.generate(ask("y"), progress=False)
    texts = [caplog.text, str(raised.value), repr(oracle), str(vars(oracle.oracle))]
    texts += [path.read_bytes().decode(errors="ignore") for path in tmp_path.rglob("*") if path.is_file()]
    assert len(texts) >= 5 and not any(FAKE_KEY in text for text in texts)
