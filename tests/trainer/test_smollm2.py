"""The real SmolLM2-135M-Instruct, loaded by TRL from a model path, trains as a Crome reward model on real pairs."""

import json

import pytest
from datasets import Dataset

from tests.helpers import shared_data, smollm2_tokenizer
from tests.trainer.common import tiny_args
from trl_crome import CromeRewardTrainer
from trl_crome.models import smollm2_path


def real_pairs_with_ties(n: int = 8) -> Dataset:
    """UltraFeedback pairs (shortened to keep the test fast) plus Irrelevant Query Neutrals built from them."""
    lines = shared_data("ultrafeedback/train.jsonl").read_text().splitlines()[:n]
    pairs = [json.loads(line) for line in lines]
    rows = [
        {"prompt": p["prompt"][:200], "chosen": p["chosen"][:300], "rejected": p["rejected"][:300], "tie": False}
        for p in pairs
    ]
    # A neutral pair: the two answers of one example under the prompt of the next one (never its own).
    rows += [{**rows[i], "prompt": rows[(i + 1) % n]["prompt"], "tie": True} for i in range(0, n, 2)]
    return Dataset.from_list(rows)


@pytest.mark.slow
def test_smollm2_trains_with_ties_and_writes_a_card(tmp_path):
    data = real_pairs_with_ties()
    args = tiny_args(tmp_path, per_device_train_batch_size=4, max_steps=6, learning_rate=5e-5, max_length=256)
    trainer = CromeRewardTrainer(str(smollm2_path()), args=args, train_dataset=data, eval_dataset=data)
    assert trainer.processing_class.name_or_path == smollm2_tokenizer().name_or_path
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_count/neutral"] == 4 and after["eval_count/original"] + 4 == len(data)
    assert after["eval_loss"] < before["eval_loss"]
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "crome" in card and "Robust Reward Modeling via Causal Rubrics" in card
    assert "| neutral | 4 |" in card
