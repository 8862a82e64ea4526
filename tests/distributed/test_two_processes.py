"""Two CPU processes under `accelerate launch`, with CPU variants of the project's own accelerate configs (DDP,
DeepSpeed ZeRO-2, DeepSpeed ZeRO-3), train every case of `cases.py` (Bradley-Terry padded, padding-free and LoRA;
PairPM) exactly as one process does, and ZeRO-3's 16-bit save reloads into the model that was trained.

Two processes with 4 pairs each see, at every step, the 8 pairs one process sees, so the per-step loss, the Crome
metrics (gathered from both processes), the evaluation metrics and the final weights must agree. Tolerance: relative
1e-4 and absolute 1e-6 on every compared value (fp32 sums reduced in another order: the largest differences seen
are 2e-7 absolute on a weight and 1.3e-5 relative on a PairPM gradient norm).

FSDP2 is not here: accelerate applies FSDP only on accelerator devices, see `test_fsdp2_on_cpu.py`.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.cases import probe_rewards
from tests.distributed.conftest import TRAINING_CASES
from tests.distributed.harness import cpu_variant, run_cases

RTOL, ATOL = 1e-4, 1e-6
LAUNCH_CONFIGS = {
    "multi_gpu": ("MULTI_CPU", None),
    "deepspeed_zero2": ("DEEPSPEED", 2),
    "deepspeed_zero3": ("DEEPSPEED", 3),
}
# Logged values computed from the pairs of every process. TRL's own `min/mean/max_reward` are means of per-process
# values and `eval_loss` a mean of per-process means: they are not expected to match a single process.
TRAIN_KEYS = {"loss", "grad_norm", "accuracy", "margin", "tie_abs_margin", "tie_p_deviation", "position_bias"}


def compared(log: dict) -> dict:
    return {key: value for key, value in log.items() if key in TRAIN_KEYS or key.startswith(("loss/", "count/"))}


def final_weights(output_dir, case: str) -> dict[str, torch.Tensor]:
    folder = output_dir / case / "final"
    return load_file(folder / ("adapter_model.safetensors" if case == "bt_lora" else "model.safetensors"))


@pytest.fixture(scope="module", params=sorted(LAUNCH_CONFIGS))
def two_processes(request, base_models, tmp_path_factory):
    """Every training case in one `accelerate launch` of 2 processes with the CPU variant of a shipped config."""
    output_dir = tmp_path_factory.mktemp(request.param)
    config = cpu_variant(request.param, output_dir)
    return request.param, output_dir, run_cases(output_dir, TRAINING_CASES, config=config, models=base_models)


@pytest.mark.slow
def test_every_process_runs_in_the_launched_world(two_processes):
    name, _, results = two_processes
    distributed_type, zero_stage = LAUNCH_CONFIGS[name]
    for case, result in results.items():
        worlds = result["worlds"]  # what each process checked and recorded from inside
        assert sorted(world["rank"] for world in worlds) == [0, 1], case
        for world in worlds:
            assert world["world_size"] == world["process_group_size"] == 2, (case, world)
            assert (world["distributed_type"], world["zero_stage"]) == (distributed_type, zero_stage), (case, world)


@pytest.mark.slow
@pytest.mark.parametrize("case", TRAINING_CASES)
def test_losses_and_metrics_match_one_process(two_processes, one_process, case):
    _, _, results = two_processes
    two, one = results[case], one_process[1][case]
    assert one["worlds"][0]["world_size"] == 1
    train_two = [compared(log) for log in two["log_history"] if "loss" in log]
    train_one = [compared(log) for log in one["log_history"] if "loss" in log]
    assert len(train_two) == len(train_one) == 3
    for step, (log_two, log_one) in enumerate(zip(train_two, train_one)):
        assert log_two.keys() == log_one.keys(), step
        for key, value in log_one.items():
            assert log_two[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (step, key)
    # Evaluation pairs (18 BT, 9 PairPM: not a multiple of the global batch) gathered from both processes are counted
    # once, where the sampler pads the last batch.
    counts = {key: value for key, value in two["eval"].items() if key.startswith("eval_count/")}
    assert sum(counts.values()) == (9 if case == "pairpm" else 18)
    bt_scores = ("eval_accuracy", "eval_margin", "eval_tie_abs_margin")
    scores = ("eval_accuracy", "eval_tie_p_deviation") if case == "pairpm" else bt_scores
    evaluated = {key: one["eval"][key] for key in scores} | {
        key: value for key, value in one["eval"].items() if key.startswith(("eval_loss/", "eval_count/"))
    }
    for key, value in evaluated.items():
        assert two["eval"][key] == pytest.approx(value, rel=RTOL, abs=ATOL), key


@pytest.mark.slow
@pytest.mark.parametrize("case", TRAINING_CASES)
def test_final_weights_match_one_process(two_processes, one_process, case):
    _, output_dir, results = two_processes
    weights_two, weights_one = final_weights(output_dir, case), final_weights(one_process[0], case)
    assert weights_two.keys() == weights_one.keys() and weights_one
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=RTOL, atol=ATOL, msg=name)
    if results[case]["probe"] is not None:  # the trained models score alike too
        assert results[case]["probe"] == pytest.approx(one_process[1][case]["probe"], rel=RTOL, abs=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case in TRAINING_CASES if case.startswith("bt")])
def test_saved_model_reloads_with_the_rewards_it_was_trained_to(two_processes, case):
    """The folder `save_model` wrote (under ZeRO-3: gathered by `zero3_save_16bit_model`) loads with
    `from_pretrained` / PEFT into a model that gives exactly the rewards the sharded model gave in the processes."""
    from trl_crome.evaluation.scoring import load_reward_model

    _, output_dir, results = two_processes
    model, tokenizer = load_reward_model(output_dir / case / "final")
    assert probe_rewards(model, tokenizer) == results[case]["probe"]
