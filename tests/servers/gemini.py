"""A real HTTP server speaking the Gemini REST protocol that google-genai uses, with scripted faults.

Endpoints (under `/v1beta`, or `/v1` which recent google-genai releases use):

- `POST /models/{model}:generateContent`: one generation.
- `POST /models/{model}:batchGenerateContent`: creates a batch job from inlined requests (answered at once and kept).
- `GET /batches/{id}`: the job's state; `RUNNING` for the first `batch_polls_until_done - 1` polls, then
  `SUCCEEDED` with the inlined responses in request order (or `batch_final_state`, e.g. `"BATCH_STATE_FAILED"`).
- `GET /batches`: every job, `pageSize` (default 50) per page with a `nextPageToken`, as `client.batches.list`
  pages through them.
- The Files API, as `client.files.upload` / `download` / `get` / `delete` speak it: `POST /upload/v1beta/files`
  starts a resumable upload (answering an `X-Goog-Upload-URL`), `POST` to that URL sends the bytes (`upload,
  finalize`), `GET /files/{id}` and `DELETE /files/{id}`, `GET /files/{id}:download?alt=media` the bytes of a
  result file.

Batch jobs at scale:

- a job whose source is an uploaded JSONL file (`src="files/..."`, one `{"key", "request"}` per line) answers into
  a result file (`output.responsesFile`), one `{"key", "response"}` or `{"key", "error"}` line per request;
- an inline job whose request body is larger than `inline_limit_bytes` is refused with 400, as Google refuses
  inline jobs past 20 MB;
- `batch_max_active`: creating a job while that many are unfinished answers 429 (Google's concurrent-jobs limit);
  `peak_active_batches` records the most jobs that were unfinished at once, `peak_concurrent_creates` the most
  create calls being answered at once;
- `batch_outcomes`: final states for the next jobs created, in order (then `batch_final_state`): an
  `"BATCH_STATE_EXPIRED"`, `"BATCH_STATE_FAILED"` or `"BATCH_STATE_CANCELLED"` job ends with no output; a row's
  fault still makes a partial failure of a succeeded job; `batch_drop_rows` leaves the next that many rows out of
  their succeeded jobs' outputs (answered by nobody);
- `batch_create_delay`: seconds a create call waits *after* the job is registered, before answering (the window in
  which a client can be killed after the server accepted its job).

Counters (in `requests`): `batchGenerateContent`, `batches.get`, `batches.list`, `files.upload` (one per file
started), `files.upload.bytes` (one per chunk), `files.get`, `files.download`, `files.delete`.

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
        [--fault 429::2] [--quota 600:60]
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers.common import Call, FakeLLMServer, Fault, count_tokens, match_path, serve_from_command_line

MODEL_PATH = r"/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<method>generateContent|batchGenerateContent)"
BATCH_PATH = r"/v1(?:beta)?/batches/(?P<id>[^/]+)"
BATCH_LIST_PATH = r"/v1(?:beta)?/batches"
UPLOAD_PATH = r"/upload/v1(?:beta)?/files"
FILE_PATH = r"/v1(?:beta)?/files/(?P<id>[^/:]+)"
DOWNLOAD_PATH = r"/v1(?:beta)?/files/(?P<id>[^/:]+):download"
TERMINAL_STATES = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
INLINE_LIMIT_BYTES = 20 * 1000 * 1000


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
        inline_limit_bytes: int = INLINE_LIMIT_BYTES,
        batch_max_active: int | None = None,
        batch_create_delay: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.thoughts_tokens = thoughts_tokens
        self.batch_polls_until_done = batch_polls_until_done
        self.batch_final_state = batch_final_state
        self.inline_limit_bytes = inline_limit_bytes
        self.batch_max_active = batch_max_active
        self.batch_create_delay = batch_create_delay
        self.batch_outcomes: list[str] = []
        self.batch_drop_rows = 0
        self.peak_active_batches = 0
        self.creating = self.peak_concurrent_creates = 0  # create calls being answered now, and the most at once
        self.batches: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}  # name -> {"meta": File resource, "data": bytes}
        self._uploads: dict[str, dict[str, Any]] = {}  # upload id -> {"meta", "data"} of an upload under way
        self._batch_ids = itertools.count(1)
        self._file_ids = itertools.count(1)

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

    def route(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        if method == "POST" and (found := match_path(MODEL_PATH, path)):
            if found["method"] == "generateContent":
                return self.generate_content(found["model"], body)
            return self.create_batch(found["model"], body)
        if method == "GET" and (found := match_path(BATCH_PATH, path)):
            return self.get_batch(found["id"])
        if method == "GET" and match_path(BATCH_LIST_PATH, path):
            return self.list_batches(path)
        if method == "POST" and match_path(UPLOAD_PATH, path):
            return self.upload_file(path, body)
        if method == "GET" and (found := match_path(DOWNLOAD_PATH, path)):
            return self.download_file(found["id"])
        if method in ("GET", "DELETE") and (found := match_path(FILE_PATH, path)):
            return self.get_or_delete_file(method, found["id"])
        self.count("unknown")
        return 404, error_body(404, "NOT_FOUND", f"no route for {method} {path}"), {}

    def generate_content(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        call = call_from_request(model, body)
        self.count("generateContent", [call.prompt])
        if (wait := self.quota_retry_after()) is not None:
            code, status, message = HTTP_FAULTS["429"]
            return code, error_body(code, status, message), {"Retry-After": f"{wait:.3f}"}
        fault = self.take_fault(call.prompt)
        self.simulate_latency(fault)
        if fault is not None and fault.kind in HTTP_FAULTS:
            code, status, message = HTTP_FAULTS[fault.kind]
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return code, error_body(code, status, message), headers
        return 200, self.answer(call, fault), {}

    def batch_row(self, call: Call, key: str | None = None) -> dict[str, Any]:
        """One answered row of a batch job: its response, or its error (a google.rpc.Status) for an HTTP fault."""
        fault = self.take_fault(call.prompt)
        if fault is not None and fault.kind in HTTP_FAULTS:
            code, _, message = HTTP_FAULTS[fault.kind]
            item: dict[str, Any] = {"error": {"code": GRPC_CODES[code], "message": message}}
        else:
            item = {"response": self.answer(call, fault)}
        return item if key is None else {"key": key, **item}

    def drop_rows(self, rows: list[dict[str, Any]], final_state: str) -> list[dict[str, Any]]:
        """`rows` without its first rows while `batch_drop_rows` lasts (only jobs that will succeed lose rows)."""
        if final_state != "BATCH_STATE_SUCCEEDED":
            return rows
        dropped = min(self.batch_drop_rows, len(rows))
        self.batch_drop_rows -= dropped
        return rows[dropped:]

    def active_batches(self) -> int:
        return sum(1 for job in self.batches.values() if not job["done"])

    def create_batch(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.creating += 1
            self.peak_concurrent_creates = max(self.peak_concurrent_creates, self.creating)
        try:
            return self._create_batch(model, body)
        finally:
            with self._lock:
                self.creating -= 1

    def _create_batch(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        batch = body["batch"]
        input_config = batch["inputConfig"]
        if "fileName" in input_config:
            lines = self.read_jsonl(input_config["fileName"])
            calls = [call_from_request(model, line["request"]) for line in lines]
        else:
            rows = input_config["requests"]["requests"]
            calls = [call_from_request(model, row["request"]) for row in rows]
        self.count("batchGenerateContent", [call.prompt for call in calls])
        if "fileName" not in input_config and len(self.current.raw) > self.inline_limit_bytes:
            message = f"Request payload size exceeds the limit: {self.inline_limit_bytes} bytes."
            return 400, error_body(400, "INVALID_ARGUMENT", message), {}
        with self._lock:
            if self.batch_max_active is not None and self.active_batches() >= self.batch_max_active:
                code, status, message = HTTP_FAULTS["429"]
                return code, error_body(code, status, message), {}
            name = f"batches/job{next(self._batch_ids)}"
            final_state = self.batch_outcomes.pop(0) if self.batch_outcomes else self.batch_final_state
            self.batches[name] = {
                "model": f"models/{model}",
                "display_name": batch.get("displayName"),
                "polls": 0,
                "done": False,
                "final_state": final_state,
            }
            self.peak_active_batches = max(self.peak_active_batches, self.active_batches())
        job = self.batches[name]
        if "fileName" in input_config:
            results = [self.batch_row(call, line.get("key")) for line, call in zip(lines, calls)]
            results = self.drop_rows(results, final_state)
            data = "".join(json.dumps(item) + "\n" for item in results).encode()
            job["responses_file"] = self.add_file(f"results of {name}", "application/jsonl", data, generated=True)
        else:
            responses = []
            for row, call in zip(rows, calls):
                item = self.batch_row(call)
                if "metadata" in row:
                    item["metadata"] = row["metadata"]
                responses.append(item)
            job["responses"] = self.drop_rows(responses, final_state)
        if self.batch_create_delay:
            time.sleep(self.batch_create_delay)  # registered already: a client killed now has a job it never heard of
        return 200, self.batch_operation(name), {}

    def batch_operation(self, name: str) -> dict[str, Any]:
        job = self.batches[name]
        done = job["polls"] >= self.batch_polls_until_done
        state = job["final_state"] if done else ("BATCH_STATE_RUNNING" if job["polls"] else "BATCH_STATE_PENDING")
        job["done"] = job["done"] or (done and state in TERMINAL_STATES)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": job["model"],
            "name": name,
            "state": state,
            "createTime": "2026-01-01T00:00:00Z",
        }
        if job["display_name"] is not None:
            metadata["displayName"] = job["display_name"]
        if done and state == "BATCH_STATE_SUCCEEDED":
            if "responses_file" in job:
                metadata["output"] = {"responsesFile": job["responses_file"]}
            else:
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": job["responses"]}}
        return {"name": name, "metadata": metadata, "done": done}

    def get_batch(self, job_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.count("batches.get")
        name = f"batches/{job_id}"
        if name not in self.batches:
            return 404, error_body(404, "NOT_FOUND", f"{name} not found"), {}
        with self._lock:
            self.batches[name]["polls"] += 1
            return 200, self.batch_operation(name), {}

    def list_batches(self, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One page of jobs, newest first, without advancing any job (a listing is not a poll)."""
        self.count("batches.list")
        query = parse_qs(urlsplit(path).query)
        size = int(query.get("pageSize", ["50"])[0])
        start = int(query.get("pageToken", ["0"])[0])
        names = list(reversed(self.batches))
        with self._lock:
            page = [self.batch_operation(name) for name in names[start : start + size]]
        answer: dict[str, Any] = {"operations": page}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return 200, answer, {}

    # -- Files API -------------------------------------------------------------------------------------------------
    def add_file(self, display_name: str, mime_type: str, data: bytes, generated: bool = False) -> str:
        name = f"files/file{next(self._file_ids)}"
        meta = {
            "name": name,
            "displayName": display_name,
            "mimeType": mime_type,
            "sizeBytes": str(len(data)),
            "state": "ACTIVE",
            "source": "GENERATED" if generated else "UPLOADED",
        }
        if generated:
            meta["downloadUri"] = f"{self.url}/v1beta/{name}:download?alt=media"
        self.files[name] = {"meta": meta, "data": data}
        return name

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.files[name]["data"].decode().splitlines() if line.strip()]

    def upload_file(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The resumable upload protocol: a `start` call answers the upload URL, then chunks until `finalize`."""
        headers = self.current.headers
        command = headers.get("x-goog-upload-command", "")
        if command == "start":
            self.count("files.upload")
            upload_id = str(next(self._file_ids))
            self._uploads[upload_id] = {"meta": body.get("file", {}), "data": b""}
            url = f"{self.url}/upload/v1beta/files?upload_id={upload_id}"
            return 200, {}, {"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"}
        self.count("files.upload.bytes")
        upload_id = parse_qs(urlsplit(path).query)["upload_id"][0]
        upload = self._uploads[upload_id]
        upload["data"] += self.current.raw
        if "finalize" not in command:
            return 200, {}, {"X-Goog-Upload-Status": "active"}
        del self._uploads[upload_id]
        meta = upload["meta"]
        name = self.add_file(meta.get("displayName", ""), meta.get("mimeType", ""), upload["data"])
        return 200, {"file": self.files[name]["meta"]}, {"X-Goog-Upload-Status": "final"}

    def get_or_delete_file(self, method: str, file_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        name = f"files/{file_id}"
        self.count("files.get" if method == "GET" else "files.delete")
        if name not in self.files:
            return 404, error_body(404, "NOT_FOUND", f"{name} not found"), {}
        if method == "DELETE":
            del self.files[name]
            return 200, {}, {}
        return 200, self.files[name]["meta"], {}

    def download_file(self, file_id: str) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        self.count("files.download")
        name = f"files/{file_id}"
        if name not in self.files:
            return 404, error_body(404, "NOT_FOUND", f"{name} not found"), {}
        return 200, self.files[name]["data"], {}


if __name__ == "__main__":
    serve_from_command_line(GeminiServer, "A fake Gemini REST server on 127.0.0.1 (see tests/servers/gemini.py).")
