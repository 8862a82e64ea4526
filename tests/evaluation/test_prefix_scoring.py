"""`RewardScorer(prefix_sharing=True)` gives the rewards of plain scoring on sets with several answers per prompt."""

import logging
import random

import pytest

from tests.helpers import tiny_reward_model
from trl_crome.evaluation.scoring import RewardScorer

WORDS = "the a river moon bread owl tea chess volcano bicycle quietly bright under over seven".split()


def answers_per_prompt(seed: int = 0) -> tuple[list[str], list[str]]:
    """RewardBench-2-like rows: 4 completions per prompt, one repeated (as Best-of-N pools often are)."""
    rng = random.Random(seed)
    prompts, answers = [], []
    for p in range(5):
        prompt = f"Question {p}: " + " ".join(rng.choices(WORDS, k=rng.randint(2, 25))) + "?\n"
        completions = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(3)]
        for answer in [*completions, completions[0]]:
            prompts.append(prompt)
            answers.append(answer)
    return prompts, answers


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain", "chat"])
def test_prefix_shared_scoring_equals_plain_scoring(tokenizer, chat_template):
    model = tiny_reward_model(tokenizer)
    prompts, answers = answers_per_prompt()
    plain = RewardScorer(model, tokenizer, batch_size=4, chat_template=chat_template, show_progress=False)
    shared = RewardScorer(
        model, tokenizer, batch_size=1, chat_template=chat_template, show_progress=False, prefix_sharing=True
    )
    expected, rewards = plain.score(prompts, answers), shared.score(prompts, answers)
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert max(expected) - min(expected) > 1e-3  # rewards differ: the comparison means something
    assert all(length > 0 for length in shared.prompt_lengths(prompts, shared.encode(prompts, answers)))
    # Each prompt once and each distinct answer once: fewer positions than the real tokens.
    assert shared.stats.real_tokens == plain.stats.real_tokens
    assert shared.stats.padded_tokens < 0.75 * shared.stats.real_tokens
    assert shared.stats.sequences == len(prompts) and shared.stats.batches > 1


def test_prefix_shared_scoring_with_truncation_and_unshareable_prompts(tokenizer):
    model = tiny_reward_model(tokenizer)
    prompts, answers = answers_per_prompt(seed=1)
    # "Hi" + "there" tokenizes across the boundary: these rows are scored whole.
    prompts, answers = prompts + ["Hi", "Hi"], answers + ["there", "thereafter"]
    kwargs = dict(batch_size=2, max_length=30, show_progress=False, chat_template=False)
    plain, shared = (
        RewardScorer(model, tokenizer, **kwargs),
        RewardScorer(model, tokenizer, prefix_sharing=True, **kwargs),
    )
    assert shared.score(prompts, answers) == pytest.approx(plain.score(prompts, answers), abs=1e-5)
    assert shared.stats.truncated == plain.stats.truncated > 0
    assert shared.prompt_lengths(prompts, shared.encode(prompts, answers))[-2:] == [0, 0]


def test_flash_attention_scores_packed_instead(tokenizer, caplog):
    model = tiny_reward_model(tokenizer)
    model.config._attn_implementation = "flash_attention_2"  # only the choice of path is checked: no forward pass
    with caplog.at_level(logging.WARNING):
        scorer = RewardScorer(model, tokenizer, prefix_sharing=True, show_progress=False)
    assert scorer.packing and not scorer.prefix_sharing
    assert "scored packed instead" in caplog.text
