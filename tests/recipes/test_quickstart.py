"""The quickstart's parts: the package's own preference set, the choice of evaluation data (shared RewardBench copy,
Hub, or a held-out part of the data), the arguments it gives the recipe, its report; and one small real run."""

from __future__ import annotations

import re

import pytest
from datasets import Dataset

from trl_crome.data import validate_preference_dataset
from trl_crome.evaluation.rewardbench import load_rewardbench, score_rewardbench
from trl_crome.quickstart import (
    HELD_OUT_SUBSET,
    QuickstartConfig,
    build_recipe_args,
    default_dataset_path,
    format_report,
    hold_out_rewardbench,
    resolve_rewardbench,
    run_quickstart,
)
from trl_crome.recipe import RecipeResult, load_preference_data


def answer(row, field):
    return row[field][-1]["content"]


def test_default_preference_set_is_valid_and_diverse():
    dataset = load_preference_data(str(default_dataset_path()))
    _, kinds = validate_preference_dataset(dataset)
    assert len(dataset) == 62 and kinds == ["original"]
    prompts = [row["prompt"][0]["content"] for row in dataset]
    assert len(set(prompts)) == len(prompts)
    assert all(row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant" for row in dataset)
    assert all(answer(row, "chosen") != answer(row, "rejected") for row in dataset)
    # Length alone must not separate the answers: some rejected answers are the longer ones.
    rejected_longer = sum(len(answer(row, "rejected")) > len(answer(row, "chosen")) for row in dataset)
    assert 5 <= rejected_longer <= len(dataset) // 2


def test_hold_out_writes_a_rewardbench_file(tmp_path):
    dataset = load_preference_data(str(default_dataset_path()))
    path = tmp_path / "held_out.jsonl"
    kept = hold_out_rewardbench(dataset, 0.25, seed=0, path=path)
    rows = load_rewardbench(path)
    assert len(rows) == 15 and len(kept) == 47
    assert {row["subset"] for row in rows} == {HELD_OUT_SUBSET}
    kept_prompts = {row["prompt"][0]["content"] for row in kept}
    assert not kept_prompts & {row["prompt"] for row in rows}  # no pair is both trained on and scored
    first = rows[0]
    source = dataset[first["id"]]
    assert first["chosen"] == answer(source, "chosen") and first["rejected"] == answer(source, "rejected")


def test_rewardbench_source_order(tmp_path, monkeypatch):
    import trl_crome.quickstart as quickstart

    shared = tmp_path / "filtered.jsonl"
    monkeypatch.setattr(quickstart, "SHARED_REWARDBENCH", shared)
    assert resolve_rewardbench(QuickstartConfig(rewardbench="mine.jsonl"))[0] == "mine.jsonl"
    # conftest sets HF_HUB_OFFLINE=1: with no shared copy, nothing is reachable and the data is held out.
    assert resolve_rewardbench(QuickstartConfig())[0] is None
    shared.write_text("")
    assert resolve_rewardbench(QuickstartConfig())[0] == str(shared)


def test_recipe_args_hold_out_when_no_rewardbench(tmp_path, monkeypatch):
    import trl_crome.quickstart as quickstart

    monkeypatch.setattr(quickstart, "SHARED_REWARDBENCH", tmp_path / "absent.jsonl")
    (script_args, training_args, model_args, augment_args), note = build_recipe_args(
        QuickstartConfig(output_dir=str(tmp_path / "qs"), num_pairs=10, max_steps=3)
    )
    assert "evaluating on 15 held-out pairs" in note
    assert script_args.rewardbench == str(tmp_path / "qs" / "held_out_rewardbench.jsonl")
    # Every held-out pair is scored and transformed: the per-subset samples are for RewardBench's many subsets.
    assert script_args.rewardbench_per_subset == script_args.robustness_per_subset == 15
    assert len(load_preference_data(script_args.dataset_name)) == 47
    assert script_args.oracle == "transformers" and script_args.max_train_samples == 10
    assert training_args.max_steps == 3 and training_args.bf16 is False and training_args.use_cpu is True
    assert training_args.output_dir == str(tmp_path / "qs" / "model")
    assert model_args.model_name_or_path.endswith("SmolLM2-135M-Instruct")
    assert augment_args.filter_augmented is False and augment_args.identify_rubrics is False


def test_report_has_every_part():
    rows = [{"id": i, "subset": "alpacaeval-easy", "prompt": "p", "chosen": "a", "rejected": "b"} for i in range(4)]
    rewardbench = score_rewardbench(rows, {"margin": [1.0, 1.0, -1.0, 2.0]})
    result = RecipeResult(
        output_dir="out",
        train_metrics={"loss": 0.5, "accuracy": 0.75, "margin": 0.3, "tie_abs_margin": 0.125, "train_runtime": 12.0},
        rewardbench=rewardbench,
    )
    report = format_report(result, "RewardBench from somewhere", seconds=90)
    lines = report.splitlines()
    assert any(line.startswith("tie |d| (mean |r1 - r2|") and line.endswith(" 0.1250") for line in lines)
    assert any(line.startswith("accuracy on preference pairs") and line.endswith(" 0.7500") for line in lines)
    assert "| alpacaeval-easy | 4 | 75.00 |" in report
    assert "Evaluation data: RewardBench from somewhere" in report and "Total time: 1.5 min" in report


def test_report_headline_is_the_held_out_accuracy():
    rows = [{"id": i, "subset": HELD_OUT_SUBSET, "prompt": "p", "chosen": "a", "rejected": "b"} for i in range(15)]
    rewardbench = score_rewardbench(rows, {"margin": [1.0] * 11 + [-1.0] * 4})
    report = format_report(RecipeResult(output_dir="out", rewardbench=rewardbench), "held out", seconds=60)
    assert "## Held-out accuracy: 73.33% (11 of 15 pairs ranked correctly)" in report
    assert not re.search(r"\bnan\b", report) and "Overall" not in report


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch):
    """A small real run, offline as on a laptop without the shared data: SmolLM2-135M writes the rewrites, a SmolLM2
    reward model trains 2 steps, and every one of the 15 held-out pairs is scored (the report's headline)."""
    import trl_crome.quickstart as quickstart

    monkeypatch.setattr(quickstart, "SHARED_REWARDBENCH", tmp_path / "absent.jsonl")  # conftest: the Hub is offline
    config = QuickstartConfig(
        output_dir=str(tmp_path / "qs"), num_pairs=3, max_steps=2, max_length=128, transforms=["add_quotes"]
    )
    result, report = run_quickstart(config)
    summary = result.augmentation
    assert summary.input_rows == 3 and summary.pairs["original"] == 3
    assert summary.calls == 6  # one degrade and one upgrade rewrite per pair, no rubric calls
    assert summary.pairs["causal"] + sum(summary.rejects.values()) == 6
    assert summary.pairs["neutral"] == 3 + summary.pairs["causal"]
    rewardbench = result.rewardbench
    assert rewardbench.num_pairs == 15 and set(rewardbench.subset_accuracy) == {HELD_OUT_SUBSET}
    assert result.robustness.per_transform["add_quotes"]["changed"] == 15
    correct = round(15 * rewardbench.subset_accuracy[HELD_OUT_SUBSET])
    assert f"## Held-out accuracy: {100 * correct / 15:.2f}% ({correct} of 15 pairs" in report
    assert not re.search(r"\bnan\b", report) and "## Robustness" in report
    assert (tmp_path / "qs" / "report.md").read_text() == report
    card = (tmp_path / "qs" / "model" / "README.md").read_text()
    assert f"({correct} of 15 pairs ranked correctly; subsets: {HELD_OUT_SUBSET})" in card
    assert not re.search(r"\bnan\b", card)
    assert "fine-tuned version of `SmolLM2-135M-Instruct` (a local model folder)" in card
    assert isinstance(load_preference_data(str(tmp_path / "qs" / "model" / "crome_data" / "dataset")), Dataset)
