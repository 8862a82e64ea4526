"""The model card a user pushes: the base model named (a local folder by its name, never a machine path), no "None",
no empty sections, and a quick start whose code, run as written, scores with the saved model (BT and PairPM)."""

from __future__ import annotations

import re

import pytest
import torch
from datasets import Dataset

from tests.helpers import tiny_reward_model
from tests.trainer.common import mixed_pairs, tiny_args
from tests.trainer.test_pairpm import pairpm_args, synthetic_pairs, tiny_causal_lm
from trl_crome import CromeRewardTrainer
from trl_crome.evaluation.pairpm import PairPMScorer
from trl_crome.trainer.model_card import public_name
from trl_crome.trainer.pairpm_trainer import CromePairPMTrainer


def quick_start_code(card: str) -> str:
    section = card.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def assert_clean(card: str, tmp_path) -> None:
    assert "None" not in card and str(tmp_path) not in card and "/tmp" not in card
    assert "\n\n\n" not in card and not re.search(r" +\n", card)
    lines = [line for line in card.splitlines() if line]
    for line, following in zip(lines, lines[1:]):
        if (match := re.match(r"(#+) ", line)) and (after := re.match(r"(#+) ", following)):
            assert len(after.group(1)) > len(match.group(1)), f"empty section {line!r}"


def save_local_base(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_public_name(tmp_path, monkeypatch):
    assert public_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert public_name(tmp_path / "my-base") == "my-base"  # an absolute path, even one that no longer exists
    (tmp_path / "data.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert public_name("data.jsonl") == "data.jsonl" and public_name("./sub/model") == "model"
    assert public_name("") is None and public_name(None) is None


@pytest.mark.parametrize("conversational", [False, True])
def test_reward_model_card_from_a_local_base(tmp_path, tokenizer, monkeypatch, conversational):
    base = save_local_base(tiny_reward_model(tokenizer), tokenizer, tmp_path / "tiny-llama-rm")
    data = mixed_pairs(8)
    if conversational:
        data = Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": row["prompt"]}],
                    "chosen": [{"role": "assistant", "content": row["chosen"]}],
                    "rejected": [{"role": "assistant", "content": row["rejected"]}],
                    "tie": row["tie"],
                    "kind": row["kind"],
                }
                for row in data
            ]
        )
    output_dir = tmp_path / "my-crome-rm"
    trainer = CromeRewardTrainer(base, args=tiny_args(output_dir, max_steps=1), train_dataset=data)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    card = (output_dir / "README.md").read_text()

    assert_clean(card, tmp_path)
    assert "# Model Card for my-crome-rm" in card
    assert "fine-tuned version of `tiny-llama-rm` (a local model folder)" in card
    assert "base_model:" not in card.split("---")[1]  # the Hub's base_model field takes Hub ids only
    assert "| neutral | 2 |" in card
    code = quick_start_code(card)
    assert f'RewardScorer("my-crome-rm", chat_template={conversational})' in code

    # Run the card's code as written, from the folder that holds the model: it scores with the saved weights.
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)
    prompt, answers = namespace["prompt"], ["The capital of France is Paris.", "The capital of France is Lyon."]
    model = trainer.model.eval()
    expected = []
    for answer in answers:
        if conversational:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt + answer + tokenizer.eos_token)["input_ids"]
        with torch.no_grad():
            expected.append(model(torch.tensor([ids])).logits[0, 0].item())
    assert namespace["rewards"] == pytest.approx(expected, abs=1e-5)


def test_card_names_the_hub_repo_and_leaves_out_an_unknown_kind_table(tmp_path, tokenizer):
    model, data = tiny_reward_model(tokenizer), mixed_pairs(4)
    trainer = CromeRewardTrainer(model, args=tiny_args(tmp_path), train_dataset=data, processing_class=tokenizer)
    trainer.hub_model_id = "someone/crome-rm"  # what `init_hf_repo` sets when pushing
    trainer.train_kind_counts = {}  # as for a streamed training set
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert_clean(card, tmp_path)
    assert "a model built in memory" in card and "# Model Card for crome-rm" in card
    assert 'RewardScorer("someone/crome-rm", chat_template=False)\n' in quick_start_code(card)
    assert "| kind | training pairs |" not in card


def test_pairpm_card_from_a_local_base(tmp_path, tokenizer, monkeypatch):
    base = save_local_base(tiny_causal_lm(tokenizer), tokenizer, tmp_path / "tiny-llama-lm")
    output_dir = tmp_path / "my-crome-pairpm"
    trainer = CromePairPMTrainer(base, args=pairpm_args(output_dir, max_steps=1), train_dataset=synthetic_pairs(4, 2))
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    card = (output_dir / "README.md").read_text()

    assert_clean(card, tmp_path)
    assert "fine-tuned version of `tiny-llama-lm` (a local model folder)" in card
    code = quick_start_code(card)
    assert 'PairPMScorer("my-crome-pairpm")' in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)
    [probability] = namespace["probabilities"]
    prompt = namespace["prompt"]
    expected = PairPMScorer(str(output_dir), show_progress=False).prefer(
        [prompt], ["The capital of France is Paris."], ["The capital of France is Lyon."]
    )
    assert 0.0 < probability < 1.0 and probability == pytest.approx(expected[0], abs=1e-6)
