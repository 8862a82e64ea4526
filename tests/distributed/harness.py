"""A reusable harness for real multi-process runs on CPU: the project's own accelerate configs turned into 2-process
CPU variants, `accelerate launch` of a script with them, and the 1-process run to compare against.

- [`cpu_variant`] writes a copy of `recipes/accelerate_configs/<name>.yaml` with `use_cpu: true`, 2 processes and
  fp32 (`mixed_precision: "no"`): everything else (ZeRO stage, `zero3_init_flag`, `zero3_save_16bit_model`, FSDP
  sharding and state-dict settings) is the shipped config's, so a test exercises what users launch.
- [`launch`] runs `accelerate launch --config_file <variant> script ...`. With `use_cpu: true` accelerate still
  picks the launcher of the config's `distributed_type` (torch elastic for DDP / FSDP, DeepSpeed's for ZeRO), so two
  real processes join a gloo group; `--cpu` would start only one. DeepSpeed runs on its CPU accelerator
  (`DS_ACCELERATOR=cpu`).
- `tests/distributed/cases.py` is the launched script: it runs any number of named training cases one after the other
  in the same processes (start-up is paid once per launch) and writes what each produced. A new case is one function
  added to its `CASES`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "recipes" / "accelerate_configs"
CASES_SCRIPT = ROOT / "tests" / "distributed" / "cases.py"
NUM_PROCESSES = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_variant(name: str, directory: Path, num_processes: int = NUM_PROCESSES, **overrides) -> Path:
    """A CPU copy of the shipped accelerate config `name` (e.g. `"deepspeed_zero3"`), written into `directory`."""
    config = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    config.update(use_cpu=True, num_processes=num_processes, mixed_precision="no", **overrides)
    config.pop("gpu_ids", None)
    path = Path(directory) / f"{name}_cpu.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=True))
    return path


def env(**extra: str) -> dict[str, str]:
    """The launched processes' environment: the checkout importable, offline, one thread each, DeepSpeed on CPU."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        **extra,
    }


def launch(
    script: str | Path, *args: str, config: Path | None = None, cwd: Path = ROOT, timeout: int = 600, **extra_env: str
) -> subprocess.CompletedProcess:
    """Run `script` under `accelerate launch --config_file config` (one process when `config` is `None`)."""
    if config is None:
        command = [sys.executable, str(script), *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        command += ["--main_process_port", str(free_port()), str(script), *args]
    return subprocess.run(command, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)


def assert_ran(process: subprocess.CompletedProcess) -> None:
    assert process.returncode == 0, process.stdout[-3000:] + "\n" + process.stderr[-8000:]


def run_cases(output_dir: Path, cases: list[str], config: Path | None = None, **options: str) -> dict[str, dict]:
    """Run training `cases` (names of `cases.CASES`) in one launch; returns each case's results by name."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    process = launch(CASES_SCRIPT, str(output_dir), *cases, *flags, config=config)
    assert_ran(process)
    return {case: json.loads((Path(output_dir) / case / "result.json").read_text()) for case in cases}
