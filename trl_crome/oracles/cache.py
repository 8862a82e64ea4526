"""An on-disk cache of oracle answers that makes augmentation runs resumable, at millions of entries.

The answers live in one SQLite database per cache folder (`answers.sqlite`, WAL journal): one row per answer, keyed
by [`OracleRequest.cache_key`]. Every write is a transaction, so several processes and threads can share a cache and
a `kill -9` at any moment leaves either the whole entry or none of it (WAL with `synchronous=NORMAL` loses no
committed entry when a process dies; only a power cut may lose the last ones). Lookups go by batches of keys, so a
resume scan over 1.5M requests is one indexed query per few hundred keys instead of 1.5M file reads
(`benchmarks/oracle_cache.py` measures both layouts).

Caches written by earlier versions (one JSON file per answer in `<first two hex digits>/<key>.json`) are migrated
once, when the folder is opened: the entries are copied into the database and the files removed (one-way).

Only final answers are stored: successes and deterministic per-row failures (safety blocks, malformed or truncated
output after retries). Transient failures (timeouts, rate limits, 5xx) are not, so a resumed run retries them. The
API key is neither part of a key nor of a stored entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .base import Oracle, OracleRequest, OracleResponse, StopCheck, Usage

logger = logging.getLogger(__name__)

DATABASE_NAME = "answers.sqlite"
SCHEMA_VERSION = 2  # 1 was the one-file-per-answer layout
LEGACY_FORMAT_VERSION = 1
LOOKUP_BATCH = 500  # keys per query: well under SQLite's limit on bound parameters
MIGRATION_BATCH = 5_000  # legacy files copied per transaction (then deleted)
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another process's transaction
PAGE_SIZE = 16_384  # a typical answer (a few KB) fits in one page, without overflow pages
COLUMNS = (
    "key TEXT NOT NULL UNIQUE",
    "model TEXT",
    "template TEXT",
    "text TEXT",
    "parsed TEXT",  # JSON; NULL when there is none, or when it is the JSON of `text` itself (parsed_from_text)
    "parsed_from_text INTEGER NOT NULL DEFAULT 0",
    "error TEXT",
    "input_tokens INTEGER NOT NULL",
    "output_tokens INTEGER NOT NULL",
    "calls INTEGER NOT NULL",
    "created REAL",
)
PLACEHOLDERS = ", ".join("?" * len(COLUMNS))
STORED = "key, text, parsed, parsed_from_text, error, input_tokens, output_tokens, calls"  # what a lookup reads


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch the database to WAL (a no-op once it is). When several processes open a new database at once, SQLite
    may answer this pragma "database is locked" at once instead of calling the busy handler (two connections that
    both hold a read lock and want the write lock): retry within the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class OracleCache:
    """A folder holding cached [`OracleResponse`]s in a SQLite database, safe to share between processes.

    Args:
        cache_dir (`str` or `os.PathLike`):
            The folder; created when missing. An older one-file-per-answer cache in it is migrated on opening.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.database = self.cache_dir / DATABASE_NAME
        self._local = threading.local()  # one connection per thread (and per process: see `_connection`)
        if self._connection().execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with self._transaction() as connection:  # a new database (opening an existing one takes no write lock)
                # A rowid table with an index on the key, not a WITHOUT ROWID table: answers are kilobytes, and
                # SQLite keeps large rows far better in rowid order (3x faster batched lookups and inserts, measured).
                # One column per field: a lookup parses only `parsed`'s JSON, not the answer's text a second time.
                connection.execute(f"CREATE TABLE IF NOT EXISTS answers ({', '.join(COLUMNS)})")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._migrate_legacy_files()

    def __repr__(self) -> str:
        return f"OracleCache({str(self.cache_dir)!r})"

    # -- connections -----------------------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():  # a forked child never reuses its parent's
            connection = sqlite3.connect(self.database, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only takes effect on a new database
            _enable_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection())

    def close(self) -> None:
        """Closes this thread's connection (others close with their threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- reads -----------------------------------------------------------------------------------------------------
    def get(self, key: str) -> OracleResponse | None:
        """The cached response for `key`, or `None` (also for a damaged entry, which is then recomputed)."""
        row = self._connection().execute(f"SELECT {STORED} FROM answers WHERE key = ?", (key,)).fetchone()
        return _decode(row) if row is not None else None

    def get_many(self, keys: Iterable[str]) -> dict[str, OracleResponse]:
        """The cached responses of `keys` that have one, by key: one query per `LOOKUP_BATCH` keys."""
        found: dict[str, OracleResponse] = {}
        connection = self._connection()
        for batch in _batches(sorted(keys), LOOKUP_BATCH):  # in key order: neighbouring index pages
            placeholders = ",".join("?" * len(batch))
            rows = connection.execute(f"SELECT {STORED} FROM answers WHERE key IN ({placeholders})", batch)
            for row in rows:
                response = _decode(row)
                if response is not None:
                    found[row[0]] = response
        return found

    def items(self) -> Iterator[tuple[str, OracleResponse]]:
        """Every `(key, response)` stored, read as a stream (for inspection and reports)."""
        for row in self._connection().execute(f"SELECT {STORED} FROM answers"):
            response = _decode(row)
            if response is not None:
                yield row[0], response

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    # -- writes ----------------------------------------------------------------------------------------------------
    def put(self, key: str, response: OracleResponse, **metadata: Any) -> None:
        """Stores `response` under `key` in one transaction; `metadata` (`model`, `template`) is for inspection."""
        self.put_many([(key, response, metadata)])

    def put_many(self, entries: Iterable[tuple[str, OracleResponse, dict[str, Any]]]) -> None:
        """Stores several `(key, response, metadata)` entries in one transaction: all of them or none."""
        now = time.time()
        rows = [_row(key, response, metadata, now) for key, response, metadata in entries]
        with self._transaction() as connection:
            connection.executemany(f"INSERT OR REPLACE INTO answers VALUES ({PLACEHOLDERS})", rows)

    # -- one-way migration of the one-file-per-answer layout -------------------------------------------------------
    def _legacy_shards(self) -> list[Path]:
        return [p for p in self.cache_dir.iterdir() if p.is_dir() and len(p.name) == 2 and _is_hex(p.name)]

    def _migrate_legacy_files(self) -> None:
        shards = self._legacy_shards()
        if not shards:
            return
        started, migrated, skipped = time.perf_counter(), 0, 0
        files = (path for shard in shards for path in shard.glob("*.json"))
        for batch in _batches(files, MIGRATION_BATCH):
            rows = []
            for path in batch:
                row = _legacy_row(path)
                if row is None:
                    skipped += 1
                else:
                    rows.append(row)
            # INSERT OR IGNORE: a process migrating the same folder at the same time may have copied it already.
            with self._transaction() as connection:
                connection.executemany(f"INSERT OR IGNORE INTO answers VALUES ({PLACEHOLDERS})", rows)
            for path in batch:  # removed only once their rows are committed: a kill here loses nothing
                path.unlink(missing_ok=True)
            migrated += len(rows)
        for shard in shards:
            for temp in shard.glob(".*.tmp"):  # half-written files of the old layout: never whole entries
                temp.unlink(missing_ok=True)
            try:
                shard.rmdir()
            except OSError:  # not empty: something else lives there; leave it
                pass
        logger.info(
            "Migrated %d oracle cache entries from one file per answer to %s in %.1f s (%d unreadable, skipped)",
            migrated,
            self.database,
            time.perf_counter() - started,
            skipped,
        )


class _Transaction:
    """`with` block around `BEGIN IMMEDIATE ... COMMIT` (rolled back on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, traceback) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _row(key: str, response: OracleResponse, metadata: dict[str, Any], created: float | None) -> tuple:
    """The database row of a response: what the call spent, never what a cache hit saved (`cached_usage`)."""
    usage = response.usage
    parsed, from_text = response.parsed, False
    if parsed is not None:
        try:  # the usual case: the answer's text is the JSON itself; storing it twice would double the cache
            from_text = json.loads(response.text) == parsed
        except (TypeError, ValueError):
            pass
        parsed = None if from_text else json.dumps(parsed)
    return (
        key,
        metadata.get("model"),
        metadata.get("template"),
        response.text,
        parsed,
        int(from_text),
        response.error,
        usage.input_tokens,
        usage.output_tokens,
        usage.calls,
        created,
    )


def _decode(row: tuple) -> OracleResponse | None:
    key, text, parsed, from_text, error, input_tokens, output_tokens, calls = row
    try:
        parsed = json.loads(text if from_text else parsed) if from_text or parsed is not None else None
    except ValueError:
        # Only outside damage gets here (entries are written in transactions): treat it as a miss.
        logger.warning("Ignoring unreadable oracle cache entry %s", key)
        return None
    return OracleResponse(text=text, parsed=parsed, usage=Usage(input_tokens, output_tokens, calls), error=error)


def _legacy_row(path: Path) -> tuple | None:
    """The database row of one legacy entry file, or `None` when the file is damaged or of another version."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["version"] != LEGACY_FORMAT_VERSION or entry["key"] != path.stem:
            return None
        response = OracleResponse.from_dict(entry["response"])
        return _row(entry["key"], response, entry, None)  # when it was paid is not known (not worth a stat call)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class CachedOracle(Oracle):
    """Wraps any [`Oracle`] with an [`OracleCache`]: answered requests are never paid for twice.

    A cache hit returns the stored response with zero `usage` and the original call's usage in `cached_usage`.
    Misses go to the wrapped oracle (identical requests only once) and each final answer is stored the moment it
    arrives, so an interrupted run resumes where it stopped. `stats` / `summary()` count calls, cache hits, tokens
    and cost.

    Args:
        oracle ([`Oracle`]):
            The backend that answers cache misses.
        cache_dir (`str` or `os.PathLike`):
            The cache folder; one folder may serve several models (the model is part of each key).
    """

    def __init__(self, oracle: Oracle, cache_dir: str | os.PathLike):
        super().__init__(model=oracle.model, max_concurrency=oracle.max_concurrency)
        self.oracle = oracle
        self.cache = OracleCache(cache_dir)

    def __repr__(self) -> str:
        return f"CachedOracle({self.oracle!r}, cache_dir={str(self.cache.cache_dir)!r})"

    def cost(self, usage: Usage) -> float:
        return self.oracle.cost(usage)

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        async for _, response in self.astream([request]):
            return response
        raise AssertionError("unreachable: one request gives one response")

    def _store(self, request: OracleRequest, key: str, response: OracleResponse) -> None:
        if not response.transient:
            self.cache.put(key, response, model=self.model, template=request.template)

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        # Cache hits cost nothing and are always served; `should_stop` only holds back the misses not yet sent.
        asking: dict[str, list[int]] = {}  # key -> the indices asking for it, first appearance first
        for index, request in enumerate(requests):
            asking.setdefault(request.cache_key(self.model), []).append(index)
        misses: list[str] = []
        # The lookups run in a thread, a batch of keys at a time: the event loop stays free and hits stream out early.
        for keys in _batches(asking, LOOKUP_BATCH * 20):
            found = await asyncio.to_thread(self.cache.get_many, keys)
            for key in keys:
                if key in found:
                    for index in asking[key]:
                        yield index, _as_hit(found[key])
                else:
                    misses.append(key)
        unique = [requests[asking[key][0]] for key in misses]
        async for position, response in self.oracle.astream(unique, should_stop):
            key = misses[position]
            first, *duplicates = asking[key]
            # Stored before it is handed on, in a thread: a write is slow next to an HTTP answer, and the event loop
            # must keep the other requests moving meanwhile.
            await asyncio.to_thread(self._store, requests[first], key, response)
            yield first, response
            for index in duplicates:  # the same request again in this batch: served like a cache hit
                yield index, _as_hit(response)


def _as_hit(response: OracleResponse) -> OracleResponse:
    return OracleResponse(
        text=response.text, parsed=response.parsed, usage=Usage(), error=response.error, cached_usage=response.usage
    )
