"""Prefix sharing under DeepSpeed ZeRO-3 with two CPU processes (the CPU variant of the shipped
`deepspeed_zero3.yaml`): `prefix_sharing=True, group_by_prompt=True` trains exactly as one plain process on the
padded path with the same prompt-grouped order. Compared: the loss history and Crome metrics of every step, the
evaluation metrics (11 pairs: not a multiple of the global batch), the final weights gathered by ZeRO-3's 16-bit save
and the rewards of the trained model, before and after reloading the saved folder; same tolerances as
`test_two_processes.py` (relative 1e-4, absolute 1e-6).

The weights are compared link by link: ZeRO-3 prefix sharing against one process with prefix sharing (the
distributed run), and that against one padded process (the layout). Each link stays within the tolerance, but their
fp32 reorderings can add up: the embedding row of the most frequent token ("the"), whose gradient sums over many
positions, was seen 6.2e-7 apart in the first link, 9.5e-7 in the second and 1.6e-6 end to end."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.cases import probe_rewards
from tests.distributed.harness import cpu_variant, run_cases
from tests.distributed.test_two_processes import ATOL, RTOL, compared, final_weights

PADDED, SHARED = "bt_grouped_padded", "bt_prefix_sharing"


@pytest.fixture(scope="module")
def runs(base_models, tmp_path_factory):
    """`(output_dir, results by case)` of one plain process (padded, then prefix sharing) and of prefix sharing in
    two ZeRO-3 processes."""
    one_dir, two_dir = tmp_path_factory.mktemp("grouped_one_process"), tmp_path_factory.mktemp("prefix_zero3")
    one = run_cases(one_dir, [PADDED, SHARED], models=base_models)
    config = cpu_variant("deepspeed_zero3", two_dir)
    two = run_cases(two_dir, [SHARED], config=config, models=base_models)
    return (one_dir, one), (two_dir, two)


def assert_weights_equal(folder_a, case_a: str, folder_b, case_b: str) -> None:
    weights_a, weights_b = final_weights(folder_a, case_a), final_weights(folder_b, case_b)
    assert weights_a.keys() == weights_b.keys() and weights_a
    for name, value in weights_b.items():
        torch.testing.assert_close(weights_a[name], value, rtol=RTOL, atol=ATOL, msg=f"{case_a} vs {case_b}: {name}")


@pytest.mark.slow
def test_prefix_sharing_under_zero3_trains_as_one_padded_process(runs):
    (one_dir, one_results), (two_dir, two_results) = runs
    one, two = one_results[PADDED], two_results[SHARED]
    assert one["worlds"][0]["world_size"] == 1 and one["worlds"][0]["zero_stage"] is None
    assert sorted(world["rank"] for world in two["worlds"]) == [0, 1]
    assert all((w["world_size"], w["distributed_type"], w["zero_stage"]) == (2, "DEEPSPEED", 3) for w in two["worlds"])

    train_one = [compared(log) for log in one["log_history"] if "loss" in log]
    train_two = [compared(log) for log in two["log_history"] if "loss" in log]
    assert len(train_one) == len(train_two) == 3 and len({log["loss"] for log in train_one}) == 3
    assert any(log["count/neutral"] > 0 for log in train_one)  # ties among the compared pairs
    for step, (log_two, log_one) in enumerate(zip(train_two, train_one)):
        assert log_two.keys() == log_one.keys(), step
        for key, value in log_one.items():
            assert log_two[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (step, key)

    assert sum(value for key, value in two["eval"].items() if key.startswith("eval_count/")) == 11
    for key in ("eval_accuracy", "eval_margin", "eval_tie_abs_margin"):
        assert two["eval"][key] == pytest.approx(one["eval"][key], rel=RTOL, abs=ATOL), key
    for key, value in one["eval"].items():
        if key.startswith(("eval_loss/", "eval_count/")):
            assert two["eval"][key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    assert two["probe"] == pytest.approx(one["probe"], rel=RTOL, abs=ATOL)  # the trained models score alike

    assert_weights_equal(two_dir, SHARED, one_dir, SHARED)  # ZeRO-3 = one process, both with prefix sharing
    assert_weights_equal(one_dir, SHARED, one_dir, PADDED)  # prefix sharing = padded, one process


@pytest.mark.slow
def test_the_compared_runs_trained(runs, base_models):
    (one_dir, _), _ = runs
    initial = load_file(base_models / "tiny-rm" / "model.safetensors")
    trained = final_weights(one_dir, PADDED)
    assert max((trained[name] - value).abs().max().item() for name, value in initial.items()) > 1e-3


@pytest.mark.slow
def test_prefix_shared_zero3_save_reloads_with_its_rewards(runs):
    from trl_crome.evaluation.scoring import load_reward_model

    _, (two_dir, two) = runs
    model, tokenizer = load_reward_model(two_dir / SHARED / "final")
    assert probe_rewards(model, tokenizer) == two[SHARED]["probe"]
