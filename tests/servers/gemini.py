"""A real HTTP server speaking the Gemini REST protocol that google-genai uses, with scripted faults.

Endpoints (under `/v1beta`, or `/v1` which recent google-genai releases use):

- `POST /models/{model}:generateContent`: one generation.
- `POST /models/{model}:batchGenerateContent`: creates a batch job from inlined requests (answered at once and kept).
- `GET /batches/{id}`: the job's state; `RUNNING` for the first `batch_polls_until_done - 1` polls, then
  `SUCCEEDED` with the inlined responses in request order (or `batch_final_state`, e.g. `"BATCH_STATE_FAILED"`).

Faults (`server.add_fault(kind, match="", times=1, retry_after=None, delay=5.0)`) apply to the next calls whose
prompt contains `match`:

- `"429"` (with `Retry-After: retry_after`), `"500"`, `"503"`, `"http_400"`, `"http_403"`: an error status;
- `"timeout"`: sleeps `delay` seconds (past the client's timeout), then answers;
- `"malformed"`: answer text that is not JSON;
- `"safety"`: candidate finishReason SAFETY, no text; `"prompt_blocked"`: promptFeedback.blockReason SAFETY;
- `"max_tokens"`: finishReason MAX_TOKENS with half the text.

In a batch, a row's fault becomes that row's answer, or its error (a google.rpc.Status with the gRPC code:
429 -> 8, 500 -> 13, 503 -> 14, 400 -> 3).
Token counts are whitespace words; `thoughts_tokens` adds a thoughtsTokenCount to each answer.

In a test::

    with GeminiServer(responder=lambda call: '{"label": "ok"}') as server:
        client = genai.Client(api_key="k", http_options={"base_url": server.url})

From a shell or a subprocess (the port is written atomically to the port file)::

    python -m tests.servers.gemini --port 0 --port-file /tmp/port --latency 0.2 [--responder module:function]
        [--fault 429::2]
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.servers.common import Call, FakeLLMServer, Fault, count_tokens, match_path, serve_from_command_line

MODEL_PATH = r"/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<method>generateContent|batchGenerateContent)"
BATCH_PATH = r"/v1(?:beta)?/batches/(?P<id>[^/]+)"


def call_from_request(model: str, request: dict[str, Any]) -> Call:
    """The prompt, system instruction and schema of a GenerateContentRequest body."""
    prompt = "".join(part.get("text", "") for content in request.get("contents", []) for part in content["parts"])
    system_parts = (request.get("systemInstruction") or {}).get("parts", [])
    config = request.get("generationConfig", {})
    return Call(
        prompt=prompt,
        system="".join(part.get("text", "") for part in system_parts) or None,
        schema=config.get("responseSchema") or config.get("responseJsonSchema"),
        model=model,
    )


def error_body(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


HTTP_FAULTS = {
    "429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "500": (500, "INTERNAL", "An internal error has occurred."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "http_400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "http_403": (403, "PERMISSION_DENIED", "The caller does not have permission."),
}

# A failed batch row carries a google.rpc.Status, whose codes are gRPC's, not HTTP's.
GRPC_CODES = {400: 3, 429: 8, 500: 13, 503: 14}


class GeminiServer(FakeLLMServer):
    """See the module docstring. Extra args: `thoughts_tokens`, `batch_polls_until_done`, `batch_final_state`."""

    def __init__(
        self,
        *args: Any,
        thoughts_tokens: int = 0,
        batch_polls_until_done: int = 2,
        batch_final_state: str = "BATCH_STATE_SUCCEEDED",
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.thoughts_tokens = thoughts_tokens
        self.batch_polls_until_done = batch_polls_until_done
        self.batch_final_state = batch_final_state
        self.batches: dict[str, dict[str, Any]] = {}
        self._batch_ids = itertools.count(1)

    def answer(self, call: Call, fault: Fault | None) -> dict[str, Any]:
        """A GenerateContentResponse body for `call` (faults that shape the answer applied)."""
        prompt_tokens = count_tokens(call.prompt) + count_tokens(call.system or "")
        if fault is not None and fault.kind == "prompt_blocked":
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
            }
        text = self.responder(call)
        finish = "STOP"
        if fault is not None and fault.kind == "malformed":
            text = text[: len(text) // 2] + " <not json"
        elif fault is not None and fault.kind == "max_tokens":
            text, finish = text[: len(text) // 2], "MAX_TOKENS"
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish}
        if fault is not None and fault.kind == "safety":
            candidate = {"finishReason": "SAFETY", "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT"}]}
            text = ""
        output_tokens = count_tokens(text)
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens + self.thoughts_tokens,
        }
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": call.model}

    def route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "POST" and (found := match_path(MODEL_PATH, path)):
            if found["method"] == "generateContent":
                return self.generate_content(found["model"], body)
            return self.create_batch(found["model"], body)
        if method == "GET" and (found := match_path(BATCH_PATH, path)):
            return self.get_batch(found["id"])
        self.count("unknown")
        return 404, error_body(404, "NOT_FOUND", f"no route for {method} {path}"), {}

    def generate_content(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        call = call_from_request(model, body)
        self.count("generateContent", [call.prompt])
        fault = self.take_fault(call.prompt)
        self.simulate_latency(fault)
        if fault is not None and fault.kind in HTTP_FAULTS:
            code, status, message = HTTP_FAULTS[fault.kind]
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return code, error_body(code, status, message), headers
        return 200, self.answer(call, fault), {}

    def create_batch(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        rows = body["batch"]["inputConfig"]["requests"]["requests"]
        calls = [call_from_request(model, row["request"]) for row in rows]
        self.count("batchGenerateContent", [call.prompt for call in calls])
        responses = []
        for row, call in zip(rows, calls):
            fault = self.take_fault(call.prompt)
            if fault is not None and fault.kind in HTTP_FAULTS:
                code, _, message = HTTP_FAULTS[fault.kind]
                item: dict[str, Any] = {"error": {"code": GRPC_CODES[code], "message": message}}
            else:
                item = {"response": self.answer(call, fault)}
            if "metadata" in row:
                item["metadata"] = row["metadata"]
            responses.append(item)
        name = f"batches/job{next(self._batch_ids)}"
        self.batches[name] = {"model": f"models/{model}", "responses": responses, "polls": 0}
        return 200, self.batch_operation(name), {}

    def batch_operation(self, name: str) -> dict[str, Any]:
        job = self.batches[name]
        done = job["polls"] >= self.batch_polls_until_done
        state = self.batch_final_state if done else ("BATCH_STATE_RUNNING" if job["polls"] else "BATCH_STATE_PENDING")
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": job["model"],
            "name": name,
            "state": state,
            "createTime": "2026-01-01T00:00:00Z",
        }
        if done and state == "BATCH_STATE_SUCCEEDED":
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": job["responses"]}}
        return {"name": name, "metadata": metadata, "done": done}

    def get_batch(self, job_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.count("batches.get")
        name = f"batches/{job_id}"
        if name not in self.batches:
            return 404, error_body(404, "NOT_FOUND", f"{name} not found"), {}
        self.batches[name]["polls"] += 1
        return 200, self.batch_operation(name), {}


if __name__ == "__main__":
    serve_from_command_line(GeminiServer, "A fake Gemini REST server on 127.0.0.1 (see tests/servers/gemini.py).")
