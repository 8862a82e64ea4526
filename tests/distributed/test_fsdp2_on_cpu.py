"""FSDP2 cannot run on CPU through accelerate, and this test shows exactly what happens instead.

torch's FSDP2 (`fully_shard`) itself works on CPU with gloo, but accelerate (1.15 here) selects FSDP only when the
processes run on an accelerator (`MULTI_GPU`, `MULTI_XPU`, ...): with the CPU variant of `fsdp2.yaml`, the two
processes run plain data parallelism (`MULTI_CPU`), the FSDP settings unused and no error or warning raised. What
Crome adds to a trainer under FSDP2 is therefore checked on a GPU machine only (docs/recipes.md says so); this test
fails as soon as an accelerate release starts sharding on CPU, so that the FSDP2 runs can join
`test_two_processes.py`.
"""

from __future__ import annotations

import pytest

from tests.distributed.harness import cpu_variant, run_cases


@pytest.mark.slow
def test_fsdp2_config_runs_as_plain_data_parallelism_on_cpu(base_models, one_process, tmp_path):
    config = cpu_variant("fsdp2", tmp_path)
    result = run_cases(tmp_path, ["bt_padded"], config=config, models=base_models)["bt_padded"]
    for world in result["worlds"]:
        assert world["world_size"] == world["process_group_size"] == 2
        assert (world["distributed_type"], world["fsdp_version"]) == ("MULTI_CPU", None), world
    # Not sharded, but still a correct 2-process run.
    one = one_process[1]["bt_padded"]
    assert [log["loss"] for log in result["log_history"] if "loss" in log] == pytest.approx(
        [log["loss"] for log in one["log_history"] if "loss" in log], rel=1e-4, abs=1e-6
    )
