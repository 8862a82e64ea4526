"""RewardBench 2: the official best-of-N and Ties rules against values computed by hand, each completion scored once,
the PairPM equivalents, validation before scoring, files in the Hub schema, reports."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from tests.evaluation.benchmark_fixtures import (
    RewardsAsPreferences,
    must_not_score,
    rewardbench2_rows,
    write_rewardbench2,
)
from tests.helpers import tiny_reward_model
from trl_crome.data import CromeDataError
from trl_crome.evaluation import RewardScorer, evaluate_rewardbench2, load_rewardbench2
from trl_crome.evaluation.rewardbench2 import (
    SUBSETS,
    best_of_n_score,
    pairwise_best_of_n_score,
    subsample_rewardbench2,
)


def by_table(scores: dict[str, float]) -> RewardScorer:
    """A reward model that looks each answer's score up in `scores`."""
    return RewardScorer(lambda prompts, answers: [scores[a] for a in answers])


def row(row_id, subset, chosen, rejected, prompt="p"):
    return {"id": row_id, "prompt": prompt, "chosen": chosen, "rejected": rejected, "subset": subset}


# ----------------------------------------------------------------------------------------------------------------
# Best-of-N subsets


def test_best_of_4_rule_clear_winner_two_and_three_way_ties_and_a_loss():
    scores = {"w": 3.0, "a": 1.0, "b": 2.0, "c": 0.0, "t2": 2.0, "t3": 5.0, "l": 1.0, "top": 4.0}
    rows = [
        row("0", "Math", ["w"], ["a", "b", "c"]),  # clear winner: 1
        row("1", "Math", ["t2"], ["b", "a", "c"]),  # chosen ties one rejected at the top: 1/2
        row("2", "Math", ["t3"], ["t3", "t3", "a"]),  # three completions share the top: 1/3
        row("3", "Math", ["l"], ["a", "top", "c"]),  # chosen below a rejected: 0 (its tie with "a" is not the top)
    ]
    result = evaluate_rewardbench2(by_table(scores), rows)
    assert [r["result"] for r in result.rows] == [1.0, 0.5, pytest.approx(1 / 3), 0.0]
    assert result.subset_scores == {"Math": pytest.approx((1 + 0.5 + 1 / 3 + 0) / 4)}
    assert result.rows[1]["scores"] == [2.0, 2.0, 1.0, 0.0]  # chosen first, as the official code orders them
    assert best_of_n_score(2.0, [2.0, 2.0, 2.0]) == 0.25
    assert best_of_n_score(1.0, [1.0, 1.5]) == 0.0


def test_leaderboard_score_is_the_unweighted_mean_of_the_six_subsets():
    # One prompt per best-of-N subset (with 1, 1, 0, 0.5, 1) and a Ties pair with known terms.
    scores = {"hi": 2.0, "lo": 1.0, "mid": 1.5, "c1": 4.0, "c2": 3.0, "x": 0.0}
    rows = [
        row("0", "Factuality", ["hi"], ["lo", "lo"]),
        row("1", "Precise IF", ["hi"], ["mid"]),
        row("2", "Math", ["lo"], ["hi", "mid"]),
        row("3", "Safety", ["hi"], ["hi", "lo"]),
        row("4", "Focus", ["mid"], ["lo", "x"]),
        row("ref:7", "Ties", ["c1"], ["x"]),
        row("tied:7", "Ties", ["c1", "c2"], ["x"]),
    ]
    result = evaluate_rewardbench2(by_table(scores), rows)
    # Ties: both rows accurate; tied margin 3 > spread 1; min margin min(4, 3) = 3 > 1; tanh(3 / 1 - 1).
    ties = 0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(2.0)
    assert result.subset_scores == pytest.approx(
        {"Factuality": 1.0, "Precise IF": 1.0, "Math": 0.0, "Safety": 0.5, "Focus": 1.0, "Ties": ties}
    )
    assert list(result.subset_scores) == list(SUBSETS)
    assert result.score == pytest.approx((1 + 1 + 0 + 0.5 + 1 + ties) / 6)
    assert result.missing_subsets == [] and result.subset_counts["Ties"] == 2


# ----------------------------------------------------------------------------------------------------------------
# Ties


def test_ties_formula_on_hand_made_rows_with_no_spread_and_nan_margin_terms():
    s = {
        # prompt 1: ref margin 5 - 2 = 3; tied margin 4 - 3 = 1, spread 6 - 4 = 2
        "1r+": 5, "1r-a": 1, "1r-b": 2, "1t+a": 6, "1t+b": 4, "1t-a": 3, "1t-b": 0,
        # prompt 2: ref margin 1 - 2 = -1 (wrong); tied margin 9, spread 0 -> min margin -1 / 0 = -inf
        "2r+": 1, "2r-": 2, "2t+a": 9, "2t+b": 9, "2t-": 0,
        # prompt 3: the tied row has a single correct answer: no spread (comparisons false, margin term 0)
        "3r+": 4, "3r-": 0, "3t+": 3, "3t-": 1,
        # prompt 4: ref margin 0 (not accurate), tied margin 1, spread 0 -> min margin 0 / 0 = NaN -> 0
        "4r+": 2, "4r-": 2, "4t+a": 2, "4t+b": 2, "4t-": 1,
        # prompt 5: tied margin 3 - 1 = 2 equals its spread 5 - 3 = 2: not preferred (strictly greater is needed)
        "5r+": 4, "5r-": 1, "5t+a": 5, "5t+b": 3, "5t-": 1,
    }  # fmt: skip
    rows = [
        row("ref:1", "Ties", ["1r+"], ["1r-a", "1r-b"]),
        row("tied:1", "Ties", ["1t+a", "1t+b"], ["1t-a", "1t-b"]),
        row("tied:2", "Ties", ["2t+a", "2t+b"], ["2t-"]),  # partners need not be next to each other
        row("ref:2", "Ties", ["2r+"], ["2r-"]),
        row("ref:3", "Ties", ["3r+"], ["3r-"]),
        row("tied:3", "Ties", ["3t+"], ["3t-"]),
        row("ref:4", "Ties", ["4r+"], ["4r-"]),
        row("tied:4", "Ties", ["4t+a", "4t+b"], ["4t-"]),
        row("ref:5", "Ties", ["5r+"], ["5r-"]),
        row("tied:5", "Ties", ["5t+a", "5t+b"], ["5t-"]),
    ]
    result = evaluate_rewardbench2(by_table(s), rows)
    ref_accuracy = (1 + 0 + 1 + 0 + 1) / 5
    tied_accuracy = (1 + 1 + 1 + 1 + 1) / 5
    preferred = (0 + 1 + 0 + 1 + 0) / 5  # tied margin > spread: 1 > 2, 9 > 0, (no spread), 1 > 0, 2 > 2
    preferred_hard = (0 + 0 + 0 + 0 + 0) / 5  # min margin > spread: 1 > 2, -1 > 0, (no spread), 0 > 0, 2 > 2
    margin_term = (math.tanh(1 / 2 - 1) + math.tanh(-math.inf) + 0 + 0 + math.tanh(2 / 2 - 1)) / 5
    score = 0.3 * tied_accuracy + 0.3 * ref_accuracy + 0.2 * preferred + 0.2 * preferred_hard + 0.01 * margin_term
    expected = {
        "tied_accuracy": tied_accuracy,
        "ref_accuracy": ref_accuracy,
        "preferred": preferred,
        "preferred_hard": preferred_hard,
        "margin_term": margin_term,
        "score": score,
    }
    assert result.ties == pytest.approx(expected)
    assert result.subset_scores == {"Ties": pytest.approx(expected["score"])}
    by_id = {r["id"]: r for r in result.rows}
    assert by_id["tied:3"]["spread"] is None and by_id["ref:1"]["spread"] is None
    assert (by_id["tied:1"]["margin"], by_id["tied:1"]["spread"], by_id["ref:2"]["accurate"]) == (1, 2, False)


# ----------------------------------------------------------------------------------------------------------------
# Scoring each completion once


def test_each_distinct_completion_is_scored_once_in_one_call(tokenizer):
    rows = rewardbench2_rows()
    calls, seen = [], Counter()

    def count(prompts, answers):
        calls.append(len(answers))
        seen.update(zip(prompts, answers))
        return [float(len(a)) for a in answers]

    result = evaluate_rewardbench2(RewardScorer(count), rows)
    distinct = {(r["prompt"], a) for r in rows for a in r["chosen"] + r["rejected"]}
    total = sum(len(r["chosen"]) + len(r["rejected"]) for r in rows)
    assert total == 61 and len(distinct) == 54  # the Ties ref / tied rows share their prompt and answers
    assert calls == [54] and set(seen.values()) == {1} and set(seen) == distinct
    # A shared completion gets the same score in every row it appears in.
    by_id = {r["id"]: r for r in result.rows}
    assert by_id["ref:0"]["scores"][1:] == by_id["tied:0"]["scores"][4:]

    # A real model: 54 sequences in length-sorted batches, the same rewards as scoring every row on its own.
    scorer = RewardScorer(tiny_reward_model(tokenizer, seed=0), tokenizer, batch_size=8, show_progress=False)
    result = evaluate_rewardbench2(scorer, rows)
    assert scorer.stats.sequences == 54 and scorer.stats.batches == 7
    alone = RewardScorer(tiny_reward_model(tokenizer, seed=0), tokenizer, batch_size=1, show_progress=False)
    for r, record in zip(rows, result.rows):
        expected = alone.score([r["prompt"]] * (len(r["chosen"]) + len(r["rejected"])), r["chosen"] + r["rejected"])
        assert record["scores"] == pytest.approx(expected, abs=1e-5)


def test_score_pairs_only_scorers_pair_answers_of_the_same_prompt():
    rows = rewardbench2_rows()
    seen = Counter()

    class PairsOnly:
        def score_pairs(self, prompts, chosen, rejected):
            seen.update(zip(prompts, chosen))
            seen.update(zip(prompts, rejected))
            return [float(len(a)) for a in chosen], [float(len(a)) for a in rejected]

    result = evaluate_rewardbench2(PairsOnly(), rows)
    reference = evaluate_rewardbench2(RewardScorer(lambda p, a: [float(len(x)) for x in a]), rows)
    assert result.subset_scores == reference.subset_scores
    # 54 distinct answers; a prompt with an odd number of them pairs its last with itself (scored twice).
    odd_prompts = sum(
        len({a for r in rows if r["prompt"] == p for a in r["chosen"] + r["rejected"]}) % 2
        for p in {r["prompt"] for r in rows}
    )
    assert odd_prompts == 2 and sum(seen.values()) == 54 + odd_prompts and max(seen.values()) <= 2


# ----------------------------------------------------------------------------------------------------------------
# Preference models (PairPM)


def test_pairwise_tie_rule_by_hand():
    assert pairwise_best_of_n_score([0.7, 0.6, 0.9]) == 1.0
    assert pairwise_best_of_n_score([0.7, 0.5, 0.6]) == 0.5
    assert pairwise_best_of_n_score([0.5, 0.5, 0.6]) == pytest.approx(1 / 3)
    assert pairwise_best_of_n_score([0.9, 0.4, 0.5]) == 0.0

    class Table:
        def prefer(self, prompts, a, b):
            return [{"a": 0.7, "b": 0.5, "c": 0.6, "d": 0.4}[y] for y in b]

    rows = [row("0", "Focus", ["x"], ["a", "b", "c"]), row("1", "Focus", ["x"], ["a", "c", "d"])]
    result = evaluate_rewardbench2(Table(), rows)
    assert result.model_type == "preference"
    assert [r["result"] for r in result.rows] == [0.5, 0.0]
    assert result.rows[0]["preferences"] == [0.7, 0.5, 0.6]


def test_preferences_derived_from_rewards_give_the_official_scores_ties_included():
    rows = rewardbench2_rows()
    answers = sorted({a for r in rows for a in r["chosen"] + r["rejected"]})
    # Generic scores, and an exact tie at the top between the chosen and a rejected completion of one prompt.
    scores = {a: round(3 * math.sin(i), 6) for i, a in enumerate(answers)}
    scores["Cats nap."] = scores["Cats nap in warm sunlight."] = 10.0
    reward = evaluate_rewardbench2(by_table(scores), rows)
    preference = evaluate_rewardbench2(RewardsAsPreferences(scores), rows)
    assert preference.model_type == "preference" and reward.model_type == "reward"
    assert preference.subset_scores == pytest.approx(reward.subset_scores, abs=1e-9)
    assert preference.ties == pytest.approx(reward.ties, abs=1e-9)
    assert [r.get("result") for r in preference.rows] == [r.get("result") for r in reward.rows]
    assert reward.rows[2]["result"] == 0.5 and 0 < reward.subset_scores["Ties"]


def test_tiny_pairpm_compares_each_pair_in_both_orders(tokenizer, tmp_path):
    from tests.trainer.test_pairpm import tiny_causal_lm
    from trl_crome.evaluation.pairpm import PairPMScorer

    rows = rewardbench2_rows()
    scorer = PairPMScorer(tiny_causal_lm(tokenizer, initializer_range=0.1), tokenizer, show_progress=False)
    result = evaluate_rewardbench2(scorer, rows, output_dir=tmp_path)
    # best-of-4: 3 comparisons per prompt; Ties: correct x incorrect + pairs of correct answers.
    comparisons = 10 * 3 + (1 * 3) + (4 * 3 + 6) + (1 * 2) + (4 * 3 + 6)
    distinct = {
        (r["prompt"], a, b)
        for r in rows
        for a, b in (
            [(r["chosen"][0], x) for x in r["rejected"]]
            if r["subset"] != "Ties"
            else [(c, x) for c in r["chosen"] for x in r["rejected"]]
            + [(c, d) for i, c in enumerate(r["chosen"]) for d in r["chosen"][i + 1 :]]
        )
    }
    assert sum(len(r["preferences"]) for r in result.rows) == comparisons
    assert scorer.stats.sequences == 2 * len(distinct)  # each distinct comparison read in both orders, once
    for record in result.rows:
        if record["subset"] != "Ties":
            assert record["result"] == pairwise_best_of_n_score(record["preferences"])
    ref = next(r for r in result.rows if r["id"] == "ref:1")
    expected_margin = min(math.log(p / (1 - p)) for p in ref["preferences"])
    assert ref["margin"] == pytest.approx(expected_margin) and ref["accurate"] == (expected_margin > 0)
    assert json.loads((tmp_path / "rewardbench2.json").read_text())["model_type"] == "preference"


def test_a_pairpm_folder_path_is_loaded_as_a_pairpm(tokenizer, tmp_path):
    from tests.trainer.test_pairpm import tiny_causal_lm

    tiny_causal_lm(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "pairpm.json").write_text(json.dumps({"template_version": "pairpm@1", "max_length": 256}))
    result = evaluate_rewardbench2(str(tmp_path), rewardbench2_rows(), per_subset=1, show_progress=False)
    assert result.model_type == "preference" and result.num_rows == 7


# ----------------------------------------------------------------------------------------------------------------
# Validation, loading, subsampling, reports


@pytest.mark.parametrize(
    ("index", "change", "field", "message"),
    [
        (3, lambda r: r.pop("prompt"), "prompt", "is missing"),
        (2, lambda r: r.update(subset=None), "subset", "is missing"),
        (4, lambda r: r.update(chosen="12 * 7 = 84."), "chosen", "non-empty list of strings, got a str"),
        (5, lambda r: r.update(rejected=[]), "rejected", "non-empty list of strings"),
        (1, lambda r: r.update(rejected=["a", 3, "b"]), "rejected", "int"),
        (0, lambda r: r.update(chosen=["a", "b"], num_correct=2), "chosen", "one chosen completion, got 2"),
        (6, lambda r: r.update(subset="Chat"), "subset", "unknown subset 'Chat'"),
        (7, lambda r: r.update(num_correct=2), "num_correct", "'chosen' has 1"),
        (8, lambda r: r.update(total_completions=5), "total_completions", "hold 4"),
        (10, lambda r: r.update(id="reference:0"), "id", "'ref:N' or 'tied:N'"),
        (12, lambda r: r.update(id="ref:0"), "id", "repeats row 10"),
    ],
)
def test_bad_rows_raise_naming_row_and_field_before_scoring(index, change, field, message):
    rows = rewardbench2_rows()
    change(rows[index])
    with pytest.raises(CromeDataError, match=message) as error:
        evaluate_rewardbench2(RewardScorer(must_not_score), rows)
    assert (error.value.row, error.value.field) == (index, field)
    assert f"row {index}, field '{field}'" in str(error.value)


def test_ties_row_without_its_partner_is_an_error(tmp_path):
    rows = [r for r in rewardbench2_rows() if r["id"] != "tied:1"]
    path = write_rewardbench2(tmp_path / "rb2.jsonl", rows)
    with pytest.raises(CromeDataError, match="'ref:1' has no 'tied:1' partner") as error:
        load_rewardbench2(path)
    assert (error.value.row, error.value.field) == (12, "id")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_local_files_in_the_hub_schema_load_the_same_rows(tmp_path, suffix):
    rows = rewardbench2_rows()
    loaded = load_rewardbench2(write_rewardbench2(tmp_path / f"rb2{suffix}", rows))
    keys = ("id", "prompt", "chosen", "rejected", "subset", "num_correct", "total_completions")
    assert [{k: r[k] for k in keys} for r in loaded] == [{k: r[k] for k in keys} for r in rows]


def test_hub_source_loads_the_test_split_of_reward_bench_2(monkeypatch):
    """The Hub cannot be reached here: `datasets.load_dataset` is replaced to check what would be downloaded."""
    import datasets

    calls = []

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split))
        return datasets.Dataset.from_list(rewardbench2_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_rewardbench2("hub")) == 14 and len(load_rewardbench2()) == 14
    assert calls == [("allenai/reward-bench-2", "test")] * 2


def test_subsample_keeps_both_rows_of_a_ties_prompt():
    rows = rewardbench2_rows()
    sample = subsample_rewardbench2(rows, per_subset=1, seed=0)
    assert Counter(r["subset"] for r in sample) == {**{s: 1 for s in SUBSETS if s != "Ties"}, "Ties": 2}
    ties_ids = sorted(r["id"] for r in sample if r["subset"] == "Ties")
    assert ties_ids in (["ref:0", "tied:0"], ["ref:1", "tied:1"])
    assert sample == subsample_rewardbench2(rows, per_subset=1, seed=0)
    assert subsample_rewardbench2(rows, per_subset=5, seed=0) == rows


def test_reports_json_markdown_rows_and_plot(tmp_path):
    rows = [r for r in rewardbench2_rows() if r["subset"] in ("Math", "Ties")]
    result = evaluate_rewardbench2(RewardScorer(lambda p, a: [float(len(x)) for x in a]), rows, output_dir=tmp_path)
    saved = json.loads((tmp_path / "rewardbench2.json").read_text())
    assert saved["score"] == pytest.approx(result.score) and saved["missing_subsets"] == [
        "Factuality",
        "Precise IF",
        "Safety",
        "Focus",
    ]
    markdown = (tmp_path / "rewardbench2.md").read_text()
    assert f"| Math | 2 | {100 * result.subset_scores['Math']:.2f} |" in markdown
    assert "| **Score** (mean of 2 subsets) |" in markdown and "Partial run" in markdown
    assert "| margin term | 0.01 |" in markdown
    assert len((tmp_path / "rewardbench2_rows.jsonl").read_text().splitlines()) == 6
    assert (tmp_path / "rewardbench2_subsets.png").read_bytes()[:4] == b"\x89PNG"
