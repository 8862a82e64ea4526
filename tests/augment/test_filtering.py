import math

import pytest
import torch

from tests.helpers import tiny_reward_model
from trl_crome.augment.filtering import RewardModelBaseline, as_baseline, filter_pairs, is_uncertain
from trl_crome.augment.pairs import CromePair


class KnownMargins:
    """A baseline whose margin for a pair is read from its chosen answer, and which records what it was asked."""

    def __init__(self, margins):
        self.margins = margins
        self.seen = []

    def __call__(self, prompts, answers_a, answers_b):
        self.seen.extend(answers_a)
        return [self.margins[a] for a in answers_a]


def _pair(chosen, kind, tie=False):
    return CromePair("p", chosen, "r", tie=tie, kind=kind, source_row=0)


def test_filter_keeps_pairs_the_baseline_is_wrong_or_unsure_about():
    pairs = [
        _pair("original-confident", "original"),
        _pair("causal-confident", "causal"),  # sigmoid(5) = 0.993: right and sure -> dropped
        _pair("causal-edge-kept", "causal"),  # sigmoid(m) = 0.8 exactly: |0.8 - 1| = 0.2 >= tau -> kept
        _pair("causal-unsure", "causal"),  # sigmoid(0.5) = 0.62 -> kept
        _pair("causal-wrong", "causal"),  # sigmoid(-3) = 0.05 -> kept
        _pair("tie-balanced", "neutral", tie=True),  # sigmoid(0.3) = 0.57: |0.57 - 0.5| < 0.2 -> dropped
        _pair("tie-leaning", "neutral", tie=True),  # sigmoid(2) = 0.88 -> kept
        _pair("tie-leaning-other-way", "neutral", tie=True),  # sigmoid(-2) = 0.12 -> kept
    ]
    margins = {
        "causal-confident": 5.0,
        "causal-edge-kept": math.log(0.8 / 0.2) - 1e-9,
        "causal-unsure": 0.5,
        "causal-wrong": -3.0,
        "tie-balanced": 0.3,
        "tie-leaning": 2.0,
        "tie-leaning-other-way": -2.0,
    }
    baseline = KnownMargins(margins)
    kept, dropped = filter_pairs(pairs, baseline, tau=0.2)

    assert [p.chosen for p in kept] == [
        "original-confident",
        "causal-edge-kept",
        "causal-unsure",
        "causal-wrong",
        "tie-leaning",
        "tie-leaning-other-way",
    ]
    assert dropped == {"causal": 1, "neutral": 1}
    assert "original-confident" not in baseline.seen  # originals are kept without being scored


def test_tau_zero_keeps_everything_and_large_tau_keeps_only_originals():
    pairs = [_pair("o", "original"), _pair("c", "causal"), _pair("n", "neutral", tie=True)]
    baseline = KnownMargins({"c": 1.0, "n": 1.0})
    assert len(filter_pairs(pairs, baseline, tau=0.0)[0]) == 3
    assert [p.kind for p in filter_pairs(pairs, baseline, tau=0.9)[0]] == ["original"]


def test_is_uncertain_survives_huge_margins():
    assert is_uncertain(-1e6, 1.0, 0.2) and not is_uncertain(1e6, 1.0, 0.2)
    assert is_uncertain(1e6, 0.5, 0.2)


def test_a_baseline_returning_the_wrong_number_of_margins_is_an_error():
    with pytest.raises(ValueError, match="returned 0 margins for 1 pairs"):
        filter_pairs([_pair("c", "causal")], lambda p, a, b: [], tau=0.2)


def test_reward_model_baseline_scores_like_single_forward_passes(tokenizer):
    model = tiny_reward_model(tokenizer, seed=3)
    baseline = as_baseline((model, tokenizer), batch_size=2, show_progress=False)
    assert isinstance(baseline, RewardModelBaseline)
    prompts = ["Name a fruit.", "What is two plus two?", "Name a fruit."]
    answers_a = ["An apple.", "Four, because two and two make four.", "An apple."]
    answers_b = ["A car, which is not a fruit at all.", "Five.", "Banana"]

    margins = baseline(prompts, answers_a, answers_b)

    def reward(text):
        ids = tokenizer(text + tokenizer.eos_token, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    expected = [reward(p + a) - reward(p + b) for p, a, b in zip(prompts, answers_a, answers_b)]
    assert margins == pytest.approx(expected, abs=1e-4)


def test_reward_model_baseline_on_conversations_uses_the_chat_template(tokenizer):
    model = tiny_reward_model(tokenizer, seed=4)
    baseline = RewardModelBaseline(model, tokenizer, batch_size=4, show_progress=False)
    prompt = [{"role": "user", "content": "Say hi."}]
    good, bad = [{"role": "assistant", "content": "Hi!"}], [{"role": "assistant", "content": "No."}]

    def reward(messages):
        ids = tokenizer.apply_chat_template(messages, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    assert baseline([prompt], [good], [bad]) == pytest.approx([reward(prompt + good) - reward(prompt + bad)], abs=1e-4)


def test_baseline_types(tokenizer):
    scorer = KnownMargins({})
    assert as_baseline(scorer) is scorer
    with pytest.raises(TypeError, match=r"baseline=\(model, tokenizer\)"):
        as_baseline(tiny_reward_model(tokenizer))
    with pytest.raises(TypeError, match="got int"):
        as_baseline(3)


def test_baseline_from_a_saved_model_path(tokenizer, tmp_path):
    model = tiny_reward_model(tokenizer, seed=5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from_path = as_baseline(str(tmp_path), show_progress=False)
    from_objects = as_baseline((model, tokenizer), show_progress=False)
    args = (["Name a fruit."], ["An apple."], ["A car."])
    assert from_path(*args) == pytest.approx(from_objects(*args), abs=1e-5)
