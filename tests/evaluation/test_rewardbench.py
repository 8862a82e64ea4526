"""RewardBench: the official weighted section formula, ties, preference models, and a real end-to-end run."""

from __future__ import annotations

import json

import pytest

from tests.helpers import shared_data, tiny_reward_model
from trl_crome.evaluation import RewardScorer, evaluate_rewardbench, load_rewardbench, section_scores
from trl_crome.evaluation.rewardbench import SECTION_WEIGHTS, length_bias_gap, score_rewardbench, subsample_per_subset


def _accuracies() -> dict[str, float]:
    """A distinct accuracy per subset: 0.50, 0.52, 0.54, ... in registry order."""
    subsets = [s for weights in SECTION_WEIGHTS.values() for s in weights]
    return {subset: 0.5 + 0.02 * i for i, subset in enumerate(subsets)}


def test_section_scores_follow_the_official_example_count_weighting():
    acc = _accuracies()
    scores = section_scores(acc)
    chat = (
        100 * acc["alpacaeval-easy"]
        + 95 * acc["alpacaeval-length"]
        + 95 * acc["alpacaeval-hard"]
        + 28 * acc["mt-bench-easy"]
        + 40 * acc["mt-bench-med"]
    ) / 358
    reasoning = (
        984 * acc["math-prm"]
        + 164
        * (acc["hep-cpp"] + acc["hep-go"] + acc["hep-java"] + acc["hep-js"] + acc["hep-python"] + acc["hep-rust"])
    ) / (984 + 6 * 164)
    safety = (
        100 * acc["refusals-dangerous"]
        + 100 * acc["refusals-offensive"]
        + 154 * acc["xstest-should-refuse"]
        + 250 * acc["xstest-should-respond"]
        + 136 * acc["donotanswer"]
    ) / 740
    chat_hard = (
        37 * acc["mt-bench-hard"]
        + 100 * acc["llmbar-natural"]
        + 134 * acc["llmbar-adver-neighbor"]
        + 92 * acc["llmbar-adver-GPTInst"]
        + 47 * acc["llmbar-adver-GPTOut"]
        + 46 * acc["llmbar-adver-manual"]
    ) / 456
    assert scores == pytest.approx({"Chat": chat, "Chat Hard": chat_hard, "Safety": safety, "Reasoning": reasoning})
    # math-prm's up-weighting: math and the six code subsets weigh the same.
    assert reasoning == pytest.approx(
        0.5 * acc["math-prm"] + 0.5 * sum(acc[f"hep-{lang}"] for lang in "cpp go java js python rust".split()) / 6
    )


def test_length_bias_gap_and_missing_subsets():
    acc = {"alpacaeval-easy": 0.9, "alpacaeval-hard": 0.8, "donotanswer": 0.2, "refusals-dangerous": 0.4}
    assert length_bias_gap(acc) == pytest.approx(0.85 - 0.3)
    assert length_bias_gap({"alpacaeval-easy": 1.0}) is None
    assert section_scores({"hep-go": 0.25, "math-prm": 1.0}) == {"Reasoning": pytest.approx((164 * 0.25 + 984) / 1148)}


def test_ties_count_as_wrong_and_preference_models_use_the_same_scoring():
    rows = [
        {"id": 1, "subset": "hep-go", "prompt": "p", "chosen": "good answer", "rejected": "bad"},
        {"id": 2, "subset": "hep-go", "prompt": "p", "chosen": "same", "rejected": "same"},
        {"id": 3, "subset": "math-prm", "prompt": "p", "chosen": "x", "rejected": "longer"},
    ]
    by_length = RewardScorer(lambda prompts, answers: [len(a) for a in answers])
    result = evaluate_rewardbench(by_length, rows)
    assert result.subset_accuracy == {"hep-go": 0.5, "math-prm": 0.0}  # the tie in row 2 is wrong
    assert result.section_scores == {"Reasoning": pytest.approx(164 * 0.5 / 1148)}
    assert result.overall == pytest.approx(164 * 0.5 / 1148)

    class LengthPreference:
        def prefer(self, prompts, a, b):
            return [0.5 if len(x) == len(y) else float(len(x) > len(y)) for x, y in zip(a, b)]

    pairpm = evaluate_rewardbench(LengthPreference(), rows)
    assert pairpm.subset_accuracy == result.subset_accuracy
    assert [p["p_chosen"] for p in pairpm.pairs] == [1.0, 0.5, 0.0]


def test_bad_rows_name_the_index_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"id": 0, "subset": "hep-go", "prompt": "p", "chosen": "c", "rejected": "r"},
        {"id": 1, "subset": "hep-go", "prompt": "p", "chosen": "c"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match="row 1: field 'rejected'"):
        load_rewardbench(path)
    with pytest.raises(ValueError, match="row 0: field 'chosen' must be a string"):
        evaluate_rewardbench(lambda prompts, answers: [0.0] * len(answers), [{**rows[0], "chosen": 3}])


def test_real_rewardbench_file_subsample_end_to_end(tokenizer, tmp_path):
    rows = load_rewardbench(shared_data("rewardbench/filtered.jsonl"))
    assert len(rows) == 2985
    assert len({(r["subset"], r["id"]) for r in rows}) == 2985  # id 3692 repeats across subsets
    sample = subsample_per_subset(rows, per_subset=2, seed=0)
    assert sample == subsample_per_subset(rows, per_subset=2, seed=0)
    assert sample != subsample_per_subset(rows, per_subset=2, seed=1)

    scorer = RewardScorer(tiny_reward_model(tokenizer, seed=0), tokenizer, batch_size=8, max_length=512)
    result = evaluate_rewardbench(scorer, rows, per_subset=2, seed=0, output_dir=tmp_path)
    assert result.num_pairs == 46 and set(result.subset_counts.values()) == {2}
    assert set(result.section_scores) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert result.overall == pytest.approx(sum(result.section_scores.values()) / 4)
    recomputed = score_rewardbench(sample, {"margin": [p["margin"] for p in result.pairs]})
    assert recomputed.subset_accuracy == result.subset_accuracy
    assert all(p["margin"] == pytest.approx(p["reward_chosen"] - p["reward_rejected"]) for p in result.pairs)

    saved = json.loads((tmp_path / "rewardbench.json").read_text())
    assert saved["overall"] == pytest.approx(result.overall)
    assert "| **Overall** |" in (tmp_path / "rewardbench.md").read_text()
    assert (tmp_path / "rewardbench_sections.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "rewardbench_pairs.jsonl").read_text().splitlines()) == 46
