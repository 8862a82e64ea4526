"""Oracle cache at scale: the SQLite store of `OracleCache` against the one-file-per-answer layout it replaced.

The paper's augmentation makes about 1.5M oracle calls; a resumed run looks every one of them up before paying for
anything. For each size N the script fills a cache with N structured answers in both layouts (a rewrite: the real
UltraFeedback answers of `../shared/data`, ~1,200 characters on average, when present, else `--answer-chars` of
synthetic text), then measures in the same run:

- **write**: entries stored per second, one entry per transaction / file, as `CachedOracle` stores each answer;
- **size** on disk;
- **lookup**: microseconds per random lookup (hits and misses), one key at a time;
- **resume scan**: seconds to look up all N keys the way `CachedOracle` does on a resume (answers decoded, handed
  on and dropped): the old version read one file per key, the new one asks the database for `LOOKUP_BATCH` keys per
  query;
- **migration**: seconds to convert the old layout into the new one (once, when a cache of the old version is opened).

The old layout is measured up to `--old-max-entries` (it writes one ~8 KB file per answer: 1.5M of them are 12 GB);
its figures at larger N are extrapolated linearly from the largest measured size and marked `~`. Figures are with a
warm page cache (the files were just written); a cold cache slows the old layout far more (one random read per key).

    python benchmarks/oracle_cache.py --sizes 100000 300000 1500000 --old-max-entries 300000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trl_crome.oracles.base import OracleRequest, OracleResponse, Usage  # noqa: E402
from trl_crome.oracles.cache import LOOKUP_BATCH, OracleCache  # noqa: E402

ULTRAFEEDBACK = ROOT.parent / "shared" / "data" / "ultrafeedback" / "train.jsonl"


class OneFilePerAnswer:
    """The storage of trl-crome's `OracleCache` before this benchmark (commit 8309ad9), reduced to get and put: one
    JSON file per answer, `<dir>/<key[:2]>/<key>.json`, written to a temporary name and renamed into place."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir

    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def put(self, key: str, response: OracleResponse) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"version": 1, "key": key, "model": "m", "template": "t@1", "response": response.to_dict()}
        temp = path.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(temp, "w", encoding="utf-8") as file:
            json.dump(entry, file)
        os.replace(temp, path)

    def get(self, key: str) -> OracleResponse | None:
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return OracleResponse.from_dict(entry["response"]) if entry["key"] == key else None


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def answer_texts(answer_chars: int) -> list[str]:
    if ULTRAFEEDBACK.exists():
        rows = [json.loads(line) for line in ULTRAFEEDBACK.read_text().splitlines()]
        return [row[column] for row in rows for column in ("chosen", "rejected")]
    words = "the answer keeps every step in order and checks each result before it moves on".split()
    return [" ".join(random.choice(words) for _ in range(answer_chars // 5))[:answer_chars] for _ in range(100)]


def answers(texts: list[str], size: int) -> list[OracleResponse]:
    """`size` structured answers, as a rewrite call returns them (the text is the JSON; parsed is its dict)."""
    made = []
    for i in range(size):
        parsed = {"analysis": f"Step {i}: the causal elements are kept.", "rewritten": texts[i % len(texts)]}
        made.append(OracleResponse(text=json.dumps(parsed), parsed=parsed, usage=Usage(900, 700, 1)))
    return made


def scan(get_many: Callable[[list[str]], dict], keys: list[str]) -> None:
    """A resume scan as `CachedOracle` runs it: keys by batches, every answer decoded, handed on and dropped."""
    for start in range(0, len(keys), LOOKUP_BATCH * 20):
        get_many(keys[start : start + LOOKUP_BATCH * 20])


def measure(size: int, texts: list[str], workdir: Path, old: bool) -> dict[str, float]:
    keys = [f"{random.getrandbits(256):064x}" for _ in range(size)]
    made = answers(texts, min(size, 1_000))
    responses = [made[i % len(made)] for i in range(size)]
    probes = random.sample(keys, min(size, 5_000)) + [f"{random.getrandbits(256):064x}" for _ in range(5_000)]
    folder = workdir / ("old" if old else "new")
    result: dict[str, float] = {}
    if old:
        store = OneFilePerAnswer(folder)
        result["write_s"] = timed(lambda: [store.put(key, response) for key, response in zip(keys, responses)])
        result["lookup_us"] = timed(lambda: [store.get(key) for key in probes]) / len(probes) * 1e6
        result["scan_s"] = timed(lambda: scan(lambda batch: {key: store.get(key) for key in batch}, keys))
        result["bytes"] = disk_bytes(folder)
        started = time.perf_counter()
        migrated = OracleCache(folder)  # opening an old-layout folder migrates it
        result["migration_s"] = time.perf_counter() - started
        assert len(migrated) == size
    else:
        cache = OracleCache(folder)
        sample = keys[:10_000]
        # The write rate as CachedOracle writes (one transaction per answer), on a sample; the rest in bulk.
        metadata = {"model": "m", "template": "t@1"}
        result["write_s"] = timed(lambda: [cache.put(key, responses[i], **metadata) for i, key in enumerate(sample)])
        result["write_s"] *= size / len(sample)
        for start in range(len(sample), size, 5_000):  # in transactions of 5,000, as the migration writes
            cache.put_many((keys[i], responses[i], metadata) for i in range(start, min(start + 5_000, size)))
        result["lookup_us"] = timed(lambda: [cache.get(key) for key in probes]) / len(probes) * 1e6
        result["scan_s"] = timed(lambda: scan(cache.get_many, keys))
        cache.close()
        result["bytes"] = disk_bytes(folder)
    shutil.rmtree(folder)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_500_000])
    parser.add_argument("--old-max-entries", type=int, default=300_000, help="largest size run with the old layout")
    parser.add_argument("--answer-chars", type=int, default=1_200, help="answer length without the shared data")
    parser.add_argument("--workdir", type=Path, help="where the caches are written (default: a temporary folder)")
    args = parser.parse_args()
    texts = answer_texts(args.answer_chars)

    request = OracleRequest(prompt="y" * 3_000, template="degrade@1")
    key_us = timed(lambda: [request.cache_key("gemini-2.5-flash") for _ in range(20_000)]) / 20_000 * 1e6
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; LOOKUP_BATCH={LOOKUP_BATCH}")
    print(f"cache_key of a 3,000-character request: {key_us:.1f} us (both layouts; 1.5M keys: {key_us * 1.5:.1f} s)\n")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="oracle-cache-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    columns = [("entries", 10), ("layout", 16), ("write/s", 9), ("disk", 9), ("lookup", 9), ("resume scan", 12)]
    header = " ".join(f"{name:>{width}}" for name, width in [*columns, ("migration", 10)])
    print(header)
    print("-" * len(header))
    measured_old: tuple[int, dict[str, float]] | None = None
    try:
        for size in sorted(args.sizes):
            rows = []
            if size <= args.old_max_entries:
                old = measure(size, texts, workdir, old=True)
                measured_old = (size, old)
                rows.append(("one file/answer", old, ""))
            elif measured_old is not None:
                base, figures = measured_old
                scale = size / base
                extrapolated = {k: v * scale for k, v in figures.items() if k != "lookup_us"}
                rows.append(("one file/answer", {**extrapolated, "lookup_us": figures["lookup_us"]}, "~"))
            new = measure(size, texts, workdir, old=False)
            rows.append(("sqlite (now)", new, ""))
            for name, figures, mark in rows:
                migration = f"{mark}{figures['migration_s']:.1f} s" if "migration_s" in figures else "-"
                print(
                    f"{size:>10,} {name:>16} {mark}{size / figures['write_s']:>8,.0f} "
                    f"{mark}{figures['bytes'] / 2**30:>6.2f} GB {figures['lookup_us']:>6.0f} us "
                    f"{mark}{figures['scan_s']:>9.1f} s {migration:>10}"
                )
            if len(rows) == 2:
                print(f"{'':>10} {'scan speed-up':>16} {rows[0][1]['scan_s'] / new['scan_s']:>8.1f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
