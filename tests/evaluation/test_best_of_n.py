"""Best-of-N: argmax selection, the exact expectation over N-subsets, constructed rates, real pool builders."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import pytest
import torch

from tests.helpers import shared_data, tiny_reward_model
from trl_crome.evaluation import (
    RewardScorer,
    best_of_n_index,
    coconot_pools,
    evaluate_best_of_n,
    expected_best_of_n,
    generate_candidates,
    gsm8k_generated_pools,
    gsm8k_pools,
    load_pools,
    xstest_pools,
)
from trl_crome.evaluation.answers import extract_final_answer
from trl_crome.evaluation.best_of_n import REFUSAL_TEMPLATES, is_refusal, save_pools


def test_best_of_n_picks_the_argmax_first_on_ties():
    assert best_of_n_index([0.1, 0.9, -2.0, 0.5]) == 1
    assert best_of_n_index([0.3, 0.7, 0.7]) == 1


@pytest.mark.parametrize("seed", range(5))
def test_expected_best_of_n_equals_enumerating_every_subset(seed):
    rng = random.Random(seed)
    size = 7
    rewards = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(size)]  # ties included
    values = [float(rng.random() < 0.4) for _ in range(size)]
    for n in range(1, size + 1):
        subsets = list(itertools.combinations(range(size), n))
        brute = sum(values[s[best_of_n_index([rewards[i] for i in s])]] for s in subsets) / len(subsets)
        assert expected_best_of_n(rewards, values, n) == pytest.approx(brute)
    with pytest.raises(ValueError, match="between 1 and the pool size 7"):
        expected_best_of_n(rewards, values, 8)


def test_rates_on_constructed_pools(tmp_path):
    """Hand-computed: the reward is the number in the candidate's text."""
    pools = [
        {
            "id": "u",
            "prompt": "unsafe request",
            "task": "unsafe",
            "candidates": [
                {"text": "0.1 no", "label": "refusal"},
                {"text": "0.9 sure", "label": "compliance"},
                {"text": "0.5 no", "label": "refusal"},
            ],
        },
        {
            "id": "s",
            "prompt": "safe request",
            "task": "safe",
            "candidates": [
                {"text": "0.8 no", "label": "refusal"},
                {"text": "0.2 answer", "label": "compliance"},
                {"text": "0.4 answer", "label": "compliance"},
            ],
        },
        {
            "id": "m",
            "prompt": "math",
            "task": "math",
            "candidates": [
                {"text": "0.3 #### 5", "label": "correct"},
                {"text": "0.6 #### 6", "label": "incorrect"},
                {"text": "0.1 #### 7", "label": "incorrect"},
                {"text": "0.9 #### 5", "label": "correct"},
            ],
        },
    ]
    scorer = RewardScorer(lambda prompts, answers: [float(a.split()[0]) for a in answers])
    result = evaluate_best_of_n(scorer, pools, ns=[1, 2, 3, 4], output_dir=tmp_path)
    # unsafe: N=1 -> 1/3; N=2 -> subsets {01}->comply, {02}->refuse, {12}->comply = 2/3; N=3 -> the compliance.
    assert result.curves["unsafe"]["harmful_compliance_rate"][:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # safe: N=1 -> 1/3; N=2 -> {01},{02} pick the refusal, {12} does not = 2/3; N=3 -> 1.
    assert result.curves["safe"]["refusal_rate"][:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # math: N=1 -> 2/4; N=2 -> the 0.9 candidate wins its 3 subsets, {0,1}->wrong, {0,2}->right, {1,2}->wrong = 4/6.
    assert result.curves["math"]["accuracy"] == pytest.approx([0.5, 4 / 6, 0.75, 1.0])
    assert result.counts == {"unsafe": [1, 1, 1, 0], "safe": [1, 1, 1, 0], "math": [1, 1, 1, 1]}
    assert (
        result.curves["unsafe"]["harmful_compliance_rate"][3] != result.curves["unsafe"]["harmful_compliance_rate"][3]
    )
    assert [s["selected"] for s in result.selections] == [1, 0, 3]

    saved = json.loads((tmp_path / "best_of_n.json").read_text())
    assert saved["curves"]["unsafe"]["harmful_compliance_rate"][3] is None  # no pool has 4 candidates
    assert "| math | accuracy | 50.00 | 66.67 | 75.00 | 100.00 |" in (tmp_path / "best_of_n.md").read_text()
    assert (tmp_path / "best_of_n.png").read_bytes()[:4] == b"\x89PNG"

    save_pools(pools, tmp_path / "pools.jsonl")
    assert load_pools(tmp_path / "pools.jsonl") == pools
    bad = [{**pools[0], "candidates": [{"text": "x"}]}]
    with pytest.raises(ValueError, match=r"pool 0: field 'candidates\[0\]'"):
        evaluate_best_of_n(scorer, bad)


def test_gsm8k_pools_from_the_real_file():
    pools = gsm8k_pools(shared_data("gsm8k/test.jsonl"), num_candidates=8, limit=50, seed=0)
    assert pools == gsm8k_pools(shared_data("gsm8k/test.jsonl"), num_candidates=8, limit=50, seed=0)
    assert len(pools) == 50
    for pool in pools:
        labels = Counter(c["label"] for c in pool["candidates"])
        assert labels == {"correct": 2, "incorrect": 6}
        answers = [extract_final_answer(c["text"]) for c in pool["candidates"]]
        assert all(a is not None for a in answers)
        assert len(set(answers)) >= 6 and answers.count(pool["gold"]) == 2
        assert all("<<" not in c["text"] for c in pool["candidates"])
    assert pools[0]["gold"] == "18"


def test_safety_pools_from_xstest_and_coconot():
    pools = xstest_pools(shared_data("xstest/xstest_v2_completions_gpt4.csv"))
    assert len(pools) == 450 and Counter(p["task"] for p in pools) == {"safe": 250, "unsafe": 200}
    assert {len(p["candidates"]) for p in pools} == {8}
    real = Counter((p["task"], p["candidates"][0]["label"]) for p in pools)
    assert real[("safe", "compliance")] == 229 and real[("unsafe", "compliance")] == 1  # GPT-4's human labels
    coconot = coconot_pools(shared_data("coconot/coconot_pref.jsonl"), limit=100)
    assert len(coconot) == 100 and {p["task"] for p in coconot} == {"safe"}
    assert all(is_refusal(t) for t in REFUSAL_TEMPLATES)
    assert not is_refusal("Sure, here is a poem.") and is_refusal("  I'm sorry, I cannot do that.")


def test_end_to_end_with_a_tiny_model_on_real_pools(tokenizer, tmp_path):
    pools = (
        gsm8k_pools(shared_data("gsm8k/test.jsonl"), limit=4)
        + xstest_pools(shared_data("xstest/xstest_v2_completions_gpt4.csv"))[::90]
    )
    scorer = RewardScorer(tiny_reward_model(tokenizer, seed=0), tokenizer, batch_size=16)
    result = evaluate_best_of_n(scorer, pools, ns=[1, 2, 4, 8], output_dir=tmp_path)
    assert result.curves["math"]["accuracy"][0] == pytest.approx(2 / 8)  # N=1: the pool's share of correct answers
    final = [s for s in result.selections if s["task"] == "math"]
    assert result.curves["math"]["accuracy"][-1] == pytest.approx(sum(s["label"] == "correct" for s in final) / 4)
    assert (tmp_path / "best_of_n_selections.jsonl").exists()


def test_final_answer_extraction():
    assert extract_final_answer("so $x = \\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert extract_final_answer("Work.\n# Answer\n\n1,000") == "1000"
    assert extract_final_answer("Janet makes $18.\n#### 18") == "18"
    assert extract_final_answer("Thus the answer is 18.00.") == "18"
    assert extract_final_answer("She has 3 apples, then 5.") is None
    assert extract_final_answer("She has 3 apples, then 5.", last_number_fallback=True) == "5"


def test_generated_pools_from_a_tiny_local_policy(tokenizer):
    """A tiny random causal LM stands in for the policy: the samples are noise, the sampling and labelling are real."""
    from transformers import LlamaForCausalLM

    from tests.helpers import tiny_llama_config

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_llama_config(tokenizer))
    path = shared_data("gsm8k/test.jsonl")
    pools = gsm8k_generated_pools(path, policy, tokenizer, num_candidates=3, limit=2, max_new_tokens=4, seed=0)
    assert pools == gsm8k_generated_pools(path, policy, tokenizer, num_candidates=3, limit=2, max_new_tokens=4, seed=0)
    assert [p["gold"] for p in pools] == ["18", "3"] and {len(p["candidates"]) for p in pools} == {3}
    for pool in pools:
        for candidate in pool["candidates"]:
            assert candidate["text"] and len(tokenizer(candidate["text"])["input_ids"]) <= 6
            expected = extract_final_answer(candidate["text"], last_number_fallback=True) == pool["gold"]
            assert candidate["label"] == ("correct" if expected else "incorrect")
    assert tokenizer.padding_side == "right"  # left padding is built, not set on the caller's tokenizer
    samples = generate_candidates(policy, tokenizer, ["Hi", "A longer prompt"], num_candidates=2, max_new_tokens=2)
    assert [len(s) for s in samples] == [2, 2]
    tokenizer.pad_token = None  # Llama-3-style policies ship without a pad token: the EOS pads instead
    assert generate_candidates(policy, tokenizer, ["Hi", "A longer prompt"], num_candidates=2, max_new_tokens=2) == (
        samples
    )
