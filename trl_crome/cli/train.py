"""`trl-crome train`: the Crome recipe pipeline, from preference data to a saved, evaluated reward model.

The steps, in order: load the data (a Hub name or a local file) -> augment it with [`~trl_crome.CromeAugmenter`]
(or load an already augmented dataset), optionally filtering with a baseline reward model (given, or trained here on
the original pairs) -> train a [`~trl_crome.CromeRewardTrainer`] (or the PairPM trainer) -> save -> evaluate on
RewardBench and on robustness transformations -> write the model card -> push to the Hub when asked.

Arguments are parsed with TRL's [`~trl.TrlParser`]: `--config recipe.yaml` sets any field and every field can be
overridden on the command line. The recipes in `recipes/` and `trl-crome quickstart` call [`run_recipe`].

```bash
trl-crome train --config recipes/configs/gemma2b.yaml --max_train_samples 1000
accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml recipes/crome.py \\
    --config recipes/configs/gemma9b_full.yaml
```
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

SETTINGS = ("bt", "pairpm")
# CromeAugmenterConfig fields the recipe sets itself (from the training arguments), so that they do not clash with
# TrainingArguments' `output_dir` / `seed` on the command line.
RECIPE_SET_AUGMENT_FIELDS = ("output_dir", "cache_dir", "seed", "max_rows")
AUGMENTED_DATA_DIR = "crome_data"
BASELINE_DIR = "baseline"
EVAL_DIR = "eval"
RESULTS_FILE = "crome_results.json"


@dataclass
class CromeScriptArguments:
    r"""
    Arguments of the Crome recipe that are neither training, model nor augmentation settings.

    Parameters:
        > Data

        dataset_name (`str`):
            Hub name or local file (`.jsonl`, `.json`, `.parquet`, `.csv`) or `save_to_disk` folder of the preference
            data, in any format [`~trl.RewardTrainer`] accepts.
        dataset_config (`str`, *optional*):
            Configuration name of a Hub dataset.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on (Hub datasets).
        dataset_test_split (`str`, *optional*, defaults to `"test"`):
            Split to evaluate on during training when `eval_strategy` is not `"no"` (Hub datasets).
        max_train_samples (`int`, *optional*):
            Use only the first `max_train_samples` original pairs (before augmentation).

        > Augmentation

        setting (`str`, *optional*, defaults to `"bt"`):
            `"bt"` trains a Bradley-Terry reward model; `"pairpm"` a pairwise preference model.
        augment (`bool`, *optional*, defaults to `True`):
            Run the Crome augmentation. `False` trains on `dataset_name` as it is (e.g. a vanilla RM baseline).
        augmented_dataset (`str`, *optional*):
            Hub name or local file / folder of data augmented earlier (e.g. by `trl-crome augment`): it is trained on
            as it is and `dataset_name` is only recorded in the model card.
        oracle (`str`, *optional*, defaults to `"gemini"`):
            Oracle backend: `"gemini"`, `"openai"` (any OpenAI-compatible server) or `"transformers"` (a local model).
        oracle_model (`str`, *optional*):
            Oracle model name or path; the backend's default when unset.
        oracle_kwargs (`dict` or `str`, *optional*):
            Keyword arguments of the oracle backend (a JSON string on the command line), e.g. `max_concurrency`, or
            `batch_size` and `max_new_tokens` of a local model.
        oracle_cache_dir (`str`, *optional*):
            Oracle answer cache, which makes an interrupted augmentation resumable; defaults to
            `<output_dir>/crome_data/oracle_cache`.
        baseline_model (`str`, *optional*):
            Reward model trained on the original pairs, for the augmentation filter: a path or Hub name, or `"train"`
            to train one here first with the same settings (saved to `<output_dir>/baseline`). Unset: no filtering.

        > Evaluation

        rewardbench (`str`, *optional*, defaults to `"hub"`):
            RewardBench data: a local file in RewardBench's format, `"hub"` for `allenai/reward-bench`, or `"none"`
            to skip the evaluation.
        rewardbench_per_subset (`int`, *optional*):
            Score at most this many pairs per RewardBench subset (a seeded sample).
        robustness_transforms (`list[str]`, *optional*):
            Transformations of the robustness evaluation; every local one when unset. `none` skips it.
        robustness_per_subset (`int`, *optional*, defaults to `20`):
            RewardBench pairs per subset that the robustness evaluation transforms.
    """

    dataset_name: str = field(
        default="trl-lib/ultrafeedback_binarized",
        metadata={"help": "Hub name, local file (.jsonl/.json/.parquet/.csv) or save_to_disk folder of the data."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (Hub datasets)."})
    dataset_test_split: str = field(
        default="test", metadata={"help": "Split evaluated during training when eval_strategy is not 'no'."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first max_train_samples original pairs."}
    )
    setting: str = field(
        default="bt",
        metadata={
            "help": "'bt' (Bradley-Terry reward model) or 'pairpm' (pairwise preference model).",
            "choices": SETTINGS,
        },
    )
    augment: bool = field(default=True, metadata={"help": "Run the Crome augmentation before training."})
    augmented_dataset: str | None = field(
        default=None, metadata={"help": "Data augmented earlier (Hub name, file or folder): train on it as it is."}
    )
    oracle: str = field(
        default="gemini", metadata={"help": "Oracle backend: 'gemini', 'openai' or 'transformers' (local)."}
    )
    oracle_model: str | None = field(default=None, metadata={"help": "Oracle model name or path."})
    oracle_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of the oracle backend, as a JSON string on the command line, e.g. "
            '\'{"max_concurrency": 32}\' or \'{"batch_size": 16, "max_new_tokens": 256}\' for a local model.'
        },
    )
    oracle_cache_dir: str | None = field(
        default=None, metadata={"help": "Oracle answer cache (default: <output_dir>/crome_data/oracle_cache)."}
    )
    baseline_model: str | None = field(
        default=None,
        metadata={"help": "Baseline RM for the filter: a path or Hub name, or 'train' to train one here first."},
    )
    rewardbench: str | None = field(
        default="hub",
        metadata={"help": "RewardBench file, 'hub' for allenai/reward-bench, or 'none' to skip the evaluation."},
    )
    rewardbench_per_subset: int | None = field(
        default=None, metadata={"help": "Score at most this many pairs per RewardBench subset."}
    )
    robustness_transforms: list[str] | None = field(
        default=None, metadata={"help": "Robustness transformations (default: every local one; 'none' skips)."}
    )
    robustness_per_subset: int = field(
        default=20, metadata={"help": "RewardBench pairs per subset transformed by the robustness evaluation."}
    )

    def __post_init__(self):
        if isinstance(self.oracle_kwargs, str):
            self.oracle_kwargs = json.loads(self.oracle_kwargs)
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}.")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1, got {self.max_train_samples}.")
        if self.rewardbench is not None and self.rewardbench.lower() in ("none", "null", ""):
            self.rewardbench = None
        if self.robustness_transforms is not None and [t.lower() for t in self.robustness_transforms] == ["none"]:
            self.robustness_transforms = []


@dataclass
class RecipeResult:
    """What one recipe run produced: the augmentation summary, the last training metrics and the evaluations."""

    output_dir: str
    world_size: int = 1  # training processes
    augmentation: Any = None  # AugmentationSummary
    train_metrics: dict[str, float] = field(default_factory=dict)
    rewardbench: Any = None  # RewardBenchResult
    robustness: Any = None  # RobustnessResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "world_size": self.world_size,
            "augmentation": self.augmentation.to_dict() if self.augmentation is not None else None,
            "train_metrics": self.train_metrics,
            "rewardbench": self.rewardbench.to_dict() if self.rewardbench is not None else None,
            "robustness": self.robustness.to_dict() if self.robustness is not None else None,
        }


# ---------------------------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------------------------


def augment_arguments_class() -> type:
    """The [`~trl_crome.CromeAugmenterConfig`] fields as a parser dataclass, less those the recipe sets itself.

    Built from the config's own fields (names, defaults, help), so every augmentation setting is a recipe flag
    (`--filter_tau 0.3`, `--directions degrade`) without a second copy of its definition.
    """
    from ..augment import CromeAugmenterConfig

    kept = [f for f in dataclasses.fields(CromeAugmenterConfig) if f.name not in RECIPE_SET_AUGMENT_FIELDS]
    specs = []
    for f in kept:
        default = (
            {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {"default": f.default}
        )
        specs.append((f.name, f.type, field(metadata=f.metadata, **default)))
    return dataclasses.make_dataclass("CromeAugmentArguments", specs, namespace={"__module__": __name__})


def trainer_classes(setting: str) -> tuple[type, type]:
    """`(trainer_class, config_class)` of a setting."""
    if setting == "pairpm":
        from ..trainer.pairpm_config import CromePairPMConfig
        from ..trainer.pairpm_trainer import CromePairPMTrainer

        return CromePairPMTrainer, CromePairPMConfig
    from ..trainer import CromeRewardConfig, CromeRewardTrainer

    return CromeRewardTrainer, CromeRewardConfig


def _peek_setting(args: list[str]) -> str:
    """The `setting` of a command line, looking in its `--config` YAML when it is not a flag."""
    import yaml

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--setting")
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(args)
    if known.setting is not None:
        return known.setting
    if known.config is not None:
        with open(known.config) as handle:
            config = yaml.safe_load(handle) or {}
        return config.get("setting", "bt")
    return "bt"


def make_recipe_parser(setting: str = "bt"):
    """The [`~trl.TrlParser`] of the recipe: script, training, model and augmentation arguments."""
    from trl import ModelConfig, TrlParser

    return TrlParser((CromeScriptArguments, trainer_classes(setting)[1], ModelConfig, augment_arguments_class()))


def parse_recipe_args(args: list[str] | None = None, default_config: str | os.PathLike | None = None) -> tuple:
    """Parse a recipe command line into `(script_args, training_args, model_args, augment_args)`.

    Args:
        args (`list[str]`, *optional*):
            The command line; `sys.argv[1:]` when unset.
        default_config (`str` or `os.PathLike`, *optional*):
            YAML config used when the command line has no `--config` (what `accelerate launch recipes/gemma9b.py`
            runs).
    """
    args = list(sys.argv[1:] if args is None else args)
    if default_config is not None and "--config" not in args:
        args = ["--config", str(default_config), *args]
    return make_recipe_parser(_peek_setting(args)).parse_args_and_config(args)


# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------


def load_preference_data(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """A local file (`.jsonl`, `.json`, `.parquet`, `.csv`), a `save_to_disk` folder, or a Hub dataset's split."""
    from datasets import load_dataset, load_from_disk

    path = Path(name)
    if path.is_dir() and (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    if path.is_file():
        suffix = path.suffix.lower()
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
        if builder is None:
            raise ValueError(f"Cannot read {path}: expected a .jsonl, .json, .parquet or .csv file.")
        return load_dataset(builder, data_files=str(path), split="train")
    return load_dataset(name, config, split=split)


def _model_init_kwargs(model_args, training_args) -> dict[str, Any]:
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    kwargs.update(training_args.model_init_kwargs or {})
    return {key: value for key, value in kwargs.items() if value is not None}


def _train(trainer_class, model_args, training_args, train_dataset, eval_dataset=None):
    from trl import get_peft_config, get_quantization_config

    # `--load_in_4bit` / `--load_in_8bit` (QLoRA), passed the way TRL's own reward script does.
    quantization_config = get_quantization_config(model_args)
    quantization = {} if quantization_config is None else {"quantization_config": quantization_config}
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        **quantization,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # with the tokenizer (`processing_class`), which the scorer reads
    return trainer


def train_baseline(trainer_class, model_args, training_args, dataset: Dataset) -> str:
    """Train the filter's baseline reward model on the original pairs only, with the recipe's settings."""
    output_dir = os.path.join(training_args.output_dir, BASELINE_DIR)
    if os.path.exists(os.path.join(output_dir, "config.json")) or os.path.exists(
        os.path.join(output_dir, "adapter_config.json")
    ):
        logger.info("Reusing the baseline reward model in %s", output_dir)
        return output_dir
    baseline_args = dataclasses.replace(
        training_args, output_dir=output_dir, push_to_hub=False, eval_strategy="no", resume_from_checkpoint=None
    )
    trainer = _train(trainer_class, model_args, baseline_args, dataset)
    del trainer
    _free_memory()
    return output_dir


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _augment_fingerprint(script_args, training_args, augment_args, num_rows: int) -> dict[str, Any]:
    """Everything that changes the augmented data: a rerun reuses the saved data only when all of it matches."""
    augmenter = {k: v for k, v in dataclasses.asdict(augment_args).items() if k != "show_progress"}
    return {
        "dataset_name": script_args.dataset_name,
        "dataset_config": script_args.dataset_config,
        "dataset_train_split": script_args.dataset_train_split,
        "rows": num_rows,
        "seed": training_args.seed,  # the neutral prompts and fallback attributes
        "setting": script_args.setting,  # the baseline's margins: reward differences or PairPM preferences
        "oracle": script_args.oracle,
        "oracle_model": script_args.oracle_model,
        "oracle_kwargs": script_args.oracle_kwargs,
        "baseline_model": script_args.baseline_model,
        "augmenter": augmenter,
    }


def augment(script_args, training_args, augment_args, dataset: Dataset, baseline: str | None, chat_template: bool):
    """Run the [`~trl_crome.CromeAugmenter`] on the main process; the other processes load its saved output.

    The output (and `summary.json`) is kept in `<output_dir>/crome_data` and reused by a rerun with the same settings;
    the oracle cache there makes an interrupted augmentation resume without paying again for answered calls.
    Returns `(dataset, summary)`, the summary as an [`~trl_crome.augment.AugmentationSummary`].
    """
    from datasets import load_from_disk

    from ..augment import AugmentationSummary, CromeAugmenter, CromeAugmenterConfig
    from ..oracles import make_oracle

    data_dir = Path(training_args.output_dir) / AUGMENTED_DATA_DIR
    fingerprint = _augment_fingerprint(script_args, training_args, augment_args, len(dataset))
    settings_file, summary_file = data_dir / "settings.json", data_dir / "summary.json"
    with training_args.main_process_first(desc="Crome augmentation"):
        reusable = settings_file.exists() and json.loads(settings_file.read_text()) == fingerprint
        if reusable and (data_dir / "dataset" / "dataset_info.json").exists():
            summary = AugmentationSummary(**json.loads(summary_file.read_text()))
            return load_from_disk(str(data_dir / "dataset")), summary
        config = CromeAugmenterConfig(
            **dataclasses.asdict(augment_args),
            output_dir=str(data_dir),
            cache_dir=script_args.oracle_cache_dir,
            seed=training_args.seed,
        )
        baseline_fn = None
        if baseline is not None and config.filter_augmented:
            scorer = load_scorer(script_args.setting, baseline, training_args, chat_template)
            # A reward model scores each (prompt, answer); the margin of a pair is the difference of two rewards.
            baseline_fn = pairpm_margins(scorer) if script_args.setting == "pairpm" else _reward_margins(scorer)
        oracle = make_oracle(script_args.oracle, model=script_args.oracle_model, **(script_args.oracle_kwargs or {}))
        augmenter = CromeAugmenter(oracle, config, baseline=baseline_fn)
        augmented = augmenter(dataset)
        augmented.save_to_disk(str(data_dir / "dataset"))
        augmenter.summary.save(summary_file)
        settings_file.write_text(json.dumps(fingerprint, indent=2) + "\n")
        del augmenter, oracle, baseline_fn
        _free_memory()
        return augmented, AugmentationSummary(**json.loads(summary_file.read_text()))


def _reward_margins(scorer):
    def margins(prompts, answers_a, answers_b) -> list[float]:
        rewards_a, rewards_b = scorer.score_pairs(prompts, answers_a, answers_b)
        return [a - b for a, b in zip(rewards_a, rewards_b)]

    return margins


def _eval_dtype(training_args):
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.bfloat16 if training_args.bf16 else (torch.float16 if training_args.fp16 else None)


def load_scorer(setting: str, model_dir: str | os.PathLike, training_args, chat_template: bool):
    """A scorer of a saved model: a [`~trl_crome.evaluation.RewardScorer`] (bt) or a `PairPMScorer` (pairpm)."""
    kwargs = {"batch_size": training_args.per_device_eval_batch_size, "torch_dtype": _eval_dtype(training_args)}
    if setting == "pairpm":
        from ..evaluation.pairpm import PairPMScorer

        return PairPMScorer(model_dir, **kwargs)  # the template and max_length come from the folder's pairpm.json
    from ..evaluation.scoring import RewardScorer

    return RewardScorer(model_dir, max_length=training_args.max_length, chat_template=chat_template, **kwargs)


def pairpm_margins(scorer):
    """A PairPM as the filter's baseline: margin `logit(P(a better than b))`, the BT margin it stands for."""

    def margins(prompts, answers_a, answers_b) -> list[float]:
        probabilities = scorer.prefer(prompts, answers_a, answers_b)
        return [math.log(max(p, 1e-12)) - math.log(max(1 - p, 1e-12)) for p in probabilities]

    return margins


def evaluate(script_args, training_args, chat_template: bool):
    """RewardBench and robustness evaluation of the saved model (main process). Returns `(rewardbench, robustness)`."""
    from ..evaluation.rewardbench import evaluate_rewardbench, load_rewardbench, subsample_per_subset
    from ..evaluation.transforms import evaluate_robustness

    if script_args.rewardbench is None:
        return None, None
    output_dir = Path(training_args.output_dir) / EVAL_DIR
    rows = load_rewardbench(script_args.rewardbench)
    scorer = load_scorer(script_args.setting, training_args.output_dir, training_args, chat_template)
    rewardbench = evaluate_rewardbench(
        scorer, rows, per_subset=script_args.rewardbench_per_subset, seed=training_args.seed, output_dir=output_dir
    )
    robustness = None
    if script_args.robustness_transforms != []:
        pairs = subsample_per_subset(rows, script_args.robustness_per_subset, seed=training_args.seed)
        robustness = evaluate_robustness(
            scorer, pairs, script_args.robustness_transforms, seed=training_args.seed, output_dir=output_dir
        )
    return rewardbench, robustness


def last_train_metrics(log_history: list[dict[str, float]]) -> dict[str, float]:
    """The last logged training loss, accuracy, margin and tie |d| (each from the last step that logged it)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key in ("loss", "accuracy", "margin", "tie_abs_margin", "train_loss", "train_runtime", "epoch"):
            if key in entry:
                metrics[key] = entry[key]
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------


def model_card_sections(script_args, model_args, augment_args, result: RecipeResult) -> dict[str, str]:
    """The recipe's model-card sections: data and base model, augmentation settings and counts, evaluation."""
    data_lines = [
        f"- Base model: `{model_args.model_name_or_path}`",
        f"- Setting: `{script_args.setting}`",
        f"- Preference data: `{script_args.dataset_name}`"
        + (f" (config `{script_args.dataset_config}`)" if script_args.dataset_config else ""),
    ]
    if script_args.augmented_dataset:
        data_lines.append(f"- Augmented data: `{script_args.augmented_dataset}` (augmented before this run)")
    sections = {"Base model and data": "\n".join(data_lines)}

    if result.augmentation is not None:
        summary = result.augmentation
        tau = augment_args.filter_tau if script_args.baseline_model and augment_args.filter_augmented else None
        lines = [
            f"- Oracle: `{script_args.oracle}` / `{script_args.oracle_model or 'backend default'}`",
            f"- Causal rewrites: directions {', '.join(augment_args.directions)}; "
            f"{augment_args.attributes_per_example} attribute(s) per example; rubrics from the oracle: "
            f"{augment_args.identify_rubrics}",
            f"- Neutral (IQN) pairs per original / causal pair: {augment_args.neutrals_per_original} / "
            f"{augment_args.neutrals_per_causal}",
            f"- Baseline filter: tau = {tau} (baseline `{script_args.baseline_model}`)"
            if tau is not None
            else "- Baseline filter: off",
            f"- Input rows: {summary.input_rows}",
            "",
            "| kind | pairs | filtered out |",
            "|---|---|---|",
            *(f"| {kind} | {count} | {summary.filtered_out.get(kind, 0)} |" for kind, count in summary.pairs.items()),
        ]
        if summary.rejects:
            lines += ["", "Rejected rewrites: " + ", ".join(f"{k} {v}" for k, v in summary.rejects.items())]
        sections["Crome augmentation"] = "\n".join(lines)

    if result.rewardbench is not None:
        # The result's own markdown starts with a level-2 title; the card nests it under "Crome training".
        sections["Evaluation: RewardBench"] = result.rewardbench.to_markdown().split("\n", 2)[2]
    if result.robustness is not None:
        robustness = result.robustness
        changed = [info for info in robustness.per_transform.values() if info["changed"]]
        mean_drop = sum(info["drop"] for info in changed) / len(changed) if changed else float("nan")
        sections["Evaluation: robustness to meaning-preserving transformations"] = (
            f"Mean accuracy drop over {len(changed)} transformations: {100 * mean_drop:+.2f} points "
            f"(original accuracy {100 * robustness.original_accuracy:.2f}% on {robustness.num_pairs} pairs).\n\n"
            + robustness.to_markdown().split("\n", 2)[2]
        )
    return sections


# ---------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------


def run_recipe(script_args, training_args, model_args, augment_args) -> RecipeResult:
    """Run the Crome recipe end to end (see the module docstring); returns its [`RecipeResult`] on every process
    (evaluations are filled on the main process only) and writes it to `<output_dir>/crome_results.json`."""
    from trl.data_utils import is_conversational

    if script_args.setting == "pairpm" and (model_args.load_in_4bit or model_args.load_in_8bit):
        raise ValueError("--load_in_4bit / --load_in_8bit are supported with --setting bt only.")
    trainer_class, _ = trainer_classes(script_args.setting)
    training_args.model_init_kwargs = _model_init_kwargs(model_args, training_args)
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
    trainer = _train(trainer_class, model_args, training_args, train_dataset, eval_dataset)
    result.train_metrics = last_train_metrics(trainer.state.log_history)
    result.world_size = trainer.args.world_size

    # 4. Evaluation of the saved model, on the main process (the others wait at the barrier below)
    if trainer.is_world_process_zero():
        result.rewardbench, result.robustness = evaluate(script_args, training_args, chat_template)
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


def register(subparsers) -> None:
    # The recipe's own TrlParser reads every option: this sub-parser only collects them. With "+" as its only prefix
    # character it treats `--config` and `--learning_rate` as plain strings instead of rejecting them as unknown.
    parser = subparsers.add_parser(
        "train",
        help="Run the Crome recipe: augment, train, evaluate, save (and push).",
        description="Run the Crome recipe. Every option of the recipe YAML configs can be given here; see "
        "docs/recipes.md. Example: trl-crome train --config recipes/configs/gemma2b.yaml",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("recipe_args", nargs="*", help="--config FILE.yaml and any recipe option")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    recipe_args = list(args.recipe_args)
    if recipe_args in (["-h"], ["--help"]):
        make_recipe_parser().print_help()
        return 0
    main(recipe_args)
    return 0
