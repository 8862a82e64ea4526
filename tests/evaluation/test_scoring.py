"""RewardScorer: token format identical to TRL's RewardTrainer, order-preserving length-sorted batches."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from tests.helpers import tiny_reward_model
from trl_crome.evaluation import RewardScorer, build_input_ids
from trl_crome.evaluation.scoring import length_sorted_batches

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Write a haiku about the sea, please, with care.", "Hi"]
ANSWERS = ["4", "Blue is a colour that many people like a lot.", "Waves fold into foam\nsalt wind", "Hello there!"]


def _trl_token_ids(tokenizer, rows, tmp_path) -> list[list[int]]:
    """The chosen ids TRL's own RewardTrainer builds for `rows` (its dataset preparation, not a copy of it)."""
    trainer = RewardTrainer(
        model=tiny_reward_model(tokenizer),
        args=RewardConfig(output_dir=str(tmp_path), report_to=[], max_length=None, bf16=False, use_cpu=True),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer.train_dataset["chosen_ids"]


def test_build_input_ids_matches_trl_reward_trainer_plain_and_chat(tokenizer, tmp_path):
    plain = [{"prompt": p, "chosen": a, "rejected": "no"} for p, a in zip(PROMPTS, ANSWERS)]
    assert _trl_token_ids(tokenizer, plain, tmp_path / "plain") == [
        build_input_ids(tokenizer, p, a, chat_template=False) for p, a in zip(PROMPTS, ANSWERS)
    ]
    chat = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for p, a in zip(PROMPTS, ANSWERS)
    ]
    expected = _trl_token_ids(tokenizer, chat, tmp_path / "chat")
    assert expected == [build_input_ids(tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)]  # None -> chat template
    assert expected[0] != build_input_ids(tokenizer, PROMPTS[0], ANSWERS[0], chat_template=False)


def test_plain_format_does_not_double_the_eos(tokenizer):
    ids = build_input_ids(tokenizer, "Q: ", "A" + tokenizer.eos_token, chat_template=False)
    assert ids == build_input_ids(tokenizer, "Q: ", "A", chat_template=False)
    assert ids.count(tokenizer.eos_token_id) == 1


def test_length_sorted_scoring_equals_unsorted_in_input_order(tokenizer):
    model = tiny_reward_model(tokenizer, seed=3)
    prompts, answers = PROMPTS * 3, [a * (i + 1) for i, a in enumerate(ANSWERS * 3)]
    sorted_scorer = RewardScorer(model, tokenizer, batch_size=4, sort_by_length=True)
    unsorted_scorer = RewardScorer(model, tokenizer, batch_size=4, sort_by_length=False)
    one_by_one = RewardScorer(model, tokenizer, batch_size=1)
    sorted_rewards = sorted_scorer.score(prompts, answers)
    reference = one_by_one.score(prompts, answers)
    assert sorted_rewards == pytest.approx(unsorted_scorer.score(prompts, answers), abs=1e-5)
    assert sorted_rewards == pytest.approx(reference, abs=1e-5)
    # Padding accounting: unpadded runs waste nothing, and sorting wastes less than file order.
    assert one_by_one.stats.padded_tokens == one_by_one.stats.real_tokens == sorted_scorer.stats.real_tokens
    assert sorted_scorer.stats.padded_tokens < unsorted_scorer.stats.padded_tokens
    assert sorted_scorer.stats.sequences == len(prompts) and sorted_scorer.stats.batches == 3


def test_length_sorted_batches_cover_every_index_longest_first():
    batches = length_sorted_batches([3, 9, 1, 7, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert length_sorted_batches([3, 9, 1], batch_size=2, sort_by_length=False) == [[0, 1], [2]]


def test_score_pairs_and_max_length_truncation_keep_the_end(tokenizer):
    model = tiny_reward_model(tokenizer, seed=1)
    scorer = RewardScorer(model, tokenizer, batch_size=8)
    chosen, rejected = scorer.score_pairs(PROMPTS, ANSWERS, ANSWERS[::-1])
    both = scorer.score(PROMPTS + PROMPTS, ANSWERS + ANSWERS[::-1])
    assert chosen + rejected == pytest.approx(both, abs=1e-5)

    truncating = RewardScorer(model, tokenizer, max_length=6)
    ids = truncating.encode(PROMPTS, ANSWERS)
    expected = RewardScorer(model, tokenizer).score_ids([i[-6:] for i in ids])
    assert truncating.score(PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-5)
    assert truncating.stats.truncated == sum(len(i) > 6 for i in ids) > 0


def test_callable_scorer_and_input_errors(tokenizer):
    scorer = RewardScorer(lambda prompts, answers: [len(a) for a in answers])
    assert scorer.score_pairs(["p", "q"], ["long answer", "a"], ["b", "bb"]) == ([11.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        RewardScorer(tiny_reward_model(tokenizer), tokenizer).score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="tokenizer is needed"):
        RewardScorer(tiny_reward_model(tokenizer))
    with pytest.raises(ValueError, match="chat messages"):
        build_input_ids(tokenizer, [{"role": "user", "content": "x"}], "y", chat_template=False)


def test_scorer_loads_a_saved_model_folder(tokenizer, tmp_path):
    model = tiny_reward_model(tokenizer, seed=2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = RewardScorer(tmp_path, device="cpu")
    direct = RewardScorer(model, tokenizer)
    assert loaded.score(PROMPTS, ANSWERS) == pytest.approx(direct.score(PROMPTS, ANSWERS), abs=1e-5)
    assert isinstance(loaded.model, torch.nn.Module)
