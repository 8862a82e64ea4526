"""The recipe's list of benchmarks: RewardBench 2 and RM-Bench run on the saved model (a reward model or a PairPM),
their results reach crome_results.json, the eval/ reports and the model card's tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.benchmark_fixtures import write_rewardbench2, write_rmbench_domain_files
from tests.helpers import tiny_reward_model
from trl_crome.quickstart import default_dataset_path
from trl_crome.recipe import CromeScriptArguments, parse_recipe_args, run_recipe

TINY = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "tiny.yaml"


def test_benchmark_arguments(tmp_path):
    script_args, *_ = parse_recipe_args(
        ["--bf16", "false", "--benchmarks", "rewardbench2", "rmbench", "--rmbench", "a.json", "b.json"],
        default_config=TINY,
    )
    assert script_args.benchmarks == ["rewardbench2", "rmbench"] and script_args.rmbench == ["a.json", "b.json"]
    assert script_args.rewardbench2 == "hub" and script_args.rewardbench2_per_subset is None
    # The default keeps what the recipe always ran; "none" runs nothing.
    assert CromeScriptArguments().benchmarks == ["rewardbench", "robustness"]
    assert CromeScriptArguments(benchmarks=["none"]).benchmarks == []
    # `rewardbench: none` and `robustness_transforms: none` still drop their evaluations.
    everything = ["rewardbench", "robustness", "rewardbench2", "rmbench"]
    assert CromeScriptArguments(benchmarks=everything, rewardbench="none").benchmarks == ["rewardbench2", "rmbench"]
    no_robustness = CromeScriptArguments(benchmarks=everything, robustness_transforms=["none"])
    assert no_robustness.benchmarks == ["rewardbench", "rewardbench2", "rmbench"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        CromeScriptArguments(benchmarks=["rmbench", "mmlu"])
    # A single RM-Bench file written as a string in a YAML config.
    config = tmp_path / "config.yaml"
    config.write_text(TINY.read_text() + "benchmarks: [rmbench]\nrmbench: total_dataset.json\n")
    script_args, *_ = parse_recipe_args(["--config", str(config)])
    assert script_args.benchmarks == ["rmbench"] and script_args.rmbench == ["total_dataset.json"]


@pytest.mark.parametrize("setting", ["bt", "pairpm"])
def test_recipe_runs_rewardbench2_and_rmbench_into_results_reports_and_card(setting, tmp_path, tokenizer):
    from tests.trainer.test_pairpm import tiny_causal_lm

    model_dir = tmp_path / "tiny"
    model = tiny_reward_model(tokenizer) if setting == "bt" else tiny_causal_lm(tokenizer, initializer_range=0.1)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rewardbench2 = write_rewardbench2(tmp_path / "rb2.jsonl")
    rmbench = [str(p) for p in write_rmbench_domain_files(tmp_path / "rmbench")]
    output_dir = tmp_path / "out"
    args = ["--model_name_or_path", str(model_dir), "--dataset_name", str(default_dataset_path())]
    args += ["--setting", setting, "--augment", "false", "--max_train_samples", "4", "--max_steps", "1"]
    args += ["--benchmarks", "rewardbench2", "rmbench", "--rewardbench2", str(rewardbench2), "--rmbench", *rmbench]
    args += ["--max_length", "384"]  # the PairPM instruction alone takes 120 tokens
    result = run_recipe(*parse_recipe_args([*args, "--output_dir", str(output_dir)], default_config=TINY))

    model_type = "reward" if setting == "bt" else "preference"  # the PairPM is scored by pairwise comparisons
    assert result.rewardbench is None and result.robustness is None
    assert result.rewardbench2.model_type == model_type and result.rewardbench2.num_rows == 14
    assert result.rmbench.model_type == model_type
    assert result.rmbench.domain_counts == {"chat": 2, "math": 1, "code": 1, "safety": 2}
    saved = json.loads((output_dir / "crome_results.json").read_text())
    assert saved["rewardbench"] is None and saved["rewardbench2"]["score"] == pytest.approx(result.rewardbench2.score)
    assert saved["rmbench"]["overall"] == pytest.approx(result.rmbench.overall)
    for name in ("rewardbench2.json", "rewardbench2_subsets.png", "rmbench.md", "rmbench_matrices.png"):
        assert (output_dir / "eval" / name).exists(), name

    card = (output_dir / "README.md").read_text()
    assert "### Evaluation: RewardBench 2" in card and "### Evaluation: RM-Bench" in card
    score = f"{100 * result.rewardbench2.score:.2f}"
    assert f"| **Score** (mean of 6 subsets) | 14 | **{score}** |" in card and "| Ties term | Weight |" in card
    hard = f"{100 * result.rmbench.overall['hard']:.2f}"
    assert f"| **Overall** | 6 | **{hard}** |" in card and "Hard-easy gap" in card
    assert "chosen \\ rejected" not in card  # the style matrices stay in eval/rmbench.md
    assert "Evaluation: RewardBench\n" not in card
