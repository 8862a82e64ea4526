"""The recipe end to end under `accelerate launch` with 2 CPU processes and DeepSpeed ZeRO-3 (the CPU variant of
`recipes/accelerate_configs/deepspeed_zero3.yaml`, see `tests/distributed/harness.py`): a tiny random Llama reward
model (real SmolLM2 tokenizer), built sharded by `zero3_init_flag`, is trained on pairs of the package's own
preference set, augmented through the real `GeminiOracle` talking to a local Gemini REST server with scripted answers
(an LLM cannot run in a test), filtered with a baseline model, saved gathered by `zero3_save_16bit_model`, evaluated
on a tiny RewardBench-format file and a robustness check, and given its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.augment.scripted import gemini_responder
from tests.distributed.harness import assert_ran, cpu_variant, launch
from tests.helpers import smollm2_tokenizer, tiny_reward_model
from tests.servers.gemini import GeminiServer
from trl_crome.quickstart import default_dataset_path

REPO = Path(__file__).resolve().parents[2]
NUM_PAIRS = 6
FAKE_KEY = "test-key-not-a-secret"
REWARDBENCH_SUBSETS = ("alpacaeval-easy", "mt-bench-hard", "donotanswer", "hep-python")


def write_rewardbench(path: Path) -> None:
    rows = []
    for subset in REWARDBENCH_SUBSETS:
        for i in range(2):
            rows.append(
                {
                    "id": len(rows),
                    "subset": subset,
                    "prompt": f"Question {i} of {subset}: what is {i} + {i}?",
                    "chosen": f"The answer is {2 * i}.",
                    "rejected": f"The answer is {2 * i + 1}, obviously.",
                }
            )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    tokenizer = smollm2_tokenizer()
    model_dir = tmp / "tiny-llama"
    tiny_reward_model(tokenizer, seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rewardbench = tmp / "rewardbench.jsonl"
    write_rewardbench(rewardbench)
    output_dir = tmp / "out"
    with GeminiServer(responder=gemini_responder) as server:
        arguments = [
            "--config", str(REPO / "recipes" / "configs" / "tiny.yaml"),
            "--model_name_or_path", str(model_dir),
            "--dataset_name", str(default_dataset_path()),
            "--max_train_samples", str(NUM_PAIRS),
            "--oracle", "gemini",
            "--oracle_kwargs", json.dumps({"http_options": {"base_url": server.url}, "backoff_base": 0.0}),
            "--baseline_model", str(model_dir),
            "--filter_augmented", "true",
            "--filter_tau", "0.0",
            "--rewardbench", str(rewardbench),
            "--output_dir", str(output_dir),
        ]  # fmt: skip
        config = cpu_variant("deepspeed_zero3", tmp)
        process = launch(REPO / "recipes" / "crome.py", *arguments, config=config, cwd=tmp, GEMINI_API_KEY=FAKE_KEY)
    assert_ran(process)
    return output_dir, process, model_dir


@pytest.mark.slow
def test_recipe_trains_evaluates_and_saves(recipe_run):
    output_dir, _, _ = recipe_run
    assert (output_dir / "config.json").exists() and (output_dir / "model.safetensors").exists()
    assert (output_dir / "tokenizer_config.json").exists()
    results = json.loads((output_dir / "crome_results.json").read_text())

    # 6 originals; 1 attribute x 2 directions each -> 12 causal; one neutral per original and per causal -> 18.
    augmentation = results["augmentation"]
    assert augmentation["input_rows"] == NUM_PAIRS
    assert augmentation["pairs"] == {"original": 6, "causal": 12, "neutral": 18}
    assert augmentation["filtered_out"] == {"causal": 0, "neutral": 0}  # tau = 0 keeps every pair
    assert (output_dir / "crome_data" / "dataset" / "dataset_info.json").exists()

    # Two steps of 2 pairs on each of 2 processes, logged every step.
    assert results["world_size"] == 2 and results["distributed_type"] == "DEEPSPEED"
    assert results["train_metrics"]["epoch"] > 0
    assert 0.0 <= results["train_metrics"]["accuracy"] <= 1.0

    rewardbench = results["rewardbench"]
    assert rewardbench["num_pairs"] == 2 * len(REWARDBENCH_SUBSETS)
    assert set(rewardbench["subset_accuracy"]) == set(REWARDBENCH_SUBSETS)
    assert set(rewardbench["section_scores"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert (output_dir / "eval" / "rewardbench.json").exists()
    robustness = results["robustness"]
    assert set(robustness["per_transform"]) == {"add_quotes", "char_swap"}
    assert robustness["per_transform"]["add_quotes"]["changed"] == robustness["num_pairs"] == 8


@pytest.mark.slow
def test_model_card_carries_the_crome_settings_and_results(recipe_run):
    output_dir, _, model_dir = recipe_run
    card = (output_dir / "README.md").read_text()
    results = json.loads((output_dir / "crome_results.json").read_text())
    # Front matter: tags of TRL and Crome.
    front_matter = card.split("---")[1]
    for tag in ("trl", "reward-trainer", "crome"):
        assert f"- {tag}" in front_matter
    assert "# Model Card for out" in card
    # Crome loss and the training pairs per kind (originals + kept augmented pairs).
    assert "lambda = 1.0" in card
    for kind, count in results["augmentation"]["pairs"].items():
        assert f"| {kind} | {count} |" in card
    # Base model, data, augmentation settings.
    # Local folders and files by their own names: no machine path anywhere in the card.
    assert str(model_dir.parent) not in card and "None" not in card
    assert f"Base model: `{model_dir.name}`" in card and f"fine-tuned version of `{model_dir.name}`" in card
    assert f"Preference data: `{default_dataset_path().name}`" in card
    assert "Oracle: `gemini` / `backend default`" in card
    # The settings the augmenter ran with (its preset resolved), not the unset fields of the command line.
    assert "- Preset: `lite`" in card and "per row / per original / per causal pair: 0.0 / 1 / 1" in card
    assert f"Baseline filter: tau = 0.0 (baseline `{model_dir.name}`)" in card
    assert "directions degrade, upgrade" in card
    # Evaluation results: the RewardBench table and the robustness drop.
    overall = 100 * results["rewardbench"]["overall"]
    assert f"| **Overall** | **{overall:.2f}** |" in card
    assert "| Chat Hard |" in card
    assert "Mean accuracy drop over" in card and "| add_quotes | controlled |" in card
    # Citation of the paper, and no secret anywhere in what was written.
    assert "srivastava2026crome" in card
    for path in output_dir.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".jsonl", ".txt"):
            assert "test-key-not-a-secret" not in path.read_text(errors="ignore"), path


def test_baseline_is_trained_once_on_the_original_pairs(tmp_path, tokenizer):
    """`baseline_model: train` trains a reward model with the recipe's settings into <output_dir>/baseline, and a
    rerun (e.g. a resumed job) reuses it instead of training again."""
    from trl import ModelConfig

    from trl_crome.recipe import BASELINE_DIR, load_preference_data, train_baseline
    from trl_crome.trainer import CromeRewardConfig, CromeRewardTrainer

    model_dir = tmp_path / "tiny-llama"
    tiny_reward_model(tokenizer, seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    training_args = CromeRewardConfig(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, max_length=64, bf16=False,
        use_cpu=True, activation_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
        push_to_hub=False,
    )  # fmt: skip
    dataset = load_preference_data(str(default_dataset_path())).select(range(4))
    model_args = ModelConfig(model_name_or_path=str(model_dir))
    path = train_baseline(CromeRewardTrainer, model_args, training_args, dataset)
    assert path == str(tmp_path / "out" / BASELINE_DIR)
    weights = Path(path) / "model.safetensors"
    assert (Path(path) / "config.json").exists() and (Path(path) / "tokenizer_config.json").exists()
    saved_at = weights.stat().st_mtime_ns
    assert train_baseline(CromeRewardTrainer, model_args, training_args, dataset) == path
    assert weights.stat().st_mtime_ns == saved_at
    assert training_args.output_dir == str(tmp_path / "out")  # the recipe's own arguments are untouched
