"""The pipeline with a real local oracle: SmolLM2-135M-Instruct through `TransformersOracle`, on two real
UltraFeedback rows. A 135M model writes poor rubrics and rewrites; this checks structure and bookkeeping, not
quality: every request is answered or rejected with a reason, and the output has the right shape."""

import json

import pytest
from datasets import Dataset

from tests.helpers import shared_data
from trl_crome import CromeAugmenter, CromeAugmenterConfig


def _short_ultrafeedback_rows(count):
    rows = [json.loads(line) for line in shared_data("ultrafeedback/test.jsonl").read_text().splitlines()]
    rows = [r for r in rows if min(len(r["chosen"]), len(r["rejected"])) >= 60]  # something to rewrite
    rows.sort(key=lambda r: len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"]))  # fast on CPU
    return [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows[:count]]


@pytest.mark.slow
def test_smollm2_oracle_through_the_pipeline(tmp_path):
    from trl_crome.oracles.local import TransformersOracle

    rows = _short_ultrafeedback_rows(2)
    oracle = TransformersOracle(max_new_tokens=96)
    config = CromeAugmenterConfig(  # the lite preset: a 135M model on CPU, as the quickstart runs it
        output_dir=str(tmp_path), preset="lite", attributes_per_example=1, directions=["degrade"], show_progress=False
    )
    augmenter = CromeAugmenter(oracle, config)
    output = augmenter(Dataset.from_list(rows))

    summary = augmenter.summary
    rewrites = 2 * 1 * 1  # rows x attributes x directions
    assert summary.calls == 2 + rewrites and summary.cache_hits == 0
    assert summary.pairs["causal"] + sum(summary.rejects.values()) == rewrites
    assert sum(summary.rubric_fallbacks.values()) <= 2
    assert summary.pairs["original"] == 2
    assert summary.pairs["neutral"] == summary.pairs["original"] + summary.pairs["causal"]
    assert summary.input_tokens > 0 and summary.output_tokens > 0 and summary.cost_usd == 0

    records = output.to_list()
    assert [r for r in records if r["kind"] == "original"] == [
        {**row, "tie": False, "kind": "original", "source_row": i, "attribute": None, "direction": None,
         "neutral_of": None, "neutral_type": None}
        for i, row in enumerate(rows)
    ]  # fmt: skip
    for record in records:
        if record["kind"] == "causal":
            source = rows[record["source_row"]]
            kept = source["chosen"] if record["direction"] == "degrade" else source["rejected"]
            assert kept in (record["chosen"], record["rejected"])
            assert record["chosen"] != record["rejected"]
            assert record["attribute"]
        if record["kind"] == "neutral":
            assert record["tie"] and record["prompt"] != rows[record["source_row"]]["prompt"]

    # Rerun: everything from the cache, the same output.
    again = CromeAugmenter(TransformersOracle(oracle.lm, oracle.tokenizer, model_name=oracle.model), config)
    assert again(Dataset.from_list(rows)).to_list() == records
    assert again.summary.calls == 0 and again.summary.cache_hits == 2 + rewrites

    print(summary.to_table())
    for record in records:
        print(json.dumps(record, ensure_ascii=False))
