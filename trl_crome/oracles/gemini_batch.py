"""The Gemini Batch API at scale: a bounded number of jobs in flight, inline or file input, resubmission of the rows a
job left unanswered, and resuming after a kill at any point without a second submission of an accepted job.

One [`BatchRunner`] answers the requests of one `GeminiOracle.astream` call:

1. **Adopt**: each job of an earlier run has a state file in `state_dir` that lists its requests' cache keys. A job
   that holds any of the requests asked now is taken over (polled, or submitted if it never was) for those requests.
2. **Plan**: the other requests are cut into jobs of `batch_size` rows, queued in request order.
3. **Submit** while fewer than `batch_max_jobs` jobs (and, optionally, `batch_max_enqueued_tokens` estimated input
   tokens) are in flight, and while the caller's `should_stop()` (a cost cap) allows: once it says stop, no new job
   is submitted (jobs already accepted are still collected: they are paid for) and the requests never sent are not
   yielded. A job's state file is written *before* its create call, with the unique display name the
   job is created under; the server's job name is added once the call returns. A run killed between the two (or a
   create call whose answer was lost) finds its job again by listing the account's batch jobs and matching the
   display name, so a job the server accepted is never submitted twice. Requests whose JSON exceeds
   `batch_inline_max_bytes` go as a JSONL file through the Files API instead of inline.
4. **Collect**: a finished job's answers (inline, or read line by line from its result file) are handed on at once.
   Rows it left unanswered (missing, or failed with a transient error: 429, 5xx, timeouts) and all the rows of a job
   that failed, expired or was cancelled go back to the front of the queue as a new job, at most `batch_resubmits`
   times; after that they are reported with their transient reason (so a cache does not store them). Only then is
   the job's state file removed (and its files deleted on the server): a run killed before resumes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
from google.genai import _common, batches, errors, types
from tqdm.auto import tqdm

from .base import (
    OracleFatalError,
    OracleRequest,
    OracleResponse,
    StopCheck,
    Usage,
    is_transient_error,
    parse_retry_after,
)
from .pacing import estimate_input_tokens

if TYPE_CHECKING:
    from .gemini import GeminiOracle

logger = logging.getLogger(__name__)

STATE_VERSION = 2
# A failed row of a batch job carries a google.rpc.Status: gRPC codes, mapped to the reasons of online calls.
GRPC_REASONS = {3: "http_400", 4: "timeout", 8: "http_429", 13: "http_500", 14: "http_503"}
SUCCEEDED = "JOB_STATE_SUCCEEDED"
# A listing carries each finished job with its inline answers (up to `batch_size` rows each): small pages keep the
# memory of the lookup after a resume bounded (100 jobs of 1,000 rows per page peaked at ~2 GB in the scale benchmark).
LIST_PAGE_SIZE = 10
SUBMITS_AT_ONCE = 2  # create calls (with their file uploads) in flight at once


@dataclass
class PlannedJob:
    """One batch job of this run, as its state file records it."""

    id: str  # a hash of its keys and attempt: the same requests always make the same id
    keys: list[str]
    display_name: str
    name: str | None = None  # "batches/..." once the server accepted it
    input_file: str | None = None  # "files/..." when the requests went through the Files API
    result_file: str | None = None  # "files/..." of a file job's answers
    attempt: int = 0  # 0 for a first submission, then one more per resubmission of unanswered rows
    tokens: int = 0  # estimated input tokens, for `batch_max_enqueued_tokens`
    model: str = ""
    version: int = STATE_VERSION
    created: float = field(default_factory=time.time)
    sent: float | None = None  # when its create call was last sent (time.time())

    @classmethod
    def new(cls, keys: list[str], model: str, tokens: int, attempt: int = 0) -> PlannedJob:
        job_id = hashlib.sha256("\n".join([str(attempt), *sorted(keys)]).encode()).hexdigest()[:32]
        # Unique per submission: a job of an earlier run over the same requests never matches it by mistake.
        display_name = f"trl-crome-{job_id[:16]}-{secrets.token_hex(4)}"
        return cls(id=job_id, keys=keys, display_name=display_name, attempt=attempt, tokens=tokens, model=model)


class _Refused(Exception):
    """The server refused a new job with 429 (too many jobs or enqueued tokens): wait for a running one to finish."""

    def __init__(self, retry_after: float | None):
        self.retry_after = retry_after


class BatchRunner:
    """Answers `requests` through the Batch API of `oracle` (see the module docstring); `run()` yields
    `(index, response)` as each job finishes."""

    def __init__(self, oracle: GeminiOracle, requests: Sequence[OracleRequest]):
        self.oracle = oracle
        self.requests = requests
        self.state_dir = oracle.state_dir
        self.max_jobs = oracle.batch_max_jobs  # lowered when the server refuses new jobs
        self.asking: dict[str, list[int]] = {}  # key -> indices of the requests asking for it
        for index, request in enumerate(requests):
            self.asking.setdefault(request.cache_key(oracle.model), []).append(index)
        self.calls: dict[str, int] = dict.fromkeys(self.asking, 0)  # rows sent per key, resubmissions included
        self._adopted: set[str] = set()  # ids of the jobs taken over from an earlier run
        self._sending = asyncio.Semaphore(SUBMITS_AT_ONCE)
        self._listing: dict[str, str] | None = None  # display name -> job name, from listing the account's jobs
        self._listed_at = 0.0  # when that listing was requested
        self._listing_lock = asyncio.Lock()  # one listing at a time, shared by the jobs looked up meanwhile
        self._settled_at = 0.0  # when every create call an earlier run left unanswered has arrived, or never will

    # -- the scheduler -------------------------------------------------------------------------------------------
    async def run(self, should_stop: StopCheck | None = None) -> AsyncIterator[tuple[int, OracleResponse]]:
        adopted = self._adopt()
        sent = [job.sent for job in adopted if job.sent is not None and job.name is None]
        self._settled_at = max(sent) + self.oracle.http_timeout if sent else 0.0
        claimed = {key for job in adopted for key in job.keys}
        queue = deque(adopted + self._plan([key for key in self.asking if key not in claimed]))
        running: dict[asyncio.Task, PlannedJob] = {}
        refusals = 0  # consecutive refusals with nothing in flight
        bar = tqdm(total=len(queue), desc=f"batch jobs {self.oracle.model}", unit="job", leave=False, disable=None)
        try:
            while queue or running:
                if should_stop is not None and should_stop():
                    # Nothing new is submitted; jobs the server accepted (in an earlier run too) are still collected.
                    queue = deque(job for job in queue if job.name is not None)
                    if not queue and not running:
                        break
                while queue and self._may_start(queue[0], running.values()):
                    job = queue.popleft()
                    running[asyncio.create_task(self._run_job(job))] = job
                bar.set_postfix(running=len(running), queued=len(queue), refresh=False)
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    job = running.pop(task)
                    try:
                        answered, unanswered = task.result()
                    except _Refused as refused:
                        queue.appendleft(job)
                        if running:  # the server's limit is below ours: stay under it from now on
                            self.max_jobs = len(running)
                            logger.info("Batch API refused a new job: %d jobs in flight from now on", self.max_jobs)
                            continue
                        refusals += 1
                        if refusals > self.oracle.retry.max_retries:
                            raise OracleFatalError(
                                f"The Batch API refused every new job {refusals} times in a row with 429 while none "
                                "of this run's jobs was in flight (another run's jobs, or the enqueued-token quota of "
                                f"{self.oracle.model}?): stopping. Rerun later to resume."
                            ) from None
                        await asyncio.sleep(self.oracle.retry.delay(refusals - 1, refused.retry_after))
                        continue
                    refusals = 0
                    for key, response in answered:
                        for item in self._deliver(key, response):
                            yield item
                    stopping = should_stop is not None and should_stop()
                    if unanswered and job.attempt < self.oracle.batch_resubmits and not stopping:
                        tokens = sum(estimate_input_tokens(self._request(key)) for key in unanswered)
                        queue.appendleft(PlannedJob.new(unanswered, self.oracle.model, tokens, job.attempt + 1))
                        bar.total += 1
                        logger.info("Resubmitting the %d unanswered requests of %s", len(unanswered), job.name)
                    else:
                        for key in unanswered:
                            failed = OracleResponse(error="batch_failed")
                            for item in self._deliver(key, failed):
                                yield item
                    # Only now, every answer handed on (and stored by a cache): a run killed before resumes this job.
                    await self._forget(job)
                    bar.update()
        finally:
            bar.close()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _may_start(self, job: PlannedJob, running: Any) -> bool:
        running = list(running)
        if len(running) >= self.max_jobs:
            return False
        budget = self.oracle.batch_max_enqueued_tokens
        return budget is None or not running or sum(j.tokens for j in running) + job.tokens <= budget

    def _request(self, key: str) -> OracleRequest:
        return self.requests[self.asking[key][0]]

    def _deliver(self, key: str, response: OracleResponse) -> Iterator[tuple[int, OracleResponse]]:
        """`(index, response)` for every request asking for `key`; identical requests were sent once."""
        response.usage.calls = self.calls[key]
        first, *duplicates = self.asking[key]
        yield first, response
        for index in duplicates:
            yield index, OracleResponse(text=response.text, parsed=response.parsed, error=response.error)

    # -- planning and state ----------------------------------------------------------------------------------------
    def _adopt(self) -> list[PlannedJob]:
        """The jobs of earlier runs that hold some of this run's requests."""
        claimed: set[str] = set()
        adopted = []
        for path in sorted(self.state_dir.glob("*.json")) if self.state_dir.is_dir() else []:
            try:
                state = json.loads(path.read_text())
                job = PlannedJob(**state) if state.get("version") == STATE_VERSION else None
            except (OSError, ValueError, TypeError):
                job = None
            if job is None or job.model != self.oracle.model:
                continue
            owned = {key for key in job.keys if key in self.asking}
            if owned and not owned & claimed:
                claimed |= owned
                self._adopted.add(job.id)
                adopted.append(job)
                logger.info("Resuming batch job %s (%d of its requests still wanted)", job.name or job.id, len(owned))
        return adopted

    def _plan(self, keys: list[str]) -> list[PlannedJob]:
        size = self.oracle.batch_size
        jobs = []
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            tokens = sum(estimate_input_tokens(self._request(key)) for key in chunk)
            jobs.append(PlannedJob.new(chunk, self.oracle.model, tokens))
        return jobs

    def _state_path(self, job: PlannedJob) -> Path:
        return self.state_dir / f"{job.id}.json"

    def _save(self, job: PlannedJob) -> None:
        path = self._state_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(asdict(job)))
        os.replace(temp, path)

    async def _forget(self, job: PlannedJob) -> None:
        self._state_path(job).unlink(missing_ok=True)
        self.state_dir.joinpath(f"{job.id}.results.jsonl").unlink(missing_ok=True)
        client = self.oracle._client()
        for name in (job.input_file, job.result_file):
            if name is not None:  # free the account's file storage (20 GB); a failure only leaves a file to expire
                try:
                    await client.aio.files.delete(name=name)
                except (errors.APIError, httpx.TransportError) as error:
                    logger.debug("Could not delete %s (%s); it expires after 48 h", name, type(error).__name__)

    # -- one job ---------------------------------------------------------------------------------------------------
    async def _run_job(self, job: PlannedJob) -> tuple[list[tuple[str, OracleResponse]], list[str]]:
        """Submits `job` unless it was, polls it to its end; returns `(answered (key, response), unanswered keys)`."""
        if job.name is None:
            job.name = await self._submit(job)
        wanted = [key for key in job.keys if key in self.asking]
        for key in wanted:  # one call per row of an accepted job
            self.calls[key] += 1
        batch = await self._wait(job)
        if batch is None:
            logger.warning("Batch job %s is gone from the server: its %d requests go again", job.name, len(wanted))
            return [], wanted
        rows = await self._rows(job, batch)
        answered, unanswered = [], []
        for key in wanted:
            response = self._row_response(key, rows.get(key))
            if response is None:
                unanswered.append(key)
            else:
                answered.append((key, response))
        state = batch.state.value if batch.state is not None else "unknown"
        if state != SUCCEEDED or unanswered:
            missing = len(unanswered)
            logger.warning("Batch job %s ended %s, %d of %d rows unanswered", job.name, state, missing, len(wanted))
        return answered, unanswered

    async def _submit(self, job: PlannedJob) -> str:
        client = self.oracle._client()
        if job.id in self._adopted and job.sent is not None:
            # A create call sent by the killed run may still reach the server: a job the listing shows is adopted at
            # once; otherwise the call gets the time it may take (the HTTP timeout) before we conclude that it never
            # arrived. The jobs not listed wait for the last of those calls and are looked up again together, in one
            # listing (a listing reads every finished job's answers: one per job was minutes at scale).
            name = await self._find(job.display_name)
            settled_at = self._settled_at
            if name is None and settled_at > time.time():
                logger.info("Waiting %.0f s for a create call of the last run to settle", settled_at - time.time())
                await asyncio.sleep(settled_at - time.time())
            if name is None:  # only a listing taken after that proves it never came
                name = await self._find(job.display_name, fresh_after=settled_at)
            if name is not None:
                logger.info("Found batch job %s, accepted before the last run was stopped", name)
                job.name = name
                self._save(job)
                return name
        # A few uploads at a time: a round starts `batch_max_jobs` jobs of up to 20 MB each at once, and all of them in
        # parallel would each take many times longer than alone; past the HTTP timeout, every one looks failed.
        async with self._sending:
            # The intent first: from here on, a killed run looks for this display name before submitting again. Its
            # keys are exactly the rows sent, in order (an earlier run's job may hold rows answered since).
            job.keys = [key for key in job.keys if key in self.asking]
            self._save(job)
            rows = [self._wire_request(key) for key in job.keys]
            size = sum(len(json.dumps(row)) for row in rows)
            if size > self.oracle.batch_inline_max_bytes:
                input_file = job.input_file
                if (
                    input_file is None
                    or await self._call(client.aio.files.get, missing_ok=True, name=input_file) is None
                ):
                    job.input_file = await self._upload(job, rows)
                    self._save(job)
                source: Any = job.input_file
            else:
                source = []
                for key in job.keys:
                    request = self._request(key)
                    config = self.oracle._config(request)
                    source.append(types.InlinedRequest(contents=request.prompt, config=config, metadata={"key": key}))
            job.sent = time.time()
            self._save(job)
            created = await self._call(
                client.aio.batches.create,
                refusable=True,
                find=lambda: self._find(job.display_name, fresh_after=time.time()),
                model=self.oracle.model,
                src=source,
                config=types.CreateBatchJobConfig(display_name=job.display_name),
            )
        name = created if isinstance(created, str) else created.name
        job.name = name
        self._save(job)
        how = "as a file" if job.input_file else "inline"
        logger.info("Submitted batch job %s (%d requests, %s)", name, len(rows), how)
        return name

    def _wire_request(self, key: str) -> dict[str, Any]:
        """The request as the REST API reads it: the client's own conversion of an inline request, so a JSONL line
        says exactly what the inline job would have said."""
        request = self._request(key)
        inlined = types.InlinedRequest(contents=request.prompt, config=self.oracle._config(request))
        converted = batches._InlinedRequest_to_mldev(self.oracle._client()._api_client, inlined)
        return {"key": key, "request": _common.convert_to_dict(converted)["request"]}

    async def _upload(self, job: PlannedJob, rows: list[dict[str, Any]]) -> str:
        path = self.state_dir / f"{job.id}.requests.jsonl"
        with open(path, "w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row) + "\n")
        try:
            uploaded = await self._call(
                self.oracle._client().aio.files.upload,
                file=str(path),
                config=types.UploadFileConfig(display_name=job.display_name, mime_type="jsonl"),
            )
        finally:
            path.unlink(missing_ok=True)
        return uploaded.name

    async def _find(self, display_name: str, fresh_after: float | None = None) -> str | None:
        """The name of the job created under `display_name`, from a listing of the account's batch jobs; with
        `fresh_after`, from a listing requested at or after that time.

        A resume looks up every adopted job whose create call went unanswered at once, and a listing reads every
        finished job's answers: concurrent lookups wait for the listing in flight and reuse it when it is recent
        enough, instead of each listing the whole account again (13 lookups took 55-74 s each, in parallel, in the
        scale benchmark's 2k-row resume).
        """
        async with self._listing_lock:
            if self._listing is None or (fresh_after is not None and self._listed_at < fresh_after):
                listing, listed_at = {}, time.time()
                client = self.oracle._client()
                pager = await self._call(client.aio.batches.list, config={"page_size": LIST_PAGE_SIZE})
                async for job in pager:
                    if job.display_name:
                        listing[job.display_name] = job.name
                self._listing, self._listed_at = listing, listed_at
            return self._listing.get(display_name)

    async def _wait(self, job: PlannedJob) -> types.BatchJob | None:
        client = self.oracle._client()
        while True:
            batch = await self._call(client.aio.batches.get, missing_ok=True, name=job.name)
            if batch is None or batch.done:
                return batch
            await asyncio.sleep(self.oracle.poll_interval)

    async def _rows(self, job: PlannedJob, batch: types.BatchJob) -> dict[str, Any]:
        """The job's rows by key: inline responses, or the lines of its result file (read as they stream in)."""
        dest = batch.dest
        if dest is None:
            return {}
        if dest.inlined_responses is not None:  # in request order; the key is also in each row's metadata
            rows = {}
            for position, row in enumerate(dest.inlined_responses):
                key = (row.metadata or {}).get("key") or (job.keys[position] if position < len(job.keys) else None)
                rows[key] = row
            return rows
        if dest.file_name is None:
            return {}
        job.result_file = dest.file_name  # deleted with the job's state
        path = self.state_dir / f"{job.id}.results.jsonl"
        await self._call(self.oracle._client().aio.files.download, file=dest.file_name, destination=str(path))
        rows = {}
        with open(path, encoding="utf-8") as file:
            for line in file:
                if line.strip():
                    item = json.loads(line)
                    response = item.get("response")
                    rows[item.get("key")] = types.InlinedResponse(
                        response=types.GenerateContentResponse.model_validate(response) if response else None,
                        error=item.get("error"),
                    )
        return rows

    def _row_response(self, key: str, row: types.InlinedResponse | None) -> OracleResponse | None:
        """The final answer of one row, or `None` when it is unanswered (missing, or a transient error)."""
        if row is None or (row.response is None and row.error is None):
            return None
        if row.error is not None:
            code = row.error.code or 0
            reason = GRPC_REASONS.get(code, f"batch_error_{code}")
            return None if is_transient_error(reason) else OracleResponse(usage=Usage(), error=reason)
        return self.oracle._to_response(self._request(key), row.response, Usage())

    # -- API calls -------------------------------------------------------------------------------------------------
    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        *,
        missing_ok: bool = False,
        refusable: bool = False,
        find: Callable[[], Awaitable[str | None]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One Batch or Files API call, retried like online calls on transient failures (backoff, `Retry-After`).

        `missing_ok`: a 404 returns `None`. `refusable`: a 429 raises [`_Refused`] for the scheduler. `find`: after a
        transient failure, looks for what an accepted call whose answer was lost created, returned if found.
        """
        retry = self.oracle.retry
        last = ""
        for attempt in range(retry.max_retries + 1):
            retry_after = None
            try:
                return await method(**kwargs)
            except errors.APIError as error:
                headers = getattr(error.response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("retry-after"))
                if error.code == 404 and missing_ok:
                    return None
                if error.code == 429 and refusable:
                    raise _Refused(retry_after) from None
                reason = self.oracle._api_error_reason(error)  # raises for a rejected key or an unknown model
                last = self.oracle._redact(f"{error.code} {error.message}")
                if not is_transient_error(reason):
                    raise OracleFatalError(f"Batch API call failed: {last}") from None
            except httpx.TransportError as error:
                last = type(error).__name__
            if find is not None and (found := await find()) is not None:
                return found
            if attempt < retry.max_retries:
                await asyncio.sleep(retry.delay(attempt, retry_after))
        raise OracleFatalError(f"Batch API call failed {retry.max_retries + 1} times: {last}")
