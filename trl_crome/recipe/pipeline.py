"""[`run_recipe`]: the Crome recipe end to end, from preference data to a saved, evaluated reward model.

The steps, in order: load the data (a Hub name or a local file) -> augment it with [`~trl_crome.CromeAugmenter`]
(or load an already augmented dataset), optionally filtering with a baseline reward model (given, or trained here on
the original pairs) -> train a [`~trl_crome.CromeRewardTrainer`] (or the PairPM trainer) -> save -> evaluate on the
configured benchmarks (RewardBench, robustness transformations, RewardBench 2, RM-Bench) -> write the model card ->
push to the Hub when asked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arguments import parse_recipe_args, trainer_classes
from .model_card import model_card_sections
from .steps import (
    augment,
    evaluate,
    last_train_metrics,
    load_preference_data,
    model_init_kwargs,
    train,
    train_baseline,
)

RESULTS_FILE = "crome_results.json"


@dataclass
class RecipeResult:
    """What one recipe run produced: the augmentation summary, the last training metrics and the evaluations."""

    output_dir: str
    world_size: int = 1  # training processes
    distributed_type: str = "NO"  # accelerate's: "MULTI_GPU", "DEEPSPEED", "FSDP", ...
    augmentation: Any = None  # AugmentationSummary
    train_metrics: dict[str, float] = field(default_factory=dict)
    rewardbench: Any = None  # RewardBenchResult
    robustness: Any = None  # RobustnessResult
    rewardbench2: Any = None  # RewardBench2Result
    rmbench: Any = None  # RMBenchResult

    def to_dict(self) -> dict[str, Any]:
        evaluations = {name: getattr(self, name) for name in ("rewardbench", "robustness", "rewardbench2", "rmbench")}
        return {
            "output_dir": self.output_dir,
            "world_size": self.world_size,
            "distributed_type": self.distributed_type,
            "augmentation": self.augmentation.to_dict() if self.augmentation is not None else None,
            "train_metrics": self.train_metrics,
            **{name: value.to_dict() if value is not None else None for name, value in evaluations.items()},
        }


def run_recipe(script_args, training_args, model_args, augment_args) -> RecipeResult:
    """Run the Crome recipe end to end (see the module docstring); returns its [`RecipeResult`] on every process
    (evaluations are filled on the main process only) and writes it to `<output_dir>/crome_results.json`."""
    from trl.data_utils import is_conversational

    if script_args.setting == "pairpm" and (model_args.load_in_4bit or model_args.load_in_8bit):
        raise ValueError("--load_in_4bit / --load_in_8bit are supported with --setting bt only.")
    trainer_class, _ = trainer_classes(script_args.setting)
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    result = RecipeResult(output_dir=training_args.output_dir)

    # 1. Data
    if script_args.augmented_dataset:
        train_dataset = load_preference_data(script_args.augmented_dataset, split=script_args.dataset_train_split)
    else:
        train_dataset = load_preference_data(
            script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
        )
    if script_args.max_train_samples is not None and script_args.max_train_samples < len(train_dataset):
        train_dataset = train_dataset.select(range(script_args.max_train_samples))
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = load_preference_data(
            script_args.dataset_name, script_args.dataset_config, script_args.dataset_test_split
        )
    chat_template = is_conversational(train_dataset[0])

    # 2. Augmentation, with the baseline reward model of its filter
    if script_args.augment and not script_args.augmented_dataset:
        baseline = script_args.baseline_model
        if baseline == "train":
            baseline = train_baseline(trainer_class, model_args, training_args, train_dataset)
        train_dataset, result.augmentation = augment(
            script_args, training_args, augment_args, train_dataset, baseline, chat_template
        )

    # 3. Training and saving
    trainer = train(trainer_class, model_args, training_args, train_dataset, eval_dataset)
    result.train_metrics = last_train_metrics(trainer.state.log_history)
    result.world_size = trainer.args.world_size
    result.distributed_type = str(trainer.accelerator.distributed_type.value)

    # 4. Evaluation of the saved model, on the main process (the others wait at the barrier below)
    if trainer.is_world_process_zero():
        for name, evaluation in evaluate(script_args, training_args, chat_template).items():
            setattr(result, name, evaluation)
    trainer.accelerator.wait_for_everyone()

    # 5. Model card and Hub
    sections = model_card_sections(script_args, model_args, augment_args, result)
    card_dataset = script_args.dataset_name if not Path(script_args.dataset_name).exists() else None
    model_name = (training_args.hub_model_id or training_args.output_dir).rstrip("/").split("/")[-1]
    trainer.model_card_sections.update(sections)
    trainer.create_model_card(model_name=model_name, dataset_name=card_dataset)
    if trainer.is_world_process_zero():
        results_file = Path(training_args.output_dir) / RESULTS_FILE
        results_file.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=card_dataset)
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish the trackers, destroy the process group
        trainer.end()
    return result


def main(args: list[str] | None = None, default_config: str | os.PathLike | None = None) -> RecipeResult:
    """Entry point of the recipe scripts: parse the command line (see [`parse_recipe_args`]) and run the recipe."""
    script_args, training_args, model_args, augment_args = parse_recipe_args(args, default_config)
    return run_recipe(script_args, training_args, model_args, augment_args)
