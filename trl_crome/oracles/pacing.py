"""Admission control for the online backends: quota pacing, concurrency that adapts to 429s, and an outage breaker.

Every HTTP attempt of [`GeminiOracle`] and [`OpenAICompatibleOracle`] goes through one [`Throttle`]:

- **Pacing** (optional): at most `requests_per_minute` calls and `tokens_per_minute` input tokens per minute.
  Each call starts at least `60 / rpm` seconds after the previous one *actually* started (a busy event loop delays
  calls, it never bunches them), so the client sends at most `rpm * W / 60 + 1` calls in any window of `W` seconds:
  paced a little under the account's quota, a run neither stalls nor meets a 429.
- **Adaptive concurrency**: the calls in flight start at `max_concurrency`; a 429 halves the limit (at most once per
  `cooldown`) and pauses new calls for the server's `Retry-After` (else `cooldown`); each success adds `1 / limit`,
  so the limit grows back by one per round of successful calls.
- **Outage breaker**: when calls keep failing with transient errors (connection refused, timeouts, 429, 5xx) and
  none succeeds for `outage_timeout` seconds (`startup_timeout` before any call of the run has succeeded: a wrong
  URL), the next failed call raises [`OracleFatalError`]; retry waits are cut short so that a call is made when the
  patience runs out. The run stops; the answers already received are kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

from .base import OracleFatalError, OracleRequest, is_transient_error

CHARS_PER_TOKEN = 4  # a rough, deliberately generous estimate for English text, corrected by the real count later


def estimate_input_tokens(request: OracleRequest) -> int:
    """Input tokens of `request` before sending it (corrected with the server's count once it answers)."""
    return max(1, (len(request.prompt) + len(request.system or "")) // CHARS_PER_TOKEN)


@dataclass
class CallOutcome:
    """What a backend reports about one HTTP attempt made under [`Throttle.call`].

    `failure` is `None` when the API answered (whatever the answer: a safety block or malformed JSON still proves
    the API is up), else the reason (`"connection"`, `"timeout"`, `"http_429"`, ...). `input_tokens` is the server's
    count, when known; `retry_after` the server's `Retry-After` in seconds.
    """

    estimated_tokens: int
    failure: str | None = None
    input_tokens: int | None = None
    retry_after: float | None = None


@dataclass
class OutageBreaker:
    """Stops a run whose oracle is unreachable instead of letting it "finish" with nothing but failed calls.

    Trips when at least `min_failures` consecutive calls failed transiently and the failures have lasted
    `outage_timeout` seconds, or `startup_timeout` when no call of this oracle has succeeded yet.
    """

    outage_timeout: float = 120.0
    startup_timeout: float = 15.0
    min_failures: int = 8
    succeeded: bool = False
    streak: int = 0
    streak_start: float = 0.0
    reasons: Counter = field(default_factory=Counter)

    @property
    def patience(self) -> float:
        return self.outage_timeout if self.succeeded else self.startup_timeout

    def time_left(self) -> float:
        """Seconds until the current streak of failures may trip the breaker (infinite without a streak)."""
        return self.streak_start + self.patience - time.monotonic() if self.streak else float("inf")

    def record(self, failure: str | None, where: str) -> None:
        if failure is None or not is_transient_error(failure):
            self.succeeded, self.streak = True, 0
            self.reasons.clear()
            return
        now = time.monotonic()
        if self.streak == 0:
            self.streak_start = now
        self.streak += 1
        self.reasons[failure] += 1
        if self.streak >= self.min_failures and now - self.streak_start >= self.patience:
            reasons = ", ".join(f"{reason} x{count}" for reason, count in self.reasons.most_common())
            since = "since the last successful call" if self.succeeded else "and no call has succeeded yet"
            raise OracleFatalError(
                f"{where} looks unreachable: {self.streak} calls in a row failed over {now - self.streak_start:.0f} s "
                f"({reasons}) {since}. Stopping; the answers received so far are kept, so rerunning the same command "
                "once the oracle is reachable resumes without paying for them again."
            )


class Throttle:
    """Admission control shared by all the calls of one oracle (see the module docstring).

    Args:
        max_concurrency (`int`):
            Most calls in flight (the adaptive limit never exceeds it).
        requests_per_minute (`float`, *optional*):
            Calls per minute, retries included; `None` does not pace requests.
        tokens_per_minute (`float`, *optional*):
            Input tokens per minute (what Gemini's TPM quota counts), estimated before each call from the prompt's
            length and corrected by the server's count; `None` does not pace tokens.
        outage_timeout (`float`, defaults to `120.0`), startup_timeout (`float`, defaults to `15.0`):
            See [`OutageBreaker`].
        cooldown (`float`, defaults to `1.0`):
            Seconds between two halvings of the concurrency limit, and the pause after a 429 without `Retry-After`.
        where (`str`):
            How error messages name the oracle, e.g. its model or URL.
    """

    def __init__(
        self,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        outage_timeout: float = 120.0,
        startup_timeout: float = 15.0,
        cooldown: float = 1.0,
        where: str = "The oracle",
    ):
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.cooldown = cooldown
        self.where = where
        self.breaker = OutageBreaker(outage_timeout=outage_timeout, startup_timeout=startup_timeout)
        self.limit = float(max_concurrency)  # the adaptive concurrency limit
        self.rate_limited = 0  # 429s seen, for reports
        self._next_request = 0.0  # when the next call may start (monotonic seconds), request pacing
        self._next_tokens = 0.0  # the same for token pacing
        self._paused_until = 0.0
        self._last_decrease = -float("inf")
        self._lock = threading.Lock()  # the oracle may serve two event loops at once (one per thread)
        # Calls in flight are counted per event loop: asyncio primitives cannot be shared across loops.
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (
            f"Throttle(limit={self.limit:.1f}/{self.max_concurrency}, rpm={self.requests_per_minute}, "
            f"tpm={self.tokens_per_minute})"
        )

    def _gate(self) -> _Gate:
        loop = asyncio.get_running_loop()
        if loop not in self._gates:
            self._gates[loop] = _Gate()
        return self._gates[loop]

    @property
    def in_flight(self) -> int:
        """Calls in flight on the running event loop."""
        return self._gate().in_flight

    def _start_or_wait(self, tokens: int) -> float:
        """Seconds to wait before a call may start; 0 when it may start now, and then its start is booked."""
        with self._lock:
            now = time.monotonic()
            wait = max(self._paused_until, self._next_request, self._next_tokens) - now
            if wait > 0:
                return wait
            if self.requests_per_minute is not None:
                self._next_request = now + 60.0 / self.requests_per_minute
            if self.tokens_per_minute is not None:
                self._next_tokens = now + tokens * 60.0 / self.tokens_per_minute
            return 0.0

    def _settle_tokens(self, estimated: int, actual: int) -> None:
        if self.tokens_per_minute is not None and actual != estimated:
            with self._lock:
                self._next_tokens += (actual - estimated) * 60.0 / self.tokens_per_minute

    def retry_delay(self, delay: float) -> float:
        """`delay` before a retry, cut short so that a failing oracle is tried again when the breaker's patience
        runs out: an unreachable API is then reported at `startup_timeout` / `outage_timeout`, not one long
        backoff later."""
        return max(0.0, min(delay, self.breaker.time_left() + 0.05))

    def call(self, request: OracleRequest) -> _Call:
        """`async with throttle.call(request) as outcome:` around one HTTP attempt; fill `outcome` inside."""
        return _Call(self, CallOutcome(estimated_tokens=estimate_input_tokens(request)))

    async def _enter(self, outcome: CallOutcome) -> None:
        gate = self._gate()
        async with gate.condition:
            await gate.condition.wait_for(lambda: gate.in_flight < max(1, int(self.limit)))
            gate.in_flight += 1
        try:
            async with gate.pacing:  # one waiter at a time: the calls start in order, one interval apart
                # Checked again after each sleep: a 429 meanwhile may have paused every call.
                while (wait := self._start_or_wait(outcome.estimated_tokens)) > 0:
                    await asyncio.sleep(wait)
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        gate = self._gate()
        async with gate.condition:
            gate.in_flight -= 1
            gate.condition.notify_all()

    async def _exit(self, outcome: CallOutcome, completed: bool) -> None:
        await self._release()
        if not completed:  # cancelled or a fatal error: nothing to learn from it
            return
        if outcome.input_tokens is not None:
            self._settle_tokens(outcome.estimated_tokens, outcome.input_tokens)
        now = time.monotonic()
        if outcome.failure == "http_429":
            with self._lock:
                self.rate_limited += 1
                self._paused_until = max(
                    self._paused_until, now + (self.cooldown if outcome.retry_after is None else outcome.retry_after)
                )
                if now - self._last_decrease >= self.cooldown:
                    self.limit = max(1.0, self.limit / 2)
                    self._last_decrease = now
        elif outcome.failure is None:
            with self._lock:
                self.limit = min(float(self.max_concurrency), self.limit + 1.0 / self.limit)
        self.breaker.record(outcome.failure, self.where)  # may raise OracleFatalError


class _Gate:
    """The calls in flight on one event loop, the condition their waiters sleep on, and the lock of the pacing."""

    def __init__(self):
        self.in_flight = 0
        self.condition = asyncio.Condition()
        self.pacing = asyncio.Lock()


class _Call:
    """The async context manager returned by [`Throttle.call`]."""

    def __init__(self, throttle: Throttle, outcome: CallOutcome):
        self.throttle, self.outcome = throttle, outcome

    async def __aenter__(self) -> CallOutcome:
        await self.throttle._enter(self.outcome)
        return self.outcome

    async def __aexit__(self, kind, error, traceback) -> None:
        await self.throttle._exit(self.outcome, completed=kind is None)
