"""The Crome pipeline end to end on a CPU, in minutes, with nothing to download: `trl-crome quickstart`.

A local oracle (SmolLM2-135M-Instruct, [`~trl_crome.TransformersOracle`]) writes causal rubrics and counterfactuals
for a few dozen preference pairs, neutral pairs are added, a small Crome reward model (SmolLM2-135M with a score head)
trains for a few steps, and it is evaluated on a RewardBench slice and on a few robustness transformations. The
pipeline is the recipes' own ([`~trl_crome.recipe.run_recipe`]), with settings sized for a laptop.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# RewardBench beside a checkout of this project (the layout of its development machines), used when present.
SHARED_REWARDBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rewardbench" / "filtered.jsonl"
DEFAULT_TRANSFORMS = ("add_quotes", "distractor_suffix", "char_swap", "markdown_strip")
HELD_OUT_SUBSET = "quickstart-held-out"


def default_dataset_path() -> Path:
    """The package's own small preference set (62 conversational pairs written for trl-crome)."""
    return Path(str(importlib.resources.files("trl_crome") / "resources" / "preferences.jsonl"))


@dataclass
class QuickstartConfig:
    r"""
    Settings of `trl-crome quickstart`.

    Parameters:
        dataset (`str`, *optional*):
            Local file or Hub name of preference data; the package's own small set when unset.
        output_dir (`str`, *optional*, defaults to `"outputs/quickstart"`):
            Where the augmented data, the model, the card and the evaluation reports go.
        num_pairs (`int`, *optional*, defaults to `16`):
            Original pairs to augment and train on.
        max_steps (`int`, *optional*, defaults to `20`):
            Training steps.
        max_length (`int`, *optional*, defaults to `256`):
            Longest training (and scoring) sequence, in tokens.
        rewardbench (`str`, *optional*):
            RewardBench file or `"hub"`. Unset: `../shared/data/rewardbench/filtered.jsonl` beside the project when it
            exists, else the Hub when reachable, else a held-out part of the data.
        rewardbench_per_subset (`int`, *optional*, defaults to `3`):
            RewardBench pairs scored per subset. Held-out pairs (when RewardBench is not available) are all scored.
        transforms (`list[str]`):
            Robustness transformations.
        robustness_per_subset (`int`, *optional*, defaults to `1`):
            RewardBench pairs per subset that are transformed. Held-out pairs are all transformed.
        identify_rubrics (`bool`, *optional*, defaults to `False`):
            Ask the oracle for each prompt's causal attributes. Off by default: a 135M model rarely writes the rubric
            JSON correctly, so the seeded fallback attributes (correctness, relevance, ...) are used instead.
        oracle_model (`str`, *optional*):
            Local oracle model folder; SmolLM2-135M-Instruct when unset.
        seed (`int`, *optional*, defaults to `42`):
            Seed of everything random.
    """

    dataset: str | None = None
    output_dir: str = "outputs/quickstart"
    num_pairs: int = 16
    max_steps: int = 20
    max_length: int = 256
    rewardbench: str | None = None
    rewardbench_per_subset: int = 3
    transforms: list[str] = field(default_factory=lambda: list(DEFAULT_TRANSFORMS))
    robustness_per_subset: int = 1
    identify_rubrics: bool = False
    oracle_model: str | None = None
    seed: int = 42


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import HfApi

        from .evaluation.rewardbench import REWARDBENCH_HUB_ID

        HfApi().dataset_info(REWARDBENCH_HUB_ID, timeout=5)
        return True
    except Exception:  # any failure (no network, DNS, proxy, HTTP error) means "not reachable"
        return False


def _message_text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def hold_out_rewardbench(dataset, fraction: float, seed: int, path: Path):
    """Split `dataset`: write a RewardBench-format file of the held-out pairs to `path`; return the rest."""
    indices = list(range(len(dataset)))
    random.Random(seed).shuffle(indices)
    held = sorted(indices[: max(1, int(len(indices) * fraction))])
    kept = sorted(indices[len(held) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for index in held:
            row = dataset[index]
            prompt = row["prompt"] if "prompt" in row else ""
            if not isinstance(prompt, str):
                prompt = "\n\n".join(message["content"] for message in prompt)
            record = {
                "id": index,
                "subset": HELD_OUT_SUBSET,
                "prompt": prompt,
                "chosen": _message_text(row["chosen"]),
                "rejected": _message_text(row["rejected"]),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return dataset.select(kept)


def resolve_rewardbench(config: QuickstartConfig) -> tuple[str | None, str]:
    """`(source, description)` of the evaluation data: explicit, the shared file, the Hub, or `None` (hold out)."""
    if config.rewardbench is not None:
        return config.rewardbench, f"RewardBench from {config.rewardbench}"
    if SHARED_REWARDBENCH.exists():
        return str(SHARED_REWARDBENCH), f"RewardBench (filtered) from {SHARED_REWARDBENCH}"
    if _hub_reachable():
        return "hub", "RewardBench (filtered) from the Hub (allenai/reward-bench)"
    return None, "RewardBench is not available here (no ../shared/data copy, Hub unreachable)"


def build_recipe_args(config: QuickstartConfig) -> tuple:
    """The recipe's `(script_args, training_args, model_args, augment_args)` for a CPU quickstart run."""
    from datasets import Dataset
    from trl import ModelConfig

    from .models import smollm2_path
    from .recipe import CromeScriptArguments, augment_arguments_class, load_preference_data
    from .trainer import CromeRewardConfig

    output_dir = Path(config.output_dir)
    smollm2 = str(smollm2_path())
    dataset_name = config.dataset or str(default_dataset_path())
    rewardbench, rewardbench_note = resolve_rewardbench(config)
    per_subset, robustness_per_subset = config.rewardbench_per_subset, config.robustness_per_subset
    if rewardbench is None:
        # Hold out a quarter of the data: the pairs are scored like a RewardBench subset of their own, every one of
        # them (the per-subset sample sizes are for RewardBench's 23 subsets, not for one subset of 15 pairs).
        data = load_preference_data(dataset_name)
        held_out_file = output_dir / "held_out_rewardbench.jsonl"
        train_data: Dataset = hold_out_rewardbench(data, 0.25, config.seed, held_out_file)
        train_file = output_dir / "train_pairs.jsonl"
        train_data.to_json(str(train_file), lines=True)
        dataset_name, rewardbench = str(train_file), str(held_out_file)
        per_subset = robustness_per_subset = len(data) - len(train_data)
        rewardbench_note += f"; evaluating on {per_subset} held-out pairs of the training data"

    script_args = CromeScriptArguments(
        dataset_name=dataset_name,
        max_train_samples=config.num_pairs,
        oracle="transformers",
        oracle_model=config.oracle_model or smollm2,
        # Short answers keep the local generation fast; longer ones fail validation as "truncated".
        oracle_kwargs={"batch_size": 16, "max_new_tokens": 128},
        rewardbench=rewardbench,
        rewardbench_per_subset=per_subset,
        robustness_transforms=list(config.transforms),
        robustness_per_subset=robustness_per_subset,
    )
    training_args = CromeRewardConfig(
        output_dir=str(output_dir / "model"),
        max_steps=config.max_steps,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=2e-5,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0.1,
        max_length=config.max_length,
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,  # activations of a 135M model at 256 tokens are small: spend no recompute
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        dataloader_num_workers=0,
    )
    model_args = ModelConfig(model_name_or_path=smollm2, dtype="float32")
    augment_args = augment_arguments_class()(
        # The lite preset (3 calls per pair): the paper preset's 26 calls per pair would take far too long on a CPU.
        preset="lite",
        identify_rubrics=config.identify_rubrics,
        attributes_per_example=1,
        max_attributes=2,
        rubric_max_output_tokens=128,
        rewrite_max_output_tokens=192,
        accept_plain_text_rewrites=True,  # SmolLM2-135M rarely writes the JSON; its plain rewrites are still validated
        neutrals_per_original=1,
        neutrals_per_causal=1,
        filter_augmented=False,  # no baseline RM in the quickstart: every valid augmented pair is kept
    )
    # The augmenter's data goes beside the model, not inside it.
    script_args.oracle_cache_dir = str(output_dir / "oracle_cache")
    return (script_args, training_args, model_args, augment_args), rewardbench_note


def format_report(result, rewardbench_note: str, seconds: float) -> str:
    """The short text report the quickstart prints."""
    lines = ["", "=" * 100, "Crome quickstart report", "=" * 100, ""]
    if result.augmentation is not None:
        lines += ["## Augmentation (lite preset, local SmolLM2-135M oracle)", "", result.augmentation.to_table(), ""]
    metrics = result.train_metrics
    lines += ["## Training (SmolLM2-135M reward model, Crome composite loss)", ""]
    for key, label in (
        ("loss", "loss (last logged)"),
        ("accuracy", "accuracy on preference pairs"),
        ("margin", "mean margin on preference pairs"),
        ("tie_abs_margin", "tie |d| (mean |r1 - r2| on neutral pairs)"),
        ("train_runtime", "training seconds"),
    ):
        if key in metrics:
            lines.append(f"{label:<45} {metrics[key]:.4f}")
    lines += ["", f"Evaluation data: {rewardbench_note}", ""]
    rewardbench = result.rewardbench
    if rewardbench is not None and set(rewardbench.subset_accuracy) == {HELD_OUT_SUBSET}:
        # No RewardBench section to weight: the headline is the plain accuracy on the held-out pairs.
        correct = round(rewardbench.subset_accuracy[HELD_OUT_SUBSET] * rewardbench.num_pairs)
        accuracy = 100 * correct / rewardbench.num_pairs
        lines += [
            f"## Held-out accuracy: {accuracy:.2f}% ({correct} of {rewardbench.num_pairs} pairs ranked correctly)",
            "",
        ]
    elif rewardbench is not None:
        lines += [rewardbench.to_markdown(), ""]
    if result.robustness is not None:
        lines += [result.robustness.to_markdown(), ""]
    lines += [f"Model, card and reports: {result.output_dir}", f"Total time: {seconds / 60:.1f} min", ""]
    return "\n".join(lines)


def run_quickstart(config: QuickstartConfig | None = None) -> tuple:
    """Run the quickstart; returns `(RecipeResult, report_text)`."""
    import time

    from .recipe import run_recipe

    config = config or QuickstartConfig()
    started = time.perf_counter()
    recipe_args, rewardbench_note = build_recipe_args(config)
    result = run_recipe(*recipe_args)
    report = format_report(result, rewardbench_note, time.perf_counter() - started)
    Path(config.output_dir, "report.md").write_text(report, encoding="utf-8")
    return result, report
