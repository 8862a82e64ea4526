"""Training cases run in one launch, one after the other in the same processes (see `harness.py`).

Usage: python cases.py OUTPUT_DIR CASE [CASE ...] --models DIR
(or under `accelerate launch`). Each case trains on 8 pairs per optimizer step whatever the number of processes (8
per process alone, 4 each with two), so the loss history, the metrics and the final weights of every world size must
agree. Every process checks from inside that it runs in the world the launcher promised (`WORLD_SIZE`, the process
group, accelerate's distributed type); the main process writes OUTPUT_DIR/CASE/result.json and the model to
OUTPUT_DIR/CASE/final. A new case is a function `(Context) -> trainer` decorated with `@case`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.helpers import smollm2_tokenizer, tiny_reward_model
from tests.trainer.common import mixed_pairs, tiny_args
from tests.trainer.test_pairpm import pairpm_args, synthetic_pairs, tiny_causal_lm
from tests.trainer.test_prefix_sharing import grouped_pairs

GLOBAL_BATCH = 8
STEPS = 3
PROBE_TEXTS = [
    "Tell me one fact about the moon. The moon orbits the Earth about once a month.",
    "Tell me one fact about tea. No.",
    "Name a primary colour. Blue is a primary colour.",
]


@dataclass
class Context:
    output_dir: Path  # this case's folder
    models: Path  # the tiny base models written by `write_base_models`
    batch_size: int  # pairs per process and step
    tokenizer: object


CASES: dict[str, Callable[[Context], object]] = {}


def case(function: Callable[[Context], object]) -> Callable[[Context], object]:
    CASES[function.__name__] = function
    return function


def write_base_models(directory: Path) -> Path:
    """The tiny random base models every case starts from (folders, so the trainers load them as users do)."""
    tokenizer = smollm2_tokenizer()
    for name, model in (("tiny-rm", tiny_reward_model(tokenizer, seed=2)), ("tiny-lm", tiny_causal_lm(tokenizer))):
        model.save_pretrained(directory / name)
        tokenizer.save_pretrained(directory / name)
    return directory


def run_settings(context: Context) -> dict:
    """What every case's training config shares: this world's batch, the steps, a log line per step, CPU."""
    return dict(
        per_device_train_batch_size=context.batch_size,
        per_device_eval_batch_size=context.batch_size,
        max_steps=STEPS,
        logging_steps=1,
        use_cpu=True,
    )


def reward_trainer(context: Context, peft_config=None, train_dataset=None, eval_dataset=None, **overrides):
    from trl_crome import CromeRewardTrainer

    return CromeRewardTrainer(
        str(context.models / "tiny-rm"),
        args=tiny_args(context.output_dir, **run_settings(context), **overrides),
        train_dataset=mixed_pairs(32) if train_dataset is None else train_dataset,
        # 18 pairs, not a multiple of the global batch: checks the de-duplicated gathering
        eval_dataset=mixed_pairs(18) if eval_dataset is None else eval_dataset,
        processing_class=context.tokenizer,
        peft_config=peft_config,
    )


@case
def bt_padded(context: Context):
    return reward_trainer(context)


@case
def bt_padding_free(context: Context):
    return reward_trainer(context, padding_free=True)


@case
def bt_lora(context: Context):
    from peft import LoraConfig

    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return reward_trainer(context, peft_config=lora, learning_rate=1e-2)


def prompt_grouped_trainer(context: Context, **overrides):
    """Crome-like prompt groups (one pair or several per prompt, repeated answers, ties, margins) in batches grouped
    by prompt: the same order for every world size, whichever path computes the rewards."""
    return reward_trainer(
        context,
        train_dataset=grouped_pairs(10),
        eval_dataset=grouped_pairs(4, seed=2),
        group_by_prompt=True,
        **overrides,
    )


@case
def bt_grouped_padded(context: Context):
    return prompt_grouped_trainer(context)


@case
def bt_prefix_sharing(context: Context):
    return prompt_grouped_trainer(context, prefix_sharing=True)


@case
def pairpm(context: Context):
    from trl_crome.trainer.pairpm_trainer import CromePairPMTrainer

    return CromePairPMTrainer(
        str(context.models / "tiny-lm"),
        args=pairpm_args(context.output_dir, **run_settings(context)),
        train_dataset=synthetic_pairs(24, 8),
        eval_dataset=synthetic_pairs(6, 3, seed=4),  # 9 pairs, not a multiple of the global batch
        processing_class=context.tokenizer,
    )


@torch.no_grad()
def probe_rewards(model, tokenizer) -> list[float]:
    """Rewards of `PROBE_TEXTS` (each process computes them all: under ZeRO-3 every rank takes part in a forward)."""
    was_training = model.training
    model.eval()
    batch = tokenizer(PROBE_TEXTS, return_tensors="pt", padding=True)
    rewards = model(**batch).logits[:, 0].float().tolist()
    model.train(was_training)
    return rewards


def world(trainer) -> dict:
    """What this process sees of its world, checked against what the launcher set up."""
    accelerator = trainer.accelerator
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    info = {
        "rank": accelerator.process_index,
        "world_size": trainer.args.world_size,
        "process_group_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "distributed_type": str(accelerator.distributed_type.value),
        "zero_stage": accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None,
        "fsdp_version": accelerator.state.fsdp_plugin.fsdp_version if trainer.is_fsdp_enabled else None,
    }
    assert info["world_size"] == info["process_group_size"] == accelerator.num_processes == expected, info
    return info


def run(name: str, context: Context) -> None:
    from trl_crome import CromeRewardTrainer

    trainer = CASES[name](context)
    before = world(trainer)
    trainer.train()
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    probe = probe_rewards(trainer.model, context.tokenizer) if isinstance(trainer, CromeRewardTrainer) else None
    trainer.save_model(str(context.output_dir / "final"))
    worlds = trainer.accelerator.gather_for_metrics([before], use_gather_object=True)
    if trainer.is_world_process_zero():
        result = {"worlds": worlds, "log_history": trainer.state.log_history, "eval": metrics, "probe": probe}
        (context.output_dir / "result.json").write_text(json.dumps(result, indent=1))
    trainer.accelerator.wait_for_everyone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--models", type=Path, required=True)
    args = parser.parse_args()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    tokenizer = smollm2_tokenizer()
    for name in args.cases:
        context = Context(args.output_dir / name, args.models, GLOBAL_BATCH // world_size, tokenizer)
        run(name, context)


if __name__ == "__main__":
    main()
