"""What the fake LLM servers share: a threaded HTTP server on 127.0.0.1, request counting, scripted faults, a CLI.

Both servers (`tests.servers.gemini`, `tests.servers.openai`) are real HTTP servers: the real clients
(google-genai, httpx) talk to them over TCP, so retries, timeouts and headers are exercised end to end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULT_KINDS = (
    "429",
    "500",
    "503",
    "timeout",
    "malformed",
    "safety",
    "prompt_blocked",
    "max_tokens",
    "http_400",
    "http_403",
)


@dataclass
class Call:
    """One generation request as a server saw it.

    Args:
        prompt: the user text. system: the system instruction, if any. schema: the JSON schema asked for, if any.
        model: the model named in the request.
    """

    prompt: str
    system: str | None = None
    schema: dict[str, Any] | None = None
    model: str = ""


# A responder turns a call into the text of the answer (usually JSON).
Responder = Callable[[Call], str]


@dataclass
class Fault:
    """A scripted failure: `kind` (one of `FAULT_KINDS`) for the next `times` calls whose prompt contains `match`.

    `retry_after` (seconds) goes into the Retry-After header of a 429; `delay` is how long a "timeout" sleeps.
    """

    kind: str
    match: str = ""
    times: int = 1
    retry_after: float | None = None
    delay: float = 5.0


def example_for_schema(schema: dict[str, Any] | None, prompt: str, name: str = "value") -> Any:
    """A small instance of a JSON schema (OpenAPI or JSON-schema spelling), derived from the prompt."""
    if not schema:
        return {"answer": f"Answer to: {prompt[:60]}"}
    kind = str(schema.get("type", "object")).lower()
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example_for_schema(schema["anyOf"][0], prompt, name)
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: example_for_schema(sub, prompt, key) for key, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [example_for_schema(schema.get("items", {}), prompt, name) for _ in range(count)]
    if kind in ("integer", "number"):
        return int(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return f"{name}: {prompt[:80]}"


def schema_responder(call: Call) -> str:
    """The default responder: valid JSON for the requested schema (or a plain answer when none is asked)."""
    return json.dumps(example_for_schema(call.schema, call.prompt))


def count_tokens(text: str) -> int:
    """The fake servers' tokenizer: whitespace words (deterministic, easy to predict in tests)."""
    return len(text.split())


class FakeLLMServer:
    """A real HTTP server on 127.0.0.1 in a background thread, with counters and a fault script.

    Args:
        responder: builds the answer text of each call (default [`schema_responder`]).
        latency: seconds every generation call waits before answering (simulated model time).
        port: 0 picks a free port.

    Counters: `requests[endpoint]` (every HTTP request, faults included) and `prompts[prompt]` (generation calls per
    prompt, batch rows included). `headers` keeps the last request's headers.

    Whole-server behaviours, for quota and outage tests:

    - `quota = (n, seconds)`: generation calls past `n` in any sliding window of `seconds` are answered 429 with a
      `Retry-After` (the time until the window has room); `arrivals` records when each generation call arrived
      (429s included) and `max_in_window(seconds)` the most of them in any window;
    - `reject_status = 401`: every request is answered with that status (a revoked or wrong API key);
    - `down = True`: every request is dropped without an answer (a network outage).
    """

    def __init__(self, responder: Responder | None = None, latency: float = 0.0, port: int = 0):
        self.responder = responder or schema_responder
        self.latency = latency
        self.requests: Counter[str] = Counter()
        self.prompts: Counter[str] = Counter()
        self.headers: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.current = threading.local()  # the request being served by this thread: `raw` bytes and `headers`
        self.quota: tuple[int, float] | None = None
        self.arrivals: list[float] = []
        self.reject_status: int | None = None
        self.down = False
        self._admitted: list[float] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLMServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------------------------------
    def add_fault(self, kind: str, match: str = "", times: int = 1, **options: Any) -> None:
        """Scripts `kind` for the next `times` calls whose prompt contains `match` (see [`Fault`])."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose one of {FAULT_KINDS}")
        with self._lock:
            self.faults.append(Fault(kind, match, times, **options))

    def take_fault(self, prompt: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.match in prompt and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    # -- protocol (subclasses) -------------------------------------------------------------------------------------
    def route(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        """Answers one HTTP request: (status, JSON body or raw bytes, extra headers). Calls [`count`] first."""
        raise NotImplementedError

    def quota_retry_after(self) -> float | None:
        """Records a generation call's arrival; past the `quota`, the seconds until its window has room, else None."""
        with self._lock:
            now = time.monotonic()
            self.arrivals.append(now)
            if self.quota is None:
                return None
            limit, window = self.quota
            # Only the calls that were let through count against the quota, as a real rate limiter counts them.
            recent = [t for t in self._admitted if t > now - window]
            if len(recent) >= limit:
                self._admitted = recent
                return max(0.001, recent[0] + window - now)
            self._admitted = [*recent, now]
            return None

    def max_in_window(self, seconds: float) -> int:
        """The most generation calls that arrived within any `seconds` (measured at the server)."""
        times, most, start = sorted(self.arrivals), 0, 0
        for end, arrival in enumerate(times):
            while arrival - times[start] >= seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    def count(self, endpoint: str, prompts: list[str] = ()) -> None:
        """Counts a request on arrival (before any latency, so a client that times out is still counted)."""
        with self._lock:
            self.requests[endpoint] += 1
            self.prompts.update(prompts)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs: clients reuse their connections
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:  # the client died mid-request (a SIGKILL): no call to answer, or to count
                    self.close_connection = True
                    return
                server.headers = {k.lower(): v for k, v in self.headers.items()}
                if server.down:  # an outage: the connection drops without an answer
                    server.count("dropped")
                    self.close_connection = True
                    return
                # What a route may need beyond the JSON body (a file upload's bytes, its headers), per thread.
                server.current.raw, server.current.headers = raw, server.headers
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:  # not JSON: a file upload's bytes, left to the route in `server.current.raw`
                    body = {}
                if server.reject_status is not None:
                    server.count("rejected")
                    message = "API key not valid. Please pass a valid API key."
                    status, headers = server.reject_status, {}
                    payload = {"error": {"code": status, "message": message, "status": "UNAUTHENTICATED"}}
                else:
                    status, payload, headers = server.route(method, self.path, body)
                # A route answers JSON, or bytes as they are (a file download).
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self._serve("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters, not logs
                pass

        return Handler

    def simulate_latency(self, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "timeout":
            time.sleep(fault.delay)
        elif self.latency:
            time.sleep(self.latency)


def match_path(pattern: str, path: str) -> re.Match[str] | None:
    return re.fullmatch(pattern, path.split("?")[0])


def load_responder(spec: str | None) -> Responder | None:
    """`"package.module:function"` -> that function (for servers started from the command line)."""
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def serve_from_command_line(server_class: type[FakeLLMServer], description: str) -> None:
    """`python -m tests.servers.<name> --port 0 --port-file FILE --latency 0.2 --responder module:function
    [--fault 429::2] [--quota 600:60]`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the chosen port (written atomically)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each generation call takes")
    parser.add_argument("--responder", help="module:function turning a Call into answer text")
    parser.add_argument("--fault", action="append", default=[], help="KIND[:MATCH[:TIMES]], e.g. 429::2")
    parser.add_argument("--quota", help="N:SECONDS: 429 past N generation calls in any SECONDS (see `quota`)")
    args = parser.parse_args()
    server = server_class(responder=load_responder(args.responder), latency=args.latency, port=args.port)
    if args.quota:
        calls, seconds = args.quota.split(":")
        server.quota = (int(calls), float(seconds))
    for spec in args.fault:
        kind, match, times = (spec.split(":") + ["", "1"])[:3]
        server.add_fault(kind, match, int(times or 1))
    if args.port_file:
        temp = args.port_file.with_name(args.port_file.name + ".tmp")
        temp.write_text(str(server.port))
        os.replace(temp, args.port_file)
    print(f"{server_class.__name__} listening on {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
