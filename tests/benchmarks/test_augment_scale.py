"""`benchmarks/augment_scale.py` in CI, on a few dozen rows: the benchmark's own invariants hold in both modes (the run
killed at 50% and resumed asks no stored answer again, counted at the server, and writes exactly the uninterrupted
run's output), and the figures it prints are computed from what it measured. Timings are not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ULTRAFEEDBACK = ROOT.parent / "shared" / "data" / "ultrafeedback" / "train.jsonl"
ROWS, RPM, CONCURRENCY, CALLS_PER_ROW = 24, 60_000, 8, 26  # the paper preset: 26 calls per row


@pytest.mark.slow
@pytest.mark.skipif(not ULTRAFEEDBACK.exists(), reason=f"needs the shared UltraFeedback sample at {ULTRAFEEDBACK}")
def test_augment_scale_tiny_keeps_its_invariants(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "augment_scale.py"), "--rows", str(ROWS), "--mode", "both"]
    command += ["--preset", "paper", "--rpm", str(RPM), "--latency", "0.01", "--concurrency", str(CONCURRENCY)]
    command += ["--chunk-size", "6", "--batch-size", "30", "--poll-interval", "0.05", "--http-timeout", "5"]
    command += ["--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "figures.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    results = {result["mode"]: result for result in json.loads((tmp_path / "figures.json").read_text())["results"]}
    assert set(results) == {"online", "batch"}
    calls = ROWS * CALLS_PER_ROW

    for mode, result in results.items():
        full, resumed = result["uninterrupted"], result["resumed"]
        # What the server saw, per step, and the runs' logs: what a failure below needs to be understood.
        seen = f"{mode}: {full['new_by_step']} / {resumed['new_by_step']}\n" + _logs(tmp_path / "work", mode)
        # Every call of the pipeline reached the server once in the uninterrupted run.
        assert full["calls"] == full["distinct_calls"] == calls, seen
        assert full["pairs"] == {"original": ROWS, "causal": ROWS * 10, "neutral": ROWS}
        assert full["rows_incomplete"] == resumed["rows_incomplete"] == 0, seen  # no call failed after its retries
        # Killed mid-run (at 50% of the calls, before the end), then resumed to the same output, byte for byte.
        assert calls // 2 <= resumed["answered_before_kill"] < calls
        assert resumed["distinct_calls"] == calls, seen
        assert resumed["output_sha256"] == full["output_sha256"] is not None
        # Counted at the server: no answer the killed process had stored is asked again.
        assert resumed["repeated_stored"] == 0
        if mode == "online":  # only the calls in flight at the kill (answered, never stored) are asked again
            assert resumed["repeated_after_resume"] == resumed["lost_at_kill"] <= CONCURRENCY
            assert resumed["answered_after_resume"] == calls - resumed["cached_at_kill"]
        else:  # a Batch resume adopts its jobs in flight: nothing is asked again
            assert resumed["repeated_after_resume"] == 0
            assert resumed["answered_after_resume"] == calls - resumed["answered_before_kill"]
        assert resumed["cached_at_kill"] == resumed["answered_before_kill"] - resumed["lost_at_kill"]
        parts = resumed["resume_imports_s"] + resumed["resume_data_s"] + resumed["resume_scan_s"]
        assert resumed["resume_s"] == pytest.approx(parts) and resumed["resume_scan_s"] > 0
        assert full["cache_mb"] > 0 and full["chunks_mb"] > 0 and full["maxrss_mb"] > 0
        assert 0 < resumed["killed_peak_anon_mb"] < resumed["killed_maxrss_mb"]  # sampled: the heap, not the files

    # The printed ratios are the measured numbers': the quota-bound ideal is calls / RPM.
    online = results["online"]["uninterrupted"]
    assert online["ideal_s"] == pytest.approx(calls * 60 / RPM)
    assert online["ratio_to_ideal"] == pytest.approx(online["ideal_s"] / online["wall_s"])
    assert online["calls_per_s"] == pytest.approx(calls / online["wall_s"])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in process.stdout.splitlines()}
    assert rows["online"][6] == f"{online['ratio_to_ideal']:.2f}"
    assert rows["online"][4] == f"{online['wall_s']:.1f}" and rows["online"][5] == f"{online['ideal_s']:.1f}"
    assert rows["batch"][11] == "1.00x"  # peak RSS against the smallest size: itself
    for mode in ("online", "batch"):
        assert rows[mode][-1] == "yes |" and rows[mode][-2] == "0"


def _logs(work: Path, mode: str) -> str:
    """The tails of the augmenting processes' logs of `mode` (killed, resumed, uninterrupted)."""
    logs = sorted(work.glob(f"rows-*/{mode}/*/run/log"))
    return "\n".join(f"--- {log.relative_to(work)}\n{log.read_text()[-2000:]}" for log in logs)
