"""CromeRewardTrainer on tiny random Llama reward models with the real SmolLM2 tokenizer."""

import math

import pytest
import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from tests.helpers import tiny_reward_model
from tests.trainer.common import mixed_pairs, tiny_args
from trl_crome import CromeRewardTrainer
from trl_crome.trainer.config import activation_checkpointing_kwargs


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_compute_loss_equals_formula_on_a_fixed_batch(tmp_path, tokenizer):
    data = mixed_pairs(6).add_column("margin", [0.5, 0.0, 1.0, -0.5, 0.25, 0.0])
    args = tiny_args(tmp_path, tie_loss_weight=2.0, center_rewards_coefficient=0.01)
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer), args=args, train_dataset=data, processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    model = trainer.model.eval()
    with torch.no_grad():
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        loss = trainer.compute_loss(model, dict(batch)).item()
    r_chosen, r_rejected = rewards[:6].tolist(), rewards[6:].tolist()

    expected = 0.0
    for i, row in enumerate(data):
        d = r_chosen[i] - r_rejected[i]
        if row["tie"]:
            expected += 2.0 * -(log_sigmoid(d) + log_sigmoid(-d)) / 2
        else:
            expected += -log_sigmoid(d - row["margin"])
    expected /= 6
    expected += 0.01 * sum((c + r) ** 2 for c, r in zip(r_chosen, r_rejected)) / 6
    assert loss == pytest.approx(expected, abs=1e-6)
    assert batch["tie"].tolist() == data["tie"]
    assert [trainer.kind_names[k] for k in batch["kind_id"].tolist()] == data["kind"]


@pytest.mark.parametrize("with_margin", [False, True])
def test_drop_in_same_loss_and_parameters_as_trl(tmp_path, tokenizer, with_margin):
    """Without tie/kind columns, swapping RewardTrainer for CromeRewardTrainer (same RewardConfig) changes nothing."""
    data = mixed_pairs(16).remove_columns(["tie", "kind"])
    if with_margin:
        data = data.add_column("margin", [0.1 * (i % 5) for i in range(16)])
    histories, weights = [], []
    for trainer_cls in (RewardTrainer, CromeRewardTrainer):
        args = RewardConfig(
            str(tmp_path / trainer_cls.__name__),
            per_device_train_batch_size=4,
            max_steps=4,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            bf16=False,
            **activation_checkpointing_kwargs(False),  # a stock RewardConfig: the name depends on transformers
            save_strategy="no",
            seed=0,
        )
        trainer = trainer_cls(tiny_reward_model(tokenizer), args=args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        histories.append([log["loss"] for log in trainer.state.log_history if "loss" in log])
        weights.append(params(trainer.model))
    assert len(histories[0]) == 4
    assert histories[0] == pytest.approx(histories[1], abs=1e-6)
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-6, msg=name)


def test_gradient_accumulation_2x4_equals_1x8(tmp_path, tokenizer):
    data = mixed_pairs(24)
    weights = []
    for batch_size, accumulation in ((4, 2), (8, 1)):
        args = tiny_args(
            tmp_path / f"{batch_size}x{accumulation}",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=3,
        )
        trainer = CromeRewardTrainer(
            tiny_reward_model(tokenizer), args=args, train_dataset=data, processing_class=tokenizer
        )
        trainer.train()
        weights.append(params(trainer.model))
    moved = max((weights[0][n] - p).abs().max().item() for n, p in params(tiny_reward_model(tokenizer)).items())
    assert moved > 1e-3  # the runs trained
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_training_on_ties_drives_abs_delta_down(tmp_path, tokenizer):
    ties = mixed_pairs(24).filter(lambda row: row["tie"])
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer, seed=3),
        args=tiny_args(tmp_path, max_steps=30, learning_rate=3e-3),
        train_dataset=ties,
        eval_dataset=ties,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_tie_abs_margin"]
    trainer.train()
    after = trainer.evaluate()
    assert before > 0.01
    assert after["eval_tie_abs_margin"] < 0.2 * before
    assert "eval_accuracy" not in after  # accuracy covers preference pairs only
    assert after["eval_count/neutral"] == len(ties)


def test_training_on_preferences_drives_accuracy_up(tmp_path, tokenizer):
    words = ["apple", "river", "stone", "cloud", "green", "quiet", "lamp", "seven", "winter", "honey", "paper", "salt"]
    rows = [
        {"prompt": f"Describe {w}.", "chosen": f"A careful, accurate description of {w}.", "rejected": f"{w}? no idea"}
        for w in words
    ]
    # Half the pairs swapped so a constant reward cannot score: the model must read the answers.
    data = Dataset.from_list(rows)
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer, seed=1),
        args=tiny_args(tmp_path, max_steps=40, learning_rate=3e-3),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_accuracy"] == 1.0
    assert after["eval_margin"] > before["eval_margin"] + 1.0
    assert after["eval_loss"] < before["eval_loss"] / 2


def test_metrics_count_preference_pairs_only_and_kinds(tmp_path, tokenizer):
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer),
        args=tiny_args(tmp_path),
        train_dataset=mixed_pairs(6),
        processing_class=tokenizer,
    )
    delta = torch.tensor([1.0, -2.0, 0.5, -0.25, 3.0])
    tie = torch.tensor([False, False, True, True, False])
    kind = torch.tensor([0, 1, 2, 2, 0])
    per_pair = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    trainer._record_metrics("train", torch.ones(10, 3), torch.zeros(10, 1), delta, per_pair, tie, kind)
    metrics = trainer._pair_metrics("train")
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["margin"] == pytest.approx((1.0 - 2.0 + 3.0) / 3)
    assert metrics["tie_abs_margin"] == pytest.approx((0.5 + 0.25) / 2)
    assert metrics["loss/original"] == pytest.approx(0.3)
    assert metrics["loss/neutral"] == pytest.approx(0.35)
    assert (metrics["count/original"], metrics["count/causal"], metrics["count/neutral"]) == (2, 1, 2)
    assert trainer._pair_metrics("train") == {}  # consumed once logged


def test_formats_conversational_pretokenized_and_custom_kinds(tmp_path, tokenizer):
    base = mixed_pairs(8)
    conversational = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
                "tie": row["tie"],
                "kind": "paraphrase" if i == 0 else row["kind"],
            }
            for i, row in enumerate(base)
        ]
    )
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer),
        args=tiny_args(tmp_path),
        train_dataset=conversational,
        processing_class=tokenizer,
    )
    assert trainer.kind_names == ["original", "causal", "neutral", "paraphrase"]
    assert trainer.train_kind_counts == {"paraphrase": 1, "causal": 3, "neutral": 2, "original": 2}
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["chosen_ids"]).startswith("<|im_start|>")  # the chat template was applied
    trainer.train()

    pretokenized = Dataset.from_dict(
        {"chosen_ids": trainer.train_dataset["chosen_ids"], "rejected_ids": trainer.train_dataset["rejected_ids"]}
    )
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer), args=tiny_args(tmp_path), train_dataset=pretokenized, processing_class=tokenizer
    )
    trainer.train()
    assert trainer.train_kind_counts == {"original": 8}
