"""The steps of the Crome recipe, each usable on its own: load the data, train (the model or the filter's baseline),
augment, evaluate the saved model. [`~trl_crome.recipe.run_recipe`] runs them in order."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

from ..data import load_preference_data  # noqa: F401 (one loader for the recipe and `trl-crome augment`)

logger = logging.getLogger(__name__)

AUGMENTED_DATA_DIR = "crome_data"
BASELINE_DIR = "baseline"
EVAL_DIR = "eval"


def model_init_kwargs(model_args, training_args) -> dict[str, Any]:
    """The `from_pretrained` kwargs of the model: `ModelConfig` settings, then the training config's own."""
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    kwargs.update(training_args.model_init_kwargs or {})
    return {key: value for key, value in kwargs.items() if value is not None}


def train(trainer_class, model_args, training_args, train_dataset, eval_dataset=None):
    """Train `trainer_class` on `train_dataset` (resuming when asked) and save the model to `output_dir`."""
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
    trainer = train(trainer_class, model_args, baseline_args, dataset)
    del trainer
    _free_memory()
    return output_dir


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class AugmentationStopped(RuntimeError):
    """The recipe's augmentation stopped at `max_cost`: nothing is trained on a part of the data."""

    def __init__(self, summary, cache_dir: Path):
        stop = summary.stopped
        super().__init__(
            f"The Crome augmentation stopped at max_cost ${stop['max_cost']:g} (spent ${stop['spent_usd']:.4f}, "
            f"cached answers included) in step {stop['step']}: {summary.rows_done:,} of {summary.input_rows:,} rows. "
            f"Answered calls are cached in {cache_dir}: rerun with a higher --max_cost to finish without paying them "
            "again."
        )


def augment_fingerprint(script_args, training_args, augment_args, num_rows: int) -> dict[str, Any]:
    """Everything that changes the augmented data: a rerun reuses the saved data only when all of it matches."""
    # Progress bars, chunks and the cost cap never change the data a finished augmentation writes.
    ignored = ("show_progress", "chunk_size", "chunks_in_flight", "max_cost")
    augmenter = {k: v for k, v in dataclasses.asdict(augment_args).items() if k not in ignored}
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
    fingerprint = augment_fingerprint(script_args, training_args, augment_args, len(dataset))
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
        if augmenter.summary.stopped is not None:  # never train on part of the data without saying so
            data_dir.mkdir(parents=True, exist_ok=True)
            augmenter.summary.save(summary_file)
            raise AugmentationStopped(augmenter.summary, config.resolved_cache_dir())
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


@contextmanager
def whole_model_loading(training_args):
    """Within it, `from_pretrained` builds a whole model in this process, also under DeepSpeed ZeRO-3.

    With ZeRO-3 (and `zero3_init_flag`), transformers builds every model inside `deepspeed.zero.Init`, which shards
    the parameters across all processes as they are created and so waits for every other process: a model loaded by
    the main process alone (the filter's baseline, the evaluation of the saved model) would hang forever. The
    DeepSpeed config is set aside while such a model loads and put back afterwards.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    plugin = getattr(training_args, "deepspeed_plugin", None)
    # The object transformers reads: `TrainingArguments(deepspeed=...)` keeps it, accelerate's plugin keeps its own.
    config = getattr(training_args, "hf_deepspeed_config", None) or getattr(plugin, "dschf", None)
    if config is None or not is_deepspeed_zero3_enabled():
        yield
        return
    from transformers.integrations import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def load_scorer(setting: str, model_dir: str | os.PathLike, training_args, chat_template: bool):
    """A scorer of a saved model, whole in this process: a [`~trl_crome.evaluation.RewardScorer`] (bt) or a
    `PairPMScorer` (pairpm)."""
    kwargs = {"batch_size": training_args.per_device_eval_batch_size, "torch_dtype": _eval_dtype(training_args)}
    with whole_model_loading(training_args):
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


def evaluate(script_args, training_args, chat_template: bool) -> dict[str, Any]:
    """The evaluations of `script_args.benchmarks` on the saved model (main process), with one scorer and reports in
    `<output_dir>/eval`. Returns `{benchmark: result}` for the benchmarks run (the result of `evaluate_<name>`)."""
    from ..evaluation.rewardbench import evaluate_rewardbench, load_rewardbench, subsample_per_subset
    from ..evaluation.rewardbench2 import evaluate_rewardbench2, load_rewardbench2
    from ..evaluation.rmbench import evaluate_rmbench, load_rmbench
    from ..evaluation.transforms import evaluate_robustness

    benchmarks = script_args.benchmarks
    if not benchmarks:
        return {}
    seed, output_dir = training_args.seed, Path(training_args.output_dir) / EVAL_DIR
    # Every data set is loaded and validated before the model: a bad file fails before any scoring.
    data = {}
    if "rewardbench" in benchmarks or "robustness" in benchmarks:
        data["rewardbench"] = load_rewardbench(script_args.rewardbench)
    if "rewardbench2" in benchmarks:
        data["rewardbench2"] = load_rewardbench2(script_args.rewardbench2)
    if "rmbench" in benchmarks:
        data["rmbench"] = load_rmbench(None if script_args.rmbench == ["hub"] else script_args.rmbench)
    scorer = load_scorer(script_args.setting, training_args.output_dir, training_args, chat_template)
    results = {}
    for name in benchmarks:
        common = {"seed": seed, "output_dir": output_dir}
        if name == "rewardbench":
            results[name] = evaluate_rewardbench(
                scorer, data[name], per_subset=script_args.rewardbench_per_subset, **common
            )
        elif name == "robustness":
            pairs = subsample_per_subset(data["rewardbench"], script_args.robustness_per_subset, seed=seed)
            results[name] = evaluate_robustness(scorer, pairs, script_args.robustness_transforms, **common)
        elif name == "rewardbench2":
            results[name] = evaluate_rewardbench2(
                scorer, data[name], per_subset=script_args.rewardbench2_per_subset, **common
            )
        else:
            results[name] = evaluate_rmbench(scorer, data[name], per_domain=script_args.rmbench_per_domain, **common)
    return results


def last_train_metrics(log_history: list[dict[str, float]]) -> dict[str, float]:
    """The last logged training loss, accuracy, margin and tie |d| (each from the last step that logged it)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key in ("loss", "accuracy", "margin", "tie_abs_margin", "train_loss", "train_runtime", "epoch"):
            if key in entry:
                metrics[key] = entry[key]
    return metrics
