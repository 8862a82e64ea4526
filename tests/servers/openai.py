"""A real HTTP server speaking the OpenAI chat-completions protocol (as vLLM, TGI and llama.cpp serve it).

Endpoint: `POST /v1/chat/completions` (also `/chat/completions`). Pass `server.url + "/v1"` as the client's base URL.
The answer text comes from the responder; token counts are whitespace words. Faults (`server.add_fault(kind,
match="", times=1, retry_after=None, delay=5.0)`), for the next calls whose prompt contains `match`:

- `"429"` (with `Retry-After: retry_after`), `"500"`, `"503"`, `"http_400"`, `"http_403"`: an error status;
- `"timeout"`: sleeps `delay` seconds (past the client's timeout), then answers;
- `"malformed"`: answer text that is not JSON;
- `"safety"` / `"prompt_blocked"`: finish_reason `content_filter`, no content;
- `"max_tokens"`: finish_reason `length` with half the text.

`reject_response_format=True` makes it answer 400 to any request with a `response_format`, like a server without
structured output. `last_body` keeps the last request body.

From a shell or a subprocess::

    python -m tests.servers.openai --port 0 --port-file /tmp/port --latency 0.2 [--responder module:function]
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.servers.common import Call, FakeLLMServer, count_tokens, match_path, serve_from_command_line

CHAT_PATH = r"(?:/v1)?/chat/completions"

HTTP_FAULTS = {
    "429": (429, "rate_limit_exceeded", "Rate limit reached."),
    "500": (500, "server_error", "The server had an error while processing your request."),
    "503": (503, "server_error", "The engine is currently overloaded."),
    "http_400": (400, "invalid_request_error", "Invalid request."),
    "http_403": (403, "permission_denied", "You are not allowed to use this model."),
}


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class OpenAIServer(FakeLLMServer):
    """See the module docstring."""

    def __init__(self, *args: Any, reject_response_format: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reject_response_format = reject_response_format
        self.last_body: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method != "POST" or not match_path(CHAT_PATH, path):
            self.count("unknown")
            return 404, error_body(f"no route for {method} {path}", "not_found", 404), {}
        messages = body.get("messages", [])
        prompt = "".join(m["content"] for m in messages if m["role"] == "user")
        system = "".join(m["content"] for m in messages if m["role"] == "system") or None
        response_format = body.get("response_format") or {}
        schema = response_format.get("json_schema", {}).get("schema")
        call = Call(prompt=prompt, system=system, schema=schema, model=body.get("model", ""))
        self.count("chat.completions", [prompt])
        self.last_body = body
        if self.reject_response_format and response_format:
            return 400, error_body("response_format is not supported", "invalid_request_error", 400), {}
        if (wait := self.quota_retry_after()) is not None:
            code, kind, message = HTTP_FAULTS["429"]
            return code, error_body(message, kind, code), {"Retry-After": f"{wait:.3f}"}
        fault = self.take_fault(prompt)
        self.simulate_latency(fault)
        if fault is not None and fault.kind in HTTP_FAULTS:
            code, kind, message = HTTP_FAULTS[fault.kind]
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return code, error_body(message, kind, code), headers
        text: str | None = self.responder(call)
        finish = "stop"
        if fault is not None and fault.kind == "malformed":
            text = text[: len(text) // 2] + " <not json"
        elif fault is not None and fault.kind == "max_tokens":
            text, finish = text[: len(text) // 2], "length"
        elif fault is not None and fault.kind in ("safety", "prompt_blocked"):
            text, finish = None, "content_filter"
        prompt_tokens = count_tokens(prompt) + count_tokens(system or "")
        completion_tokens = count_tokens(text or "")
        return (
            200,
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "model": call.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            {},
        )


if __name__ == "__main__":
    serve_from_command_line(
        OpenAIServer, "A fake OpenAI-compatible server on 127.0.0.1 (see tests/servers/openai.py)."
    )
