"""The evidence command end to end on the controlled task, with a tiny random Llama (the real SmolLM2 tokenizer) in
place of SmolLM2 so that it runs in seconds; the numbers are not the point, the wiring is."""

from __future__ import annotations

import json

from recipes.experiments.evidence import RUNS, TRANSFORMS, main
from tests.helpers import shared_data, smollm2_tokenizer, tiny_reward_model


def test_closing_part_writes_every_run_seed_and_diagnostic(tmp_path):
    shared_data("ultrafeedback/train.jsonl")
    tokenizer = smollm2_tokenizer()
    model_dir, out, plot = tmp_path / "tiny", tmp_path / "out", tmp_path / "closing.png"
    tiny_reward_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    argv = ["--parts", "closing", "--model-path", str(model_dir), "--output-dir", str(out), "--plot", str(plot)]
    argv += ["--train-pairs", "16", "--test-pairs", "12", "--transform-pairs", "12", "--seeds", "0", "1"]
    assert main([*argv, "--steps", "5"]) == 0

    report = json.loads((out / "results.json").read_text())["closing"]
    assert report["data"]["opener_rate"] == {"train": 14 / 16, "in-distribution": 11 / 12, "reversed": 1 / 12}
    results = report["results"]
    assert list(results) == [label for label, _, _ in RUNS]
    evaluations = {"in-distribution", "reversed", "no opener", "opener preferred", *TRANSFORMS}
    for per_seed in results.values():
        assert len(per_seed) == 2 and all(set(seed) == evaluations for seed in per_seed)
        assert all(0.0 <= value <= 1.0 for seed in per_seed for value in seed.values())
    table = (out / "table.md").read_text()
    assert all(f"| {label} |" in table for label, _, _ in RUNS) and "| add_quotes |" in table
    assert plot.stat().st_size > 0
