"""`benchmarks/gpu_check.py --tiny` in CI: the GPU check's own code (padded vs padding-free rewards, the three
trainers' throughput, the recipe memory steps, the ZeRO-3 run under `accelerate launch` and the reload of its save,
prefix sharing's exactness and its speed against padding-free) runs on CPU with tiny shapes and passes, so that a GPU
session only has to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_tiny_passes_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--tiny",
        "--json",
        str(tmp_path / "rows.json"),
    ]
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    by_check: dict[str, list[dict]] = {}
    for row in rows:
        by_check.setdefault(row["check"], []).append(row)
    assert all(row["ok"] is not False for row in rows)

    equality = by_check["padded = padding-free rewards"]
    assert [row["setting"].split(",")[0] for row in equality] == ["qwen2.5-7b", "gemma-2-2b"]
    assert all(row["ok"] is True for row in equality)  # fp32 on CPU: within 1e-4 of the reward scale

    throughput = by_check["throughput vs stock TRL"]
    assert len(throughput) == 6 and {row["setting"].split(", ")[1] for row in throughput} == {
        "trl",
        "crome_padded",
        "crome_padding_free",
    }
    assert all(float(row["measured"].split(" ")[0].replace(",", "")) > 0 for row in throughput)

    memory = by_check["recipe memory vs plan"]
    assert [row["setting"].split(":")[0] for row in memory] == ["gemma2b-full", "gemma9b-lora"]

    [zero3] = by_check["ZeRO-3, 1 process"]
    assert zero3["ok"] is True and "3 steps" in zero3["setting"]
    [reload] = by_check["ZeRO-3 16-bit save reloads"]
    assert reload["ok"] is True and reload["measured"] == "max |reward diff| 0.00e+00"
    assert "| ZeRO-3 16-bit save reloads" in process.stdout  # the one printed table

    exact = by_check["prefix sharing = padded"]  # eager stands in for flex attention on CPU
    assert [row["setting"].split(", ")[2] for row in exact] == ["sdpa", "eager"]
    assert all(row["ok"] is True for row in exact)  # rewards and every gradient, fp32
    speed = by_check["prefix sharing vs padding-free"]
    assert len(speed) == 2 and all(row["ok"] is None for row in speed)  # speed is read, not judged, on CPU
    for row in speed:  # the same batches: sharing computes fewer positions than there are real tokens
        shared, unshared = map(float, row["measured"].split("computed/real tokens ")[1].split(";")[0].split(" vs "))
        assert shared < 1.0 <= unshared, row["measured"]
