"""Point 4 of the evidence experiment on real UltraFeedback and RewardBench rows: the clipping, the three training
sets, and one end-to-end run on a tiny random Llama with the real SmolLM2 tokenizer (`oracle_pairs=0`: the local
oracle is slow on CPU and is tested in tests/oracles; no oracle call is made here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.experiments.ultrafeedback_experiment import (
    SECTIONS,
    SETS,
    RealDataConfig,
    TextClipper,
    difference_table,
    load_pairs,
    local_oracle,
    run,
    training_sets,
)
from tests.helpers import shared_data, smollm2_tokenizer, tiny_reward_model


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The first 40 UltraFeedback pairs and all of RewardBench, in a temporary data folder."""
    root = tmp_path_factory.mktemp("data")
    for relative, lines in (("ultrafeedback/train.jsonl", 40), ("rewardbench/filtered.jsonl", None)):
        text = shared_data(relative).read_text().splitlines(keepends=True)
        (root / relative).parent.mkdir(parents=True)
        (root / relative).write_text("".join(text[:lines]))
    return root


def config(data: Path, output: Path, **overrides) -> RealDataConfig:
    return RealDataConfig(data_dir=data, output_dir=output, oracle_pairs=0, **overrides)


def test_pairs_are_clipped_and_degenerate_pairs_dropped(tmp_path):
    tokenizer = smollm2_tokenizer()
    clip = TextClipper(tokenizer)
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"prompt": "Say hi", "chosen": "Hi there!", "rejected": "Hi there!"}\n'
        '{"prompt": "Say hi", "chosen": "Hi!", "rejected": "  "}\n'
        + shared_data("ultrafeedback/train.jsonl").read_text().splitlines()[0]
    )
    pairs, dropped = load_pairs(path, clip, config(tmp_path, tmp_path, max_prompt_tokens=5, max_answer_tokens=7))
    assert dropped == 2 and len(pairs) == 1
    for field, limit in (("prompt", 5), ("chosen", 7), ("rejected", 7)):
        assert len(tokenizer(pairs[0][field], add_special_tokens=False).input_ids) <= limit + 1  # re-encoding
    assert clip("short", 5) == "short"


def test_rrm_and_crome_share_their_neutrals_and_rrm_adds_non_contextual_pairs(small_data, tmp_path):
    cfg = config(small_data, tmp_path)
    pairs, _ = load_pairs(small_data / "ultrafeedback/train.jsonl", TextClipper(smollm2_tokenizer()), cfg)
    sets, report = training_sets(pairs, cfg, local_oracle(cfg))
    assert set(sets) == set(SETS) and report["causal_pairs"] == 0
    originals = sets["vanilla"]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in originals] == [
        (p["prompt"], p["chosen"], p["rejected"]) for p in pairs
    ]
    answers_of = {p["prompt"]: {p["chosen"], p["rejected"]} for p in pairs}
    chosen_of = {p["prompt"]: p["chosen"] for p in pairs}
    rrm_ties = [r for r in sets["RRM-style"] if r["tie"]]
    crome_ties = [r for r in sets["Crome"] if r["tie"]]
    assert rrm_ties == crome_ties and len(rrm_ties) == len(pairs)
    for tie in rrm_ties:  # both answers were written for another prompt
        assert tie["chosen"] not in answers_of[tie["prompt"]] and tie["rejected"] not in answers_of[tie["prompt"]]
    non_contextual = [r for r in sets["RRM-style"] if r["kind"] == "non_contextual"]
    assert len(non_contextual) == len(pairs)
    for row, tie in zip(non_contextual, rrm_ties, strict=True):
        assert not row["tie"] and row["chosen"] == chosen_of[row["prompt"]]
        assert row["rejected"] in (tie["chosen"], tie["rejected"]) and row["prompt"] == tie["prompt"]


def test_run_trains_every_set_with_the_same_budget_and_scores_rewardbench(small_data, tmp_path):
    tokenizer = smollm2_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_reward_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    cfg = config(small_data, tmp_path / "out", rewardbench_per_subset=2, epochs=2, seeds=(0, 1), batch_size=8)
    report = run(cfg, model_dir)
    results = report["results"]
    assert set(results) == set(SETS)
    assert report["data"]["rewardbench_pairs"] == 2 * 23
    budget = -(-report["data"]["pairs"] // cfg.batch_size) * cfg.epochs  # epochs of the vanilla set's size
    assert report["data"]["steps_per_run"] == {name: budget for name in SETS}
    for per_seed in results.values():
        assert len(per_seed) == 2 and all(len(history) == 1 + cfg.epochs for history in per_seed)
        for evaluation in per_seed[0]:
            assert set(SECTIONS) <= set(evaluation) and evaluation["length_bias_gap"] is not None
            assert 0.0 <= evaluation["overall"] <= 1.0
    for seed in range(2):  # the untrained model (epoch 0) is the same for every set: only the data differs
        assert results["vanilla"][seed][0] == results["RRM-style"][seed][0] == results["Crome"][seed][0]
    assert results["vanilla"][0][-1] != results["vanilla"][0][0]  # training moved the scores
    crome_row = difference_table(results).splitlines()[-1].split(" | ")
    overall = [c[-1]["overall"] - v[-1]["overall"] for c, v in zip(results["Crome"], results["vanilla"], strict=True)]
    assert crome_row[0] == "| Crome" and crome_row[5].startswith(f"{100 * sum(overall) / 2:.1f} ± ")
    # A second run reuses the cached layers: nothing is recomputed and the results are identical.
    again = run(cfg, model_dir)
    assert again["results"] == results
