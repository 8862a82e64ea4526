"""The recipe's command line: [`CromeScriptArguments`] and the [`~trl.TrlParser`] of the four argument dataclasses.

Every key of a recipe YAML config is a field of [`CromeScriptArguments`], of the training config of the setting
([`~trl_crome.CromeRewardConfig`] or [`~trl_crome.CromePairPMConfig`]), of [`~trl.ModelConfig`] or of
[`~trl_crome.CromeAugmenterConfig`] (less the fields the recipe sets itself), and every one can be overridden on the
command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

SETTINGS = ("bt", "pairpm")
# CromeAugmenterConfig fields the recipe sets itself (from the training arguments) or leaves unset, so that they do not
# clash with TrainingArguments' `output_dir`, `seed`, `push_to_hub` and `hub_private_repo` (the model's) on the command
# line.
RECIPE_SET_AUGMENT_FIELDS = ("output_dir", "cache_dir", "seed", "max_rows", "push_to_hub", "hub_private_repo")
# The evaluations the recipe can run on the saved model (robustness transforms RewardBench's pairs).
BENCHMARKS = ("rewardbench", "robustness", "rewardbench2", "rmbench")


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
        benchmarks (`list[str]`, *optional*, defaults to `["rewardbench", "robustness"]`):
            The evaluations of the saved model, in order: any of `rewardbench`, `robustness`, `rewardbench2`,
            `rmbench`; `none` runs none. `rewardbench: none` or `robustness_transforms: none` also drop theirs.
        rewardbench2 (`str`, *optional*, defaults to `"hub"`):
            RewardBench 2 data: a local file in its schema, or `"hub"` for `allenai/reward-bench-2` (split "test").
        rewardbench2_per_subset (`int`, *optional*):
            Score at most this many prompts per RewardBench 2 subset (a seeded sample).
        rmbench (`list[str]`, *optional*, defaults to `["hub"]`):
            RM-Bench data: local files in its schema (the domain of per-domain files comes from their names), or
            `"hub"` for `THU-KEG/RM-Bench`.
        rmbench_per_domain (`int`, *optional*):
            Score at most this many RM-Bench rows per domain (a seeded sample).
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
    benchmarks: list[str] = field(
        default_factory=lambda: ["rewardbench", "robustness"],
        metadata={"help": f"Evaluations of the saved model, in order: any of {', '.join(BENCHMARKS)}, or 'none'."},
    )
    rewardbench2: str = field(
        default="hub", metadata={"help": "RewardBench 2 file, or 'hub' for allenai/reward-bench-2 (split test)."}
    )
    rewardbench2_per_subset: int | None = field(
        default=None, metadata={"help": "Score at most this many prompts per RewardBench 2 subset."}
    )
    rmbench: list[str] = field(
        default_factory=lambda: ["hub"], metadata={"help": "RM-Bench file(s), or 'hub' for THU-KEG/RM-Bench."}
    )
    rmbench_per_domain: int | None = field(
        default=None, metadata={"help": "Score at most this many RM-Bench rows per domain."}
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
        benchmarks = [self.benchmarks] if isinstance(self.benchmarks, str) else list(self.benchmarks)
        benchmarks = [] if [b.lower() for b in benchmarks] == ["none"] else [b.lower() for b in benchmarks]
        unknown = [b for b in benchmarks if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)} or 'none'.")
        if self.rewardbench is None:  # no RewardBench data: neither RewardBench nor the robustness of its pairs
            benchmarks = [b for b in benchmarks if b not in ("rewardbench", "robustness")]
        if self.robustness_transforms == []:
            benchmarks = [b for b in benchmarks if b != "robustness"]
        self.benchmarks = benchmarks
        if isinstance(self.rmbench, str):  # a single file from a YAML config
            self.rmbench = [self.rmbench]


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
