"""Two CPU processes under `accelerate launch` train a tiny model; metrics and weights match one process.

accelerate's `--cpu` launcher starts a single process unless it is given an MPI hostfile, so the test uses its
torch-elastic launcher (`--multi_gpu --num_processes 2`) with `use_cpu=True` in the config: two real processes joined
by a gloo process group (`DistributedType.MULTI_CPU`), nothing mocked.

Two processes with 4 pairs each see, at every step, the same 8 pairs as one process with 8, so the logged loss and the
per-pair metrics (gathered from both processes) and the final weights must agree.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "tests/trainer/distributed_run.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(free_port())]
    run([*launcher, SCRIPT, str(tmp_path / "two"), "4"])
    run([sys.executable, SCRIPT, str(tmp_path / "one"), "8"])

    two = json.loads((tmp_path / "two" / "log_history.json").read_text())
    one = json.loads((tmp_path / "one" / "log_history.json").read_text())
    assert (two["world_size"], one["world_size"]) == (2, 1)
    train_two = [log for log in two["log_history"] if "loss" in log]
    train_one = [log for log in one["log_history"] if "loss" in log]
    eval_two = next(log for log in two["log_history"] if "eval_loss" in log)
    eval_one = next(log for log in one["log_history"] if "eval_loss" in log)
    assert len(train_two) == len(train_one) == 2
    keys = ["loss", "accuracy", "margin", "tie_abs_margin", "loss/original", "loss/causal", "loss/neutral"]
    for log_two, log_one in zip(train_two, train_one):
        for key in keys:
            assert log_two[key] == pytest.approx(log_one[key], rel=1e-4, abs=1e-5), key
        for key in ("count/original", "count/causal", "count/neutral"):
            assert log_two[key] == log_one[key], key
    # 18 eval pairs: the gathered counts are exact (no pair counted twice by the distributed sampler's padding).
    assert sum(eval_two[f"eval_count/{k}"] for k in ("original", "causal", "neutral")) == 18
    for key in ["eval_accuracy", "eval_tie_abs_margin", "eval_loss/original", "eval_loss/neutral"]:
        assert eval_two[key] == pytest.approx(eval_one[key], rel=1e-4, abs=1e-5), key

    weights_two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    weights_one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-4, atol=1e-5, msg=name)
