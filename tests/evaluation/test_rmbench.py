"""RM-Bench: the 3x3 style matrix, hard / normal / easy and the domain averaging against values computed by hand,
each answer scored once, the PairPM equivalent, validation before scoring, files in the official schema, reports."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.evaluation.benchmark_fixtures import (
    RewardsAsPreferences,
    must_not_score,
    rmbench_rows,
    write_rmbench,
    write_rmbench_domain_files,
)
from tests.helpers import tiny_reward_model
from trl_crome.data import CromeDataError
from trl_crome.evaluation import RewardScorer, evaluate_rmbench, load_rmbench
from trl_crome.evaluation.rmbench import domain_from_file_name, style_accuracies, subsample_rmbench, win_matrix


def numbered_rows(spec: list[tuple[str, list[float], list[float]]]) -> tuple[list[dict], dict[str, float]]:
    """Rows whose answers are named after their position, and the score of each answer."""
    rows, scores = [], {}
    for index, (domain, chosen, rejected) in enumerate(spec):
        names_c = [f"{index}-chosen-{i}" for i in range(3)]
        names_r = [f"{index}-rejected-{j}" for j in range(3)]
        scores.update(zip(names_c, chosen))
        scores.update(zip(names_r, rejected))
        row = {"id": index, "prompt": f"prompt {index}", "chosen": names_c, "rejected": names_r, "domain": domain}
        rows.append(row)
    return rows, scores


SPEC = [
    ("chat", [3, 2, 1], [2.5, 1.5, 0.5]),  # W = [[1,1,1],[0,1,1],[0,0,1]]
    ("chat", [1, 1, 1], [1, 0, 2]),  # W = [[0,1,0],[0,1,0],[0,1,0]] (1 vs 1 is a tie: a loss)
    ("math", [5, 5, 5], [1, 1, 1]),  # all won
    ("code", [0, 0, 0], [1, 1, 1]),  # all lost
    ("safety-refuse", [1, 2, 3], [0, 1, 2]),  # W = [[1,0,0],[1,1,0],[1,1,1]]
    ("safety-response", [2, 2, 2], [3, 1, 1]),  # W = [[0,1,1],[0,1,1],[0,1,1]]
]


def test_matrix_hard_normal_easy_and_domain_averaging_by_hand():
    rows, scores = numbered_rows(SPEC)
    result = evaluate_rmbench(RewardScorer(lambda p, answers: [scores[a] for a in answers]), rows)
    assert result.matrices["chat"] == [[0.5, 1.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.5, 0.5]]
    assert result.matrices["safety"] == [[0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 1.0, 1.0]]
    assert result.matrices["math"] == [[1.0] * 3] * 3 and result.matrices["code"] == [[0.0] * 3] * 3
    chat = {"hard": (1 + 0.5 + 0.5) / 3, "normal": (0.5 + 1 + 0.5) / 3, "easy": (0 + 0 + 0.5) / 3}
    safety = {"hard": (0.5 + 0.5 + 0.5) / 3, "normal": (0.5 + 1 + 1) / 3, "easy": (0.5 + 0.5 + 1) / 3}
    math_, code = {"hard": 1.0, "normal": 1.0, "easy": 1.0}, {"hard": 0.0, "normal": 0.0, "easy": 0.0}
    for name, expected in (("chat", chat), ("safety", safety), ("math", math_), ("code", code)):
        assert result.domains[name] == pytest.approx({**expected, "score": sum(expected.values()) / 3})
    # Overall: unweighted means over the four domains (chat and safety have 2 rows, math and code 1).
    domains = (chat, math_, code, safety)
    for name in ("hard", "normal", "easy"):
        assert result.overall[name] == pytest.approx(sum(d[name] for d in domains) / 4)
    assert result.overall["score"] == pytest.approx((0.5 + 1 + 0 + (0.5 + 2.5 / 3 + 2 / 3) / 3) / 4)
    assert result.domain_counts == {"chat": 2, "math": 1, "code": 1, "safety": 2} and result.missing_domains == []
    assert result.hard_easy_gap == pytest.approx(result.overall["easy"] - result.overall["hard"])
    assert result.rows[1]["wins"] == [[0, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert result.rows[1]["scores_chosen"] == [1, 1, 1] and result.rows[1]["scores_rejected"] == [1, 0, 2]


def test_rule_helpers():
    assert win_matrix([2, 1, 0], [1, 1, 1]) == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    matrix = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    assert style_accuracies(matrix) == pytest.approx({"hard": 1.1 / 3, "normal": 1.5 / 3, "easy": 1.9 / 3})


def test_each_distinct_answer_is_scored_once(tokenizer):
    rows = rmbench_rows()
    # The same prompt again with two of its answers, and a row whose concise chosen equals its plain one.
    rows.append({**rows[0], "id": 6, "chosen": [rows[0]["chosen"][0]] * 3})
    calls, seen = [], Counter()

    def count(prompts, answers):
        calls.append(len(answers))
        seen.update(zip(prompts, answers))
        return [float(len(a)) for a in answers]

    evaluate_rmbench(RewardScorer(count), rows)
    distinct = {(r["prompt"], a) for r in rows for a in r["chosen"] + r["rejected"]}
    assert len(distinct) == 36 and calls == [36] and set(seen.values()) == {1}

    scorer = RewardScorer(tiny_reward_model(tokenizer, seed=1), tokenizer, batch_size=16, show_progress=False)
    result = evaluate_rmbench(scorer, rows)
    assert scorer.stats.sequences == 36
    alone = RewardScorer(tiny_reward_model(tokenizer, seed=1), tokenizer, batch_size=1, show_progress=False)
    for r, record in zip(rows, result.rows):
        assert record["scores_chosen"] == pytest.approx(alone.score([r["prompt"]] * 3, r["chosen"]), abs=1e-5)
        assert record["wins"] == win_matrix(record["scores_chosen"], record["scores_rejected"])


def test_preferences_derived_from_rewards_give_the_official_matrices():
    rows, scores = numbered_rows(SPEC)
    reward = evaluate_rmbench(RewardScorer(lambda p, answers: [scores[a] for a in answers]), rows)
    preference = evaluate_rmbench(RewardsAsPreferences(scores), rows)
    assert preference.model_type == "preference" and reward.model_type == "reward"
    assert preference.matrices == reward.matrices and preference.overall == reward.overall
    # The exact tie (chosen 1 vs rejected 1) is P = 0.5: a loss, as in the pointwise rule.
    assert preference.rows[1]["preferences"][0][0] == 0.5 and preference.rows[1]["wins"][0][0] == 0


def test_tiny_pairpm_makes_the_nine_comparisons_in_both_orders(tokenizer, tmp_path):
    from tests.trainer.test_pairpm import tiny_causal_lm
    from trl_crome.evaluation.pairpm import PairPMScorer

    rows = rmbench_rows()
    scorer = PairPMScorer(tiny_causal_lm(tokenizer, initializer_range=0.1), tokenizer, show_progress=False)
    result = evaluate_rmbench(scorer, rows, output_dir=tmp_path)
    assert scorer.stats.sequences == 2 * 9 * len(rows)
    for record in result.rows:
        assert record["wins"] == [[int(p > 0.5) for p in line] for line in record["preferences"]]
    row = rows[3]
    alone = scorer.prefer([row["prompt"]], [row["chosen"][0]], [row["rejected"][2]])[0]
    assert result.rows[3]["preferences"][0][2] == pytest.approx(alone, abs=1e-6)
    assert json.loads((tmp_path / "rmbench.json").read_text())["model_type"] == "preference"


# ----------------------------------------------------------------------------------------------------------------
# Data


def test_per_domain_files_take_their_domain_from_the_file_name_or_the_argument(tmp_path):
    paths = write_rmbench_domain_files(tmp_path / "data")
    assert sorted(p.name for p in paths) == [
        "chat_filtered.json",
        "code_filtered.json",
        "math_filtered.json",
        "safety-refuse_filtered.json",
        "safety-response_filtered.json",
    ]
    assert all("domain" not in r for r in json.loads(paths[0].read_text()))
    rows = load_rmbench(paths)
    assert Counter(r["domain"] for r in rows) == Counter(r["domain"] for r in rmbench_rows())
    assert domain_from_file_name("total_dataset.json") is None

    renamed = tmp_path / "my_rows.json"
    renamed.write_text(paths[0].read_text())
    assert {r["domain"] for r in load_rmbench(renamed, domain="chat")} == {"chat"}
    with pytest.raises(CromeDataError, match="field 'domain': is missing") as error:
        load_rmbench(renamed)
    assert error.value.row == 0


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_total_dataset_files_load_the_same_rows(tmp_path, suffix):
    assert load_rmbench(write_rmbench(tmp_path / f"total_dataset{suffix}")) == rmbench_rows()


def test_hub_source_loads_thu_keg_rm_bench(monkeypatch):
    """The Hub cannot be reached here: `datasets.load_dataset` is replaced to check what would be downloaded."""
    import datasets

    calls = []

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split))
        return datasets.Dataset.from_list(rmbench_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_rmbench() == rmbench_rows() and load_rmbench("hub") == rmbench_rows()
    assert calls == [("THU-KEG/RM-Bench", "train")] * 2


@pytest.mark.parametrize(
    ("index", "change", "field", "message"),
    [
        (2, lambda r: r.pop("rejected"), "rejected", "is missing"),
        (1, lambda r: r.update(id=None), "id", "is missing"),
        (3, lambda r: r.update(prompt=["hi"]), "prompt", "must be a string"),
        (4, lambda r: r.update(chosen=r["chosen"][:2]), "chosen", "list of 3 strings .* got a list of 2"),
        (5, lambda r: r.update(rejected="I can't help with that."), "rejected", "got a str"),
        (0, lambda r: r.update(chosen=["a", "b", None]), "chosen", "NoneType"),
        (5, lambda r: r.update(domain="safety-other"), "domain", "unknown domain 'safety-other'"),
    ],
)
def test_bad_rows_raise_naming_row_and_field_before_scoring(index, change, field, message):
    rows = rmbench_rows()
    change(rows[index])
    with pytest.raises(CromeDataError, match=message) as error:
        evaluate_rmbench(RewardScorer(must_not_score), rows)
    assert (error.value.row, error.value.field) == (index, field)


def test_subsample_per_domain_counts_safety_as_one_domain():
    rows = rmbench_rows()
    sample = subsample_rmbench(rows, per_domain=1, seed=0)
    assert len(sample) == 4 and {r["domain"].split("-")[0] for r in sample} == {"chat", "math", "code", "safety"}
    assert sample == subsample_rmbench(rows, per_domain=1, seed=0)


def test_reports_json_markdown_heatmaps_and_bars(tmp_path):
    rows, scores = numbered_rows(SPEC[:2] + SPEC[4:])  # chat and safety only: a partial run
    result = evaluate_rmbench(RewardScorer(lambda p, a: [scores[x] for x in a]), rows, output_dir=tmp_path)
    saved = json.loads((tmp_path / "rmbench.json").read_text())
    assert saved["missing_domains"] == ["math", "code"] and saved["hard_easy_gap"] == pytest.approx(
        result.hard_easy_gap
    )
    assert saved["matrices"]["chat"] == [[0.5, 1.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.5, 0.5]]
    markdown = (tmp_path / "rmbench.md").read_text()
    assert "| chat | 2 | 66.67 | 66.67 | 16.67 | 50.00 |" in markdown
    assert "| concise | 50.00 | 100.00 | 50.00 |" in markdown and "Partial run" in markdown
    assert len((tmp_path / "rmbench_rows.jsonl").read_text().splitlines()) == 4
    for name in ("rmbench_matrices.png", "rmbench_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
