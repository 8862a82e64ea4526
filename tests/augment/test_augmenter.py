"""The whole pipeline on small real datasets, with a scripted oracle (no LLM can run in unit tests) behind the real
`CachedOracle`."""

import pytest
from datasets import Dataset

from tests.augment.scripted import ScriptedOracle, rewrite_marker
from trl_crome import CromeAugmenter, CromeAugmenterConfig
from trl_crome.augment.rubrics import DEFAULT_FALLBACK_ATTRIBUTES, fallback_attributes
from trl_crome.data import CromeDataError

PROMPTS = ["How do I boil an egg?", "What is the capital of France?", "How do I boil an egg?", "Name a prime number."]
CHOSEN = [
    "Boil water, add the egg, wait nine minutes, then cool it in cold water.",
    "The capital of France is Paris, which lies on the Seine.",
    "Put the egg in boiling water for about nine minutes and then cool it.",
    "Seven is a prime number: its only divisors are one and itself.",
]
REJECTED = [
    "Fry the egg in a pan with a little oil until it looks done.",
    "The capital of France is Lyon, a large city in the south.",
    "Microwave the egg in its shell for five minutes on full power.",
    "Nine is a prime number because it is odd and not too large.",
]
ATTRIBUTES = ["factual_accuracy", "relevance"]  # the scripted rubric's first two, normalized


def _config(tmp_path, **overrides):
    """The lite preset: these tests pin its behaviour, unchanged since it was the only pipeline."""
    return CromeAugmenterConfig(output_dir=str(tmp_path), show_progress=False, **{"preset": "lite", **overrides})


def _text_dataset(**extra):
    return Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED, **extra})


def test_plain_text_pipeline_output_order_labels_and_provenance(tmp_path):
    oracle = ScriptedOracle()
    augmenter = CromeAugmenter(oracle, _config(tmp_path))
    output = augmenter(_text_dataset(score=[1, 2, 3, 4]))

    assert output.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "tie",
        "kind",
        "source_row",
        "attribute",
        "direction",
        "neutral_of",
        "neutral_type",
    ]
    templates = [r.template for r in oracle.requests]
    assert templates.count("rubrics@1") == 3  # one per unique prompt, not per row
    assert templates.count("degrade@1") == templates.count("upgrade@1") == 8

    rows = output.to_list()
    assert len(rows) == 4 * (1 + 4 + 5)
    for source in range(4):
        group = rows[source * 10 : (source + 1) * 10]
        assert [r["source_row"] for r in group] == [source] * 10
        assert [r["kind"] for r in group] == ["original"] + ["causal"] * 4 + ["neutral"] * 5
        original, causal, neutral = group[0], group[1:5], group[5:]
        assert original == {
            "prompt": PROMPTS[source],
            "chosen": CHOSEN[source],
            "rejected": REJECTED[source],
            "tie": False,
            "kind": "original",
            "source_row": source,
            "attribute": None,
            "direction": None,
            "neutral_of": None,
            "neutral_type": None,
        }
        expected_causal = []
        for attribute in ATTRIBUTES:
            worse = CHOSEN[source] + rewrite_marker(attribute, "degrade")
            better = REJECTED[source] + rewrite_marker(attribute, "upgrade")
            expected_causal += [
                (PROMPTS[source], CHOSEN[source], worse, attribute, "degrade"),
                (PROMPTS[source], better, REJECTED[source], attribute, "upgrade"),
            ]
        assert [(r["prompt"], r["chosen"], r["rejected"], r["attribute"], r["direction"]) for r in causal] == (
            expected_causal
        )
        assert not any(r["tie"] for r in causal)
        assert [r["neutral_of"] for r in neutral] == ["original"] + ["causal"] * 4
        for tie, source_pair in zip(neutral, [original, *causal]):
            assert tie["tie"] is True and tie["neutral_type"] == "iqn"
            assert tie["prompt"] != PROMPTS[source] and tie["prompt"] in PROMPTS
            assert (tie["chosen"], tie["rejected"]) == (source_pair["chosen"], source_pair["rejected"])
            assert (tie["attribute"], tie["direction"]) == (source_pair["attribute"], source_pair["direction"])

    summary = augmenter.summary
    assert summary.input_rows == 4
    assert summary.pairs == {"original": 4, "causal": 16, "neutral": 20}
    assert summary.rejects == {} and summary.rubric_fallbacks == {} and summary.neutrals_missing == 0
    assert summary.calls == 19 and summary.cache_hits == 0
    assert summary.input_tokens == sum(len(r.prompt.split()) for r in oracle.requests)
    assert summary.output_tokens == 190
    assert summary.cost_usd == pytest.approx((summary.input_tokens * 1.0 + 190 * 2.0) / 1e6)
    assert "pairs: causal" in summary.to_table() and "oracle calls" in summary.to_table()


def test_a_second_run_pays_nothing_and_returns_the_same_data(tmp_path):
    first = CromeAugmenter(ScriptedOracle(), _config(tmp_path))(_text_dataset())
    oracle = ScriptedOracle()
    augmenter = CromeAugmenter(oracle, _config(tmp_path))
    second = augmenter(_text_dataset())
    assert oracle.requests == []
    assert augmenter.summary.calls == 0 and augmenter.summary.cache_hits == 19
    assert augmenter.summary.cached_cost_usd > 0 and augmenter.summary.cost_usd == 0
    assert second.to_list() == first.to_list()
    assert (tmp_path / "oracle_cache").is_dir()


def test_failed_calls_and_bad_rewrites_are_skipped_and_counted(tmp_path):
    oracle = ScriptedOracle(
        failures={
            '<prompt>\nWhat is the capital of France?\n</prompt>\n\nAnswer with JSON: {"attributes"': "safety",
            "Attribute to improve: relevance": "truncated",
        },
        rewrites={"Seven is a prime": "Seven.", "Nine is a prime": ""},
    )
    augmenter = CromeAugmenter(oracle, _config(tmp_path, neutral_augmentation=False))
    output = augmenter(_text_dataset())

    summary = augmenter.summary
    assert summary.rubric_fallbacks == {"safety": 1}
    france = [r for r in output.to_list() if r["source_row"] == 1 and r["kind"] == "causal"]
    assert {r["attribute"] for r in france} <= set(DEFAULT_FALLBACK_ATTRIBUTES)
    # Every upgrade along "relevance" is truncated: rows 0, 2 and 3, and row 1 when its fallback includes it.
    assert summary.rejects["too_short"] == 2  # row 3's two degrades
    assert summary.rejects["empty"] == 1  # row 3's upgrade along factual_accuracy
    fallback = fallback_attributes(PROMPTS[1], DEFAULT_FALLBACK_ATTRIBUTES, count=2, seed=42)
    assert summary.rejects["truncated"] == 3 + ("relevance" in [a.name for a in fallback])
    assert summary.pairs["original"] == 4  # every row keeps its original pair
    assert summary.pairs["causal"] == 16 - sum(summary.rejects.values())
    assert [r["kind"] for r in output.to_list() if r["source_row"] == 3] == ["original"]


def test_fallback_attributes_when_rubrics_are_off(tmp_path):
    oracle = ScriptedOracle()
    config = _config(tmp_path, identify_rubrics=False, attributes_per_example=1, max_attributes=1, seed=0)
    output = CromeAugmenter(oracle, config)(_text_dataset())
    assert all(r.template != "rubrics@1" for r in oracle.requests)
    causal = [r for r in output.to_list() if r["kind"] == "causal"]
    assert len(causal) == 8 and {r["attribute"] for r in causal} <= set(DEFAULT_FALLBACK_ATTRIBUTES)
    # The two rows sharing a prompt share its fallback attribute.
    assert causal[0]["attribute"] == causal[4]["attribute"]


def test_conversational_input_keeps_its_format(tmp_path):
    user = [[{"role": "user", "content": p}] for p in PROMPTS]
    chosen = [[{"role": "assistant", "content": c}] for c in CHOSEN]
    rejected = [[{"role": "assistant", "content": r}] for r in REJECTED]
    dataset = Dataset.from_dict({"prompt": user, "chosen": chosen, "rejected": rejected})
    output = CromeAugmenter(ScriptedOracle(), _config(tmp_path, directions=["degrade"]))(dataset)

    assert output.features["prompt"] == dataset.features["prompt"]
    assert output.features["chosen"] == dataset.features["chosen"]
    rows = output.to_list()
    assert [r["kind"] for r in rows[:6]] == ["original", "causal", "causal", "neutral", "neutral", "neutral"]
    degraded = rows[1]
    assert degraded["prompt"] == user[0] and degraded["chosen"] == chosen[0]
    assert degraded["rejected"] == [
        {"role": "assistant", "content": CHOSEN[0] + rewrite_marker("factual_accuracy", "degrade")}
    ]
    for row in rows:
        if row["tie"]:
            assert row["prompt"] != user[row["source_row"]]


def test_implicit_prompt_is_extracted(tmp_path):
    chosen = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in zip(PROMPTS, CHOSEN)]
    rejected = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in zip(PROMPTS, REJECTED)
    ]
    config = _config(tmp_path, causal_augmentation=False)
    output = CromeAugmenter(ScriptedOracle(), config)(Dataset.from_dict({"chosen": chosen, "rejected": rejected}))
    first = output[0]
    assert first["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
    assert first["chosen"] == [{"role": "assistant", "content": CHOSEN[0]}]


def test_steps_can_be_turned_off_and_sized(tmp_path):
    oracle = ScriptedOracle()
    config = _config(
        tmp_path,
        directions=["upgrade"],
        attributes_per_example=1,
        neutrals_per_original=2,
        neutrals_per_causal=0,
        max_rows=2,
    )
    output = CromeAugmenter(oracle, config)(_text_dataset())
    assert [(r["kind"], r["direction"], r["neutral_of"]) for r in output.to_list()] == [
        ("original", None, None),
        ("causal", "upgrade", None),
        ("neutral", None, "original"),
        ("original", None, None),
        ("causal", "upgrade", None),
        ("neutral", None, "original"),
    ]  # two rows with two distinct prompts: only one other prompt each, the second neutral is missing
    assert CromeAugmenter(oracle, config).config.max_rows == 2

    oracle = ScriptedOracle()
    nothing = _config(tmp_path, causal_augmentation=False, neutral_augmentation=False)
    assert CromeAugmenter(oracle, nothing)(_text_dataset())["kind"] == ["original"] * 4
    assert oracle.requests == []


def test_filter_with_a_callable_baseline(tmp_path):
    def baseline(prompts, answers_a, answers_b):
        # Confident on degraded pairs (drop them), unsure on the rest (keep them).
        return [6.0 if "[degraded" in b else 0.0 for b in answers_b]

    augmenter = CromeAugmenter(ScriptedOracle(), _config(tmp_path), baseline=baseline)
    output = augmenter(_text_dataset())
    rows = output.to_list()
    # Preference pairs: degraded ones are confidently right (dropped), upgraded ones unsure (kept). Ties: a margin
    # of 0 is already a tie (dropped), a margin of 6 is confidently not one (kept).
    assert {r["direction"] for r in rows if r["kind"] == "causal"} == {"upgrade"}
    assert {r["direction"] for r in rows if r["kind"] == "neutral"} == {"degrade"}
    assert augmenter.summary.filtered_out == {"causal": 8, "neutral": 12}
    assert augmenter.summary.pairs == {"original": 4, "causal": 8, "neutral": 8}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"prompt": ["a", "b", "c"], "chosen": ["x", "y", "  "], "rejected": ["x", "y", "z"]},
            "row 2, field 'chosen'",
        ),
        ({"prompt": ["a"], "chosen": ["x"]}, "field 'rejected': missing column"),
        ({"prompt": ["a", ""], "chosen": ["x", "y"], "rejected": ["z", "w"]}, "row 1, field 'prompt'"),
        ({"chosen": ["same start x"], "rejected": ["other y"]}, "row 0, field 'prompt'"),
    ],
)
def test_bad_input_names_the_row_and_the_field(tmp_path, data, message):
    with pytest.raises(CromeDataError, match=message):
        CromeAugmenter(ScriptedOracle(), _config(tmp_path))(Dataset.from_dict(data))


def test_config_rejects_impossible_settings():
    with pytest.raises(ValueError, match="directions"):
        CromeAugmenterConfig(directions=["sideways"])
    with pytest.raises(ValueError, match="attributes_per_example"):
        CromeAugmenterConfig(attributes_per_example=3, max_attributes=2)
    with pytest.raises(ValueError, match="min_length_ratio"):
        CromeAugmenterConfig(min_length_ratio=1.5)
    with pytest.raises(ValueError, match="filter_tau"):
        CromeAugmenterConfig(filter_tau=2)
