"""Augmentation at scale: `CromeAugmenter` on N rows against a local Gemini-protocol server, online and Batch.

The rows are the real UltraFeedback pairs of `../shared/data/ultrafeedback/train.jsonl`, repeated with an index
appended to each prompt so that every prompt is distinct (the benchmark stops with a message when the file is
absent). The server (`tests/servers/gemini.py`, with the pipeline tests' scripted answers for every step) runs in its
own process, so its CPU time and memory are not counted as the augmenter's; it waits `--latency` seconds per online
call and answers 429 past `--rpm` calls in any 60 s. Each augmentation runs in its own process too, exactly as a user
runs it. For each mode (online, Batch) and each size N the script runs:

1. an **uninterrupted** run, which gives the wall time of the augmentation against the quota-bound ideal (online:
   `calls / RPM`; the ratio ideal / wall has a goal of >= 0.8), the calls per second, the client's CPU time per call,
   the peak RSS of the augmenting process (from the kernel: `wait4`'s `ru_maxrss`, which includes the memory-mapped
   Arrow pages it touched, and the peak of its anonymous memory, sampled every 50 ms), and the size on disk of the
   oracle cache and of the finished chunks;
2. a **killed** run: the same command in a fresh folder, `SIGKILL`ed once the server has answered `--kill-at` (50%)
   of the calls, then **resumed** with the same command. The server counts, by prompt: the calls it answered before
   the kill, and those it answered again after the resume ("repeated"). Calls it answered in the last moment before
   the kill whose answers the killed process never stored ("lost": answered before the kill minus the entries of the
   cache after it) are paid in any client; every other repeated call would be an answer paid twice, and must not
   exist. The resume time is from the restart of the process to the first request the server sees from it (the
   imports, the data set, the resume scan of the cache and of the finished chunks); the output after the resume is
   compared byte for byte with the uninterrupted run's.

Sizes: the paper preset makes 26 oracle calls per row (60k rows: 1.56M calls); `--preset lite` makes 5. Every figure
is printed with the baseline it is compared with, measured in the same run (the smallest N for memory, the quota for
online wall time); nothing is asserted on timings. `--json FILE` writes every figure (the CI test reads it).

    python benchmarks/augment_scale.py --rows 240 --mode online --preset paper --rpm 2400 --latency 0.2
    python benchmarks/augment_scale.py --rows 6000 60000 --mode batch --preset lite --chunk-size 1000

The figures, the exact commands they were measured with and what was not run: docs/augmenter.md, "Scale benchmark".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.augment.scripted import step_of  # noqa: E402
from tests.servers.gemini import GeminiServer  # noqa: E402

ULTRAFEEDBACK = ROOT.parent / "shared" / "data" / "ultrafeedback" / "train.jsonl"
RESPONDER = "tests.augment.scripted:gemini_responder"  # valid answers for every step of both presets
GENERATION_ENDPOINTS = ("generateContent", "batchGenerateContent")
QUOTA_WINDOW_S = 60.0


# -- the server (runs in its own process) -----------------------------------------------------------------------------
class CountingServer(GeminiServer):
    """The local Gemini server, counting answers by prompt digest (8 bytes, not the prompt: 1.5M prompts would take
    gigabytes) per phase of the benchmark: phase 0 until the kill, phase 1 after the restart. `GET /bench/stats`
    answers the counters, `POST /bench/phase` starts the next phase. The quota is kept in a deque (one comparison per
    call, not one per call in the window)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.phase = 0
        self.first_phase: dict[bytes, int] = {}  # prompt digest -> phase it was first answered in
        self.answered: Counter[int] = Counter()  # per phase
        self.repeated: Counter[int] = Counter()  # per phase: answered again, first answered in an earlier phase
        self.repeated_within: Counter[int] = Counter()  # per phase: answered twice in the same phase
        self.new_by_step: Counter[str] = Counter()  # "phase:step": prompts first answered then (the step, by text)
        self.first_request: dict[int, float] = {}  # per phase: time.time() of the first request of any kind
        self.first_generation: dict[int, float] = {}  # per phase: of the first generateContent / batch job
        self.refused = 0  # 429s answered by the quota
        self._window: deque[float] = deque()

    def count(self, endpoint: str, prompts: list[str] = ()) -> None:
        now = time.time()
        with self._lock:
            self.requests[endpoint] += 1
            self.first_request.setdefault(self.phase, now)
            if endpoint in GENERATION_ENDPOINTS:
                self.first_generation.setdefault(self.phase, now)

    def quota_retry_after(self) -> float | None:
        if self.quota is None:
            return None
        limit, window = self.quota
        with self._lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - window:
                self._window.popleft()
            if len(self._window) >= limit:
                self.refused += 1
                return max(0.001, self._window[0] + window - now)
            self._window.append(now)
            return None

    def answer(self, call, fault):
        digest = hashlib.blake2b(call.prompt.encode(), digest_size=8).digest()
        with self._lock:
            phase = self.phase
            self.answered[phase] += 1
            known = digest in self.first_phase
            first = self.first_phase.setdefault(digest, phase)
            if first < phase:
                self.repeated[phase] += 1
            elif known:
                self.repeated_within[phase] += 1
            else:
                self.new_by_step[f"{phase}:{step_of(call.prompt)}"] += 1
        return super().answer(call, fault)

    def route(self, method: str, path: str, body: dict[str, Any]):
        if path == "/bench/stats":
            with self._lock:
                stats = {
                    "phase": self.phase,
                    "answered": dict(self.answered),
                    "distinct": len(self.first_phase),
                    "repeated": dict(self.repeated),
                    "repeated_within": dict(self.repeated_within),
                    "new_by_step": dict(self.new_by_step),
                    "first_request": dict(self.first_request),
                    "first_generation": dict(self.first_generation),
                    "refused": self.refused,
                    "requests": dict(self.requests),
                }
            return 200, stats, {}
        if path == "/bench/phase" and method == "POST":
            with self._lock:
                self.phase += 1
            return 200, {"phase": self.phase}, {}
        return super().route(method, path, body)


def serve(args: argparse.Namespace) -> None:
    from tests.servers.common import load_responder

    server = CountingServer(responder=load_responder(RESPONDER), latency=args.latency)
    server.batch_polls_until_done = 2
    if args.rpm:
        server.quota = (int(args.rpm), QUOTA_WINDOW_S)
    temp = args.port_file.with_name(args.port_file.name + ".tmp")
    temp.write_text(str(server.port))
    os.replace(temp, args.port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    stop.wait()
    server.stop()


# -- one augmentation (runs in its own process) -----------------------------------------------------------------------
def augment(args: argparse.Namespace) -> None:
    """What a user runs: the data set loaded with `datasets`, `GeminiOracle` (online paced to the quota, or the Batch
    API), `CromeAugmenter` with its state in `--workdir`, and the output written as JSON lines."""
    import logging

    from datasets import load_dataset

    from trl_crome import CromeAugmenter, CromeAugmenterConfig
    from trl_crome.oracles import GeminiOracle

    logging.basicConfig(level=logging.WARNING)
    imported = time.time()
    data = load_dataset("json", data_files=str(args.data), split="train", cache_dir=str(args.hf_cache))
    loaded = time.time()
    # Read by a benchmark that stops this process at its first request (the resume time alone).
    args.result.with_name("started.json").write_text(json.dumps({"imported_at": imported, "loaded_at": loaded}))
    batch = args.mode == "batch"
    oracle = GeminiOracle(
        api_key="benchmark-key",  # a fake key for the local server; no real API is called
        http_options={"base_url": args.url},
        max_concurrency=args.concurrency,
        requests_per_minute=None if batch else args.rpm,
        batch=batch,
        batch_size=args.batch_size,
        batch_max_jobs=args.batch_max_jobs,
        state_dir=args.workdir / "batches",
        poll_interval=args.poll_interval,
        **({"timeout": args.http_timeout} if args.http_timeout else {}),
    )
    config = CromeAugmenterConfig(
        preset=args.preset,
        output_dir=str(args.workdir / "run"),
        cache_dir=str(args.workdir / "cache"),
        chunk_size=args.chunk_size,
        filter_augmented=False,
        show_progress=False,
    )
    augmenter = CromeAugmenter(oracle, config)
    cpu, started = time.process_time(), time.perf_counter()
    augmenter(data)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    augmenter.to_json(args.workdir / "output.jsonl")
    summary = augmenter.summary
    result = {
        "imported_at": imported,
        "loaded_at": loaded,
        "augment_s": seconds,
        "augment_cpu_s": cpu,
        "chunking": list(augmenter.chunking()),
        "calls": summary.calls,
        "cache_hits": summary.cache_hits,
        "pairs": dict(summary.pairs),
        "rejects": dict(summary.rejects),
        "rows_incomplete": summary.rows_incomplete,
    }
    args.result.write_text(json.dumps(result))


# -- the benchmark ----------------------------------------------------------------------------------------------------
def write_rows(count: int, path: Path) -> None:
    """`count` rows: the real UltraFeedback pairs again and again, each prompt made distinct by its index."""
    with open(ULTRAFEEDBACK, encoding="utf-8") as file:
        real = [json.loads(line) for line in file]
    real = [row for row in real if all(row[key].strip() for key in ("prompt", "chosen", "rejected"))]  # 1 is empty
    with open(path, "w", encoding="utf-8") as out:
        for index in range(count):
            row = real[index % len(real)]
            prompt = f"{row['prompt']}\n\n(benchmark row {index})"
            out.write(json.dumps({"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}) + "\n")


class Server:
    """`CountingServer` in a subprocess (so that its CPU and memory are not the augmenting process's)."""

    def __init__(self, args: argparse.Namespace, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        port_file = folder / "port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, __file__, "serve", "--port-file", str(port_file), "--latency", str(args.latency)]
        command += ["--rpm", str(args.rpm)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(folder / "log", "w"))
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise RuntimeError(f"the server did not start: {(folder / 'log').read_text()[-2000:]}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/bench/stats", timeout=60) as answer:
            stats = json.load(answer)
        for key in ("answered", "repeated", "repeated_within", "first_request", "first_generation"):
            stats[key] = {int(phase): value for phase, value in stats[key].items()}
        return stats

    def next_phase(self) -> None:
        request = urllib.request.Request(f"{self.url}/bench/phase", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=60).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / 2**20 if folder.exists() else 0.0


def file_sha256(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_entries(workdir: Path) -> int:
    """Answers in the run's oracle cache (read after a kill: every committed entry is there)."""
    database = workdir / "cache" / "answers.sqlite"
    if not database.exists():
        return 0
    with sqlite3.connect(database, timeout=60) as connection:
        return connection.execute("SELECT count(*) FROM answers").fetchone()[0]


def run_augmenter(
    args: argparse.Namespace,
    mode: str,
    data: Path,
    workdir: Path,
    server: Server,
    kill_after: int | None = None,
    stop_at_first_request: bool = False,
) -> dict[str, Any]:
    """One augmenting process; with `kill_after`, SIGKILLed once the server has answered that many calls in this
    phase (with `stop_at_first_request`, once the server has seen its first request). Returns its wall time, its peak
    RSS (`ru_maxrss` from `wait4`), its result file (when it finished) or when it had imported and loaded the data."""
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "result.json"
    result_file.unlink(missing_ok=True)
    (workdir / "started.json").unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "augment",
        "--data",
        str(data),
        "--workdir",
        str(workdir),
        "--url",
        server.url,
    ]
    command += ["--mode", mode, "--result", str(result_file), "--hf-cache", str(data.parent / "hf-cache")]
    names = ("preset", "concurrency", "rpm", "batch_size", "batch_max_jobs", "poll_interval", "chunk_size")
    for name in (*names, "http_timeout"):
        if getattr(args, name) is not None:
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["TRL_CROME_CACHE"] = str(workdir / "trl-crome-cache")  # nothing of the user's cache is read or written
    phase = server.stats()["phase"]
    log = open(workdir / "log", "a")
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    killed, peaks = False, Counter()
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        for kind, kb in memory_kb(process.pid).items():
            peaks[kind] = max(peaks[kind], kb)
        stats = server.stats() if kill_after is not None or stop_at_first_request else None
        if (kill_after is not None and stats["answered"].get(phase, 0) >= kill_after) or (
            stop_at_first_request and phase in stats["first_request"]
        ):
            os.kill(process.pid, signal.SIGKILL)
            killed = True
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - started
    log.close()
    if not killed and process.returncode != 0:
        raise RuntimeError(f"the augmenter failed ({process.returncode}):\n{(workdir / 'log').read_text()[-5000:]}")
    if kill_after is not None and not killed:
        raise RuntimeError(f"the run finished before {kill_after} calls were answered: nothing to kill")
    figures = {"started_at": started, "wall_s": wall, "maxrss_mb": usage.ru_maxrss / 1024, "killed": killed}
    figures.update(peak_anon_mb=peaks["RssAnon"] / 1024, peak_file_mb=peaks["RssFile"] / 1024)
    if not killed:
        figures.update(json.loads(result_file.read_text()))
    elif (workdir / "started.json").exists():
        figures.update(json.loads((workdir / "started.json").read_text()))
    return figures


def memory_kb(pid: int) -> dict[str, int]:
    """A process's resident memory now: `RssAnon` (its heap) and `RssFile` (mapped files: libraries, Arrow data)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            lines = [line.split() for line in status if line.startswith(("RssAnon:", "RssFile:"))]
    except OSError:  # it just ended
        return {}
    return {line[0].rstrip(":"): int(line[1]) for line in lines}


def expected_calls(preset: str, rows: int) -> int:
    from trl_crome.augment.augmenter import CromeAugmenterConfig, calls_per_row

    return calls_per_row(CromeAugmenterConfig(preset=preset)) * rows


def uninterrupted(args: argparse.Namespace, mode: str, rows: int, data: Path, folder: Path) -> dict[str, Any]:
    server = Server(args, folder / "server")
    try:
        run = run_augmenter(args, mode, data, folder / "run", server)
        stats = server.stats()
    finally:
        server.stop()
    calls = stats["answered"].get(0, 0)
    figures = {
        "calls": calls,
        "distinct_calls": stats["distinct"],
        "new_by_step": stats["new_by_step"],  # distinct calls per step (phase 0)
        "rows_incomplete": run["rows_incomplete"],
        "refused_429": stats["refused"],
        "wall_s": run["augment_s"],
        "process_s": run["wall_s"],
        "cpu_ms_per_call": 1000 * run["augment_cpu_s"] / max(1, calls),
        "calls_per_s": calls / run["augment_s"],
        "maxrss_mb": run["maxrss_mb"],
        "peak_anon_mb": run["peak_anon_mb"],
        "peak_file_mb": run["peak_file_mb"],
        "cache_mb": disk_mb(folder / "run" / "cache"),
        "chunks_mb": disk_mb(folder / "run" / "run"),
        "chunking": run["chunking"],
        "pairs": run["pairs"],
        "output_sha256": file_sha256(folder / "run" / "output.jsonl"),
    }
    if mode == "online":
        figures["ideal_s"] = calls / (args.rpm / 60)  # the quota-bound ideal: every call at the quota's rate
        figures["ratio_to_ideal"] = figures["ideal_s"] / figures["wall_s"]
    return figures


def killed_and_resumed(
    args: argparse.Namespace, mode: str, rows: int, data: Path, folder: Path, total: int
) -> dict[str, Any]:
    server = Server(args, folder / "server")
    workdir = folder / "run"
    try:
        first = run_augmenter(args, mode, data, workdir, server, kill_after=int(args.kill_at * total))
        answered_before = settled_answers(server, args.latency)
        cached = cached_entries(workdir)
        if "restart" in args.skip:  # the killed run's memory alone
            killed = {"answered_before_kill": answered_before, "cached_at_kill": cached}
            return {**killed, "distinct_calls": total, **{f"killed_{k}": v for k, v in first.items()}}
        server.next_phase()
        second = run_augmenter(args, mode, data, workdir, server, stop_at_first_request="finish" in args.skip)
        stats = server.stats()
    finally:
        server.stop()
    restart = second["started_at"]
    resume = {
        "answered_before_kill": answered_before,
        "cached_at_kill": cached,
        "resume_s": stats["first_request"][1] - restart,
        "resume_imports_s": second["imported_at"] - restart,
        "resume_data_s": second["loaded_at"] - second["imported_at"],
        "resume_scan_s": stats["first_request"][1] - second["loaded_at"],
        "killed_maxrss_mb": first["maxrss_mb"],
        "killed_wall_s": first["wall_s"],
        "killed_peak_anon_mb": first["peak_anon_mb"],
        "killed_peak_file_mb": first["peak_file_mb"],
        "resumed_maxrss_mb": second["maxrss_mb"],
        "resumed_peak_anon_mb": second["peak_anon_mb"],
        "cache_mb": disk_mb(workdir / "cache"),
        "chunks_mb": disk_mb(workdir / "run"),
    }
    if "finish" in args.skip:  # stopped at its first request: the resume time alone
        return {**resume, "distinct_calls": total}
    repeated = stats["repeated"].get(1, 0)
    lost = answered_before - cached
    figures = {
        **resume,
        "lost_at_kill": lost,  # answered by the server, never stored by the killed process (in flight)
        "repeated_after_resume": repeated,  # counted at the server
        # Online, the calls in flight at the kill are asked again (paid in any client); any other repeat is an
        # answer paid twice. A Batch resume adopts its jobs in flight: nothing may be asked again.
        "repeated_stored": repeated - lost if mode == "online" else repeated,
        "repeated_within_phase": sum(stats["repeated_within"].values()),
        "distinct_calls": stats["distinct"],
        # Distinct calls per step, first answered before (0) or after (1) the kill.
        "new_by_step": stats["new_by_step"],
        "rows_incomplete": second["rows_incomplete"],
        "answered_after_resume": stats["answered"].get(1, 0),
        "resume_first_generation_s": stats["first_generation"].get(1, float("nan")) - restart,
        "resumed_wall_s": second["wall_s"],
        "output_sha256": file_sha256(workdir / "output.jsonl"),
    }
    return figures


def settled_answers(server: Server, latency: float) -> int:
    """The calls answered before the kill, once the server has finished the ones the killed process had in flight."""
    answered = -1
    while True:
        now = server.stats()["answered"].get(0, 0)
        if now == answered:
            return answered
        answered = now
        time.sleep(latency + 0.5)


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a markdown table: one line per mode and size (peak RSS against the mode's smallest size)."""

    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = [
        "mode", "preset", "rows", "calls", "wall s", "ideal s", "wall vs ideal", "calls/s", "client CPU ms/call",
        "peak RSS MB, uninterrupted", "peak RSS MB, killed run", "RSS vs smallest N", "peak anon MB, killed run",
        "anon vs smallest N", "peak RSS MB, resumed run", "cache MB", "chunks MB", "resume s (imports + data + scan)",
        "first new call s",
        "repeated (lost at kill)", "stored answers repeated", "output = uninterrupted",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    smallest: dict[str, tuple[float, float | None]] = {}
    for result in results:
        full, resumed = result.get("uninterrupted"), result.get("resumed")
        any_run = full or resumed
        # Flat in N: the killed runs (the first half of every size) are compared when there are, else the full runs.
        run = (
            {"maxrss_mb": resumed["killed_maxrss_mb"], "peak_anon_mb": resumed.get("killed_peak_anon_mb")}
            if resumed
            else full
        )
        rss, anon = run["maxrss_mb"], run.get("peak_anon_mb")
        first_rss, first_anon = smallest.setdefault(result["mode"], (rss, anon))
        cells = [result["mode"], result["preset"], f"{result['rows']:,}"]
        if full:
            cells += [
                f"{full['calls']:,}",
                number(full["wall_s"], ".1f"),
                number(full.get("ideal_s"), ".1f"),
                number(full.get("ratio_to_ideal"), ".2f"),
                number(full["calls_per_s"], ".0f"),
                number(full["cpu_ms_per_call"], ".2f"),
            ]
        else:
            cells += [f"{resumed['distinct_calls']:,}"] + ["-"] * 5
        cells += [number(full and full["maxrss_mb"], ".0f"), number(resumed and resumed["killed_maxrss_mb"], ".0f")]
        cells += [
            f"{rss / first_rss:.2f}x",
            number(anon, ".0f"),
            f"{anon / first_anon:.2f}x" if anon and first_anon else "-",
        ]
        cells += [number(resumed and resumed.get("resumed_maxrss_mb"), ".0f")]
        cells += [number(any_run.get("cache_mb"), ".0f"), number(any_run.get("chunks_mb"), ".0f")]
        if resumed and "resume_s" in resumed:
            cells.append(
                f"{resumed['resume_s']:.1f} ({resumed['resume_imports_s']:.1f} + {resumed['resume_data_s']:.1f} + "
                f"{resumed['resume_scan_s']:.1f})"
            )
        else:
            cells.append("-")
        if resumed and "output_sha256" in resumed:  # the resumed run went to the end
            cells += [
                f"{resumed['resume_first_generation_s']:.1f}",
                f"{resumed['repeated_after_resume']} ({resumed['lost_at_kill']})",
                str(resumed["repeated_stored"]),
                "-" if not full else ("yes" if resumed["output_sha256"] == full["output_sha256"] else "NO"),
            ]
        else:
            cells += ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[6_000, 60_000], help="sizes N (default: 6k and 60k)")
    parser.add_argument("--preset", choices=("paper", "lite"), default="paper")
    parser.add_argument("--mode", choices=("online", "batch", "both"), default="both")
    parser.add_argument("--rpm", type=int, default=3_000, help="the server's quota per 60 s, and the client's pacing")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated seconds per online call")
    parser.add_argument("--concurrency", type=int, default=32, help="online calls in flight at most")
    parser.add_argument("--batch-size", type=int, default=1_000, help="requests per Batch job")
    parser.add_argument("--batch-max-jobs", type=int, default=50, help="Batch jobs in flight at most")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between two polls of a job")
    parser.add_argument("--chunk-size", type=int, help="rows per chunk (default: the augmenter's)")
    parser.add_argument(
        "--http-timeout",
        type=float,
        help="seconds before an HTTP call is abandoned (default: GeminiOracle's); a Batch resume waits up to this "
        "long for a create call the killed process may have sent, when the listing does not show its job",
    )
    parser.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL once this share of the calls is answered")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=("uninterrupted", "resume", "restart", "finish"),
        help="leave out the uninterrupted run, the killed and resumed run, only the restart after the kill (the "
        "killed run's memory alone), or the resumed run past its first request (the resume time alone)",
    )
    parser.add_argument(
        "--full-max-rows",
        type=int,
        help="make the uninterrupted run only up to this size (larger sizes: the killed and resumed run alone)",
    )
    parser.add_argument("--workdir", type=Path, help="where runs are written (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--table-from", type=Path, help="only print the table of a JSON file written by --json")
    args = parser.parse_args()
    if args.table_from:
        print(table(json.loads(args.table_from.read_text())["results"]))
        return
    if not ULTRAFEEDBACK.exists():
        print(f"Skipped: the UltraFeedback sample {ULTRAFEEDBACK} is absent (see ../shared/data/PROVENANCE.md).")
        return
    modes = ("online", "batch") if args.mode == "both" else (args.mode,)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="augment-scale-"))
    results = []
    load = [os.getloadavg()]
    try:
        for rows in sorted(args.rows):
            data = workdir / f"rows-{rows}" / "data.jsonl"
            data.parent.mkdir(parents=True, exist_ok=True)
            write_rows(rows, data)
            for mode in modes:
                result: dict[str, Any] = {"mode": mode, "preset": args.preset, "rows": rows}
                folder = data.parent / mode
                if "uninterrupted" not in args.skip and rows <= (args.full_max_rows or rows):
                    result["uninterrupted"] = uninterrupted(args, mode, rows, data, folder / "uninterrupted")
                    print(f"{mode} {rows:,} rows, uninterrupted: {json.dumps(result['uninterrupted'])}", flush=True)
                if "resume" not in args.skip:
                    total = result.get("uninterrupted", {}).get("calls") or expected_calls(args.preset, rows)
                    result["resumed"] = killed_and_resumed(args, mode, rows, data, folder / "killed", total)
                    print(f"{mode} {rows:,} rows, killed and resumed: {json.dumps(result['resumed'])}", flush=True)
                load.append(os.getloadavg())
                results.append(result)
    finally:
        if args.workdir is None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "load": load, "results": results}, indent=1))
    print(
        f"\nCromeAugmenter at scale, {args.preset} preset; online: latency {args.latency:g} s, quota {args.rpm} RPM, "
        f"{args.concurrency} in flight; Batch: {args.batch_size} requests per job, {args.batch_max_jobs} jobs"
    )
    print(f"{os.cpu_count()} CPUs, load average (1 min) {' -> '.join(f'{one:.1f}' for one, _, _ in load)}\n")
    print(table(results))
    print("\nGoals: online wall time >= 0.8 of the quota-bound ideal; peak RSS flat in N; resume < 60 s at 60k rows;")
    print("no stored answer asked again after the resume.")
    for result in results:
        full, resumed = result.get("uninterrupted"), result.get("resumed")
        name = f"  {result['mode']}, {result['rows']:,} rows:"
        if full and "ratio_to_ideal" in full:
            verdict = "met" if full["ratio_to_ideal"] >= 0.8 else "NOT met"
            print(f"{name} wall time vs the quota-bound ideal {full['ratio_to_ideal']:.2f} ({verdict})")
        if resumed and "resume_s" in resumed:
            line = f"{name} resume {resumed['resume_s']:.1f} s (scan {resumed['resume_scan_s']:.1f} s)"
            if "repeated_stored" in resumed:  # the resumed run went to the end
                repeated = resumed["repeated_stored"]
                line += f"; stored answers asked again: {repeated} ({'met' if repeated == 0 else 'NOT met'})"
            print(line)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "augment"):
        command = sys.argv.pop(1)
        parser = argparse.ArgumentParser()
        if command == "serve":
            parser.add_argument("--port-file", type=Path, required=True)
            parser.add_argument("--latency", type=float, default=0.0)
            parser.add_argument("--rpm", type=int, default=0)
            serve(parser.parse_args())
        else:
            for name in ("--data", "--workdir", "--result", "--hf-cache"):
                parser.add_argument(name, type=Path, required=True)
            parser.add_argument("--url", required=True)
            parser.add_argument("--mode", choices=("online", "batch"), required=True)
            parser.add_argument("--preset", default="paper")
            for name in ("--concurrency", "--rpm", "--batch-size", "--batch-max-jobs", "--chunk-size"):
                parser.add_argument(name, type=int)
            parser.add_argument("--poll-interval", type=float, default=1.0)
            parser.add_argument("--http-timeout", type=float)
            augment(parser.parse_args())
    else:
        main()
