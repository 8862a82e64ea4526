"""Small builders shared by the trainer tests."""

from __future__ import annotations

from datasets import Dataset

from trl_crome import CromeRewardConfig


def tiny_args(output_dir, **overrides) -> CromeRewardConfig:
    """Fast, deterministic CPU settings (fp32, no checkpointing, no reporting, no saving)."""
    kwargs = dict(
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # no accelerator to pin for (transformers warns otherwise)
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return CromeRewardConfig(str(output_dir), **kwargs)


def mixed_pairs(n: int = 16) -> Dataset:
    """Preference pairs (original / causal) and neutral ties, in the standard explicit-prompt format."""
    topics = ["the moon", "bread", "rivers", "chess", "volcanoes", "tea", "bicycles", "owls"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        kind = ["original", "causal", "neutral"][i % 3]
        rows.append(
            {
                "prompt": f"Tell me one fact about {topic}.",
                "chosen": f"Here is a correct and relevant fact about {topic}.",
                "rejected": "No." if kind != "neutral" else f"Another answer about {topic}, equally off-topic.",
                "tie": kind == "neutral",
                "kind": kind,
            }
        )
    return Dataset.from_list(rows)
