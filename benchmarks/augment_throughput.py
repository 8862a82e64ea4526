"""Oracle throughput: requests/s of `GeminiOracle` against a local Gemini REST server with simulated latency.

The server (`tests/servers/gemini.py`) runs in its own process and answers every `generateContent` call after
`--latency` seconds, so a client with C requests in flight can at best reach C / latency requests per second. For each
concurrency C the script measures the real google-genai client through `GeminiOracle` and prints the rate, its
ratio to the ideal C / latency (goal: >= 0.8 at C = 32) and the speed-up over the sequential client (C = 1),
measured in the same run. Two more rows show the cost of the on-disk cache: C = 32 through a `CachedOracle` with a
cold cache (every answer written as it arrives) and with a warm one (no call at all). A last row runs C = 32
against a server with no latency: the rate this machine's CPUs allow right now, the ceiling of every other row.
Each setting is run `--repeats` times and the best kept, because the CPUs may be shared.

With `--pipeline-rows N` (and the shared UltraFeedback sample present), it also runs `CromeAugmenter` on N rows
against the same server and prints oracle calls and tokens per augmented pair (tokens are the fake server's
whitespace words, a stand-in for real tokenizer counts).

    python benchmarks/augment_throughput.py --latency 0.2 --concurrency 1 8 32 --pipeline-rows 24
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.common import Call, schema_responder  # noqa: E402
from trl_crome.oracles import CachedOracle, GeminiOracle, OracleRequest  # noqa: E402

ULTRAFEEDBACK = ROOT.parent / "shared" / "data" / "ultrafeedback" / "train.jsonl"


def pipeline_responder(call: Call) -> str:
    """Answers Crome's requests: the default schema filler for rubrics; for a rewrite, the source response with its
    first word replaced (same length and format, not identical), so that validation keeps it."""
    found = re.search(r"<response>\n(.*)\n</response>", call.prompt, flags=re.DOTALL)
    if found is None:
        return schema_responder(call)
    words = found.group(1).split(" ")
    return json.dumps({"rewritten": " ".join(["Rewritten"] + words[1:])})


def start_server(latency: float, workdir: Path) -> tuple[subprocess.Popen, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "port"
    command = [sys.executable, "-m", "tests.servers.gemini", "--port", "0", "--port-file", str(port_file)]
    command += ["--latency", str(latency), "--responder", "benchmarks.augment_throughput:pipeline_responder"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("the Gemini test server did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port_file.read_text()}"


def make_oracle(url: str, concurrency: int) -> GeminiOracle:
    # A fake key for the local server; no real API is ever called.
    return GeminiOracle(api_key="benchmark-key", http_options={"base_url": url}, max_concurrency=concurrency)


def timed_rate(oracle, requests: list[OracleRequest]) -> tuple[float, float]:
    """Requests per second answered by `oracle` (all must succeed), and client CPU milliseconds per request."""
    start, cpu = time.perf_counter(), time.process_time()
    responses = oracle.generate(requests, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = [r.error for r in responses if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed: {failed[:3]}")
    return len(requests) / seconds, 1000 * cpu / len(requests)


def throughput_table(
    url: str, latency: float, levels: list[int], per_worker: int, repeats: int, workdir: Path, ceiling_url: str | None
) -> list[tuple]:
    """Rows of (setting, C, req/s, client CPU ms/req, ratio to ideal, speed-up over C=1); best of `repeats` runs."""
    runs = iter(range(10**9))

    def batch(concurrency: int) -> list[OracleRequest]:
        run = next(runs)  # fresh prompts every run: nothing is answered from anywhere but the server
        return [OracleRequest(prompt=f"run {run} request {i}") for i in range(concurrency * per_worker)]

    def best(make, concurrency: int) -> tuple[float, float]:
        return max(timed_rate(make(), batch(concurrency)) for _ in range(repeats))

    make_oracle(url, 1).generate([OracleRequest(prompt="warm-up")], progress=False)
    rows = [(f"C={c}", c, *best(lambda c=c: make_oracle(url, c), c)) for c in levels]
    top = max(levels)
    cache_dir = workdir / "cache"
    rows.append((f"C={top} + cache (cold)", top, *best(lambda: CachedOracle(make_oracle(url, top), cache_dir), top)))
    requests = batch(top)
    CachedOracle(make_oracle(url, top), cache_dir).generate(requests, progress=False)
    warm = CachedOracle(make_oracle(url, top), cache_dir)
    rows.append((f"C={top} + cache (warm)", None, *timed_rate(warm, requests)))
    assert warm.stats.cache_hits == len(requests) and warm.stats.usage.calls == 0
    if ceiling_url is not None:  # no latency at all: how fast this machine's CPUs can go right now
        rows.append((f"C={top}, latency 0", None, *best(lambda: make_oracle(ceiling_url, top), top)))
    sequential = rows[0][2]
    return [
        (name, c, rate, cpu, rate / (c / latency) if c else None, rate / sequential) for name, c, rate, cpu in rows
    ]


def pipeline_figures(url: str, rows: int, workdir: Path) -> dict | None:
    if not ULTRAFEEDBACK.exists():
        print(f"(skipping the pipeline run: {ULTRAFEEDBACK} is absent)")
        return None
    from datasets import load_dataset

    from trl_crome.augment.augmenter import CromeAugmenter, CromeAugmenterConfig

    data = load_dataset("json", data_files=str(ULTRAFEEDBACK), split="train").select(range(rows))
    # The lite preset, as the figures in docs/oracles.md were measured (the server's generic answers carry no verdict).
    config = CromeAugmenterConfig(
        preset="lite", output_dir=str(workdir / "pipeline"), show_progress=False, filter_augmented=False
    )
    augmenter = CromeAugmenter(make_oracle(url, 32), config)
    augmenter(data)
    summary = augmenter.summary
    augmented = summary.pairs.get("causal", 0) + summary.pairs.get("neutral", 0)
    return {
        "rows": rows,
        "pairs": summary.pairs,
        "rejects": summary.rejects,
        "calls": summary.calls,
        "seconds": summary.seconds,
        "calls_per_augmented_pair": summary.calls / augmented,
        "calls_per_causal_pair": summary.calls / max(1, summary.pairs.get("causal", 0)),
        "input_tokens_per_augmented_pair": summary.input_tokens / augmented,
        "output_tokens_per_augmented_pair": summary.output_tokens / augmented,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="simulated seconds per LLM call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-worker", type=int, default=8, help="requests = C x this, per level")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the best is kept (shared CPUs)")
    parser.add_argument("--pipeline-rows", type=int, default=0, help="also run CromeAugmenter on this many rows")
    args = parser.parse_args()
    levels = sorted(set(args.concurrency) | {1})

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server, url = start_server(args.latency, workdir / "slow")
        ceiling_server, ceiling_url = start_server(0.0, workdir / "fast")
        try:
            load_before = os.getloadavg()[0]
            table = throughput_table(
                url, args.latency, levels, args.requests_per_worker, args.repeats, workdir, ceiling_url
            )
            load_after = os.getloadavg()[0]
            pipeline = pipeline_figures(url, args.pipeline_rows, workdir) if args.pipeline_rows else None
        finally:
            for process in (server, ceiling_server):
                process.terminate()
                process.wait(10)

    print(f"\nGeminiOracle throughput, simulated latency {args.latency:g} s per call (ideal = C / latency)")
    print(f"{os.cpu_count()} CPUs, load average {load_before:.1f} -> {load_after:.1f}; best of {args.repeats} runs")
    print(f"{'setting':<24}{'req/s':>10}{'ideal':>10}{'ratio to ideal':>16}{'x sequential':>14}{'CPU ms/req':>12}")
    for name, concurrency, rate, cpu, ratio, speedup in table:
        ideal = f"{concurrency / args.latency:.1f}" if concurrency else "-"
        ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
        print(f"{name:<24}{rate:>10.1f}{ideal:>10}{ratio_text:>16}{speedup:>13.1f}x{cpu:>12.2f}")
    top = max(levels)
    top_ratio = next(row[4] for row in table if row[0] == f"C={top}")
    verdict = "met" if top_ratio >= 0.8 else "NOT met"
    print(f"goal: ratio to ideal >= 0.80 at C={top}: {top_ratio:.2f} ({verdict})")
    ceiling = table[-1][2]
    if ceiling < 1.25 * top / args.latency:
        print(
            f"note: with no latency at all this machine reached only {ceiling:.0f} req/s (CPU-bound: client + server"
            f" share {os.cpu_count()} CPUs at load {load_after:.1f}), too close to the ideal {top / args.latency:.0f}"
            " req/s for the goal to be measurable here"
        )
    if pipeline is not None:
        print(f"\nCromeAugmenter on {pipeline['rows']} UltraFeedback rows ({pipeline['seconds']:.1f} s)")
        print(f"  pairs: {pipeline['pairs']}  rejects: {pipeline['rejects']}  oracle calls: {pipeline['calls']}")
        print(f"  oracle calls per augmented pair (causal + neutral): {pipeline['calls_per_augmented_pair']:.2f}")
        print(f"  oracle calls per causal pair: {pipeline['calls_per_causal_pair']:.2f}")
        print(
            f"  tokens per augmented pair (fake server: words): in {pipeline['input_tokens_per_augmented_pair']:.0f}"
            f" / out {pipeline['output_tokens_per_augmented_pair']:.0f}"
        )


if __name__ == "__main__":
    main()
