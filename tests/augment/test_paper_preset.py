"""The paper preset end to end with a scripted oracle (no LLM can run in unit tests) behind the real `CachedOracle`:
the calls of each step, attributes ordered and cut by importance, malformed scores and verdicts per row, Fail verdicts
dropping exactly their rewrites, the neutral types, chunking, presets versus explicit fields, and the estimate."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from datasets import Dataset

from tests.augment.scripted import SCORED_ORDER, ScriptedOracle, rewrite_marker, step_of
from tests.augment.test_augmenter import CHOSEN, PROMPTS, REJECTED
from trl_crome import CromeAugmenter, CromeAugmenterConfig
from trl_crome.augment.attributes import parse_attributes, parse_elements
from trl_crome.augment.counterfactuals import CounterfactualValidator
from trl_crome.augment.estimate import approx_tokens
from trl_crome.augment.rubrics import DEFAULT_FALLBACK_ATTRIBUTES, fallback_attributes
from trl_crome.augment.verification import parse_verdict
from trl_crome.oracles.base import OracleResponse


def _data():
    return Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})


def _config(tmp_path, **overrides):
    return CromeAugmenterConfig(output_dir=str(tmp_path), show_progress=False, **overrides)


def _steps(requests):
    return Counter(step_of(request.prompt) for request in requests)


def test_paper_pipeline_makes_26_calls_per_pair_and_writes_10_verified_causal_pairs(tmp_path):
    oracle = ScriptedOracle()
    augmenter = CromeAugmenter(oracle, _config(tmp_path))
    rows = augmenter(_data()).to_list()

    # Per example (rows 0 and 2 share a prompt but not their answers): 1 + 5 + 10 + 10.
    assert _steps(oracle.requests) == {"attributes": 4, "causal_elements": 20, "rewrites": 40, "verification": 40}
    assert augmenter.summary.steps["rewrites"]["calls"] == 40 and augmenter.summary.calls == 4 * 26
    attributes_prompt = next(r.prompt for r in oracle.requests if step_of(r.prompt) == "attributes")
    assert CHOSEN[0] in attributes_prompt and REJECTED[0] in attributes_prompt  # the question and both answers

    for source in range(4):
        group = [r for r in rows if r["source_row"] == source]
        assert [r["kind"] for r in group] == ["original"] + ["causal"] * 10 + ["neutral"]
        causal = group[1:11]
        # Every attribute, most important first, cut at five; per attribute degrade then upgrade.
        assert [(r["attribute"], r["direction"]) for r in causal] == [
            (name, direction) for name in SCORED_ORDER for direction in ("degrade", "upgrade")
        ]
        for pair in causal:
            marker = rewrite_marker(pair["attribute"], pair["direction"])
            expected = (
                (CHOSEN[source], CHOSEN[source] + marker)
                if pair["direction"] == "degrade"
                else (REJECTED[source] + marker, REJECTED[source])
            )
            assert (pair["chosen"], pair["rejected"]) == expected and not pair["tie"]
        neutral = group[-1]  # about 1x: one IQN per row, from one of the row's pairs, under another prompt
        assert neutral["tie"] and neutral["neutral_type"] == "iqn" and neutral["prompt"] != PROMPTS[source]
        assert (neutral["chosen"], neutral["rejected"]) in [(p["chosen"], p["rejected"]) for p in group[:11]]

    rewrite = next(r.prompt for r in oracle.requests if "Attribute to make worse: relevance" in r.prompt)
    assert "- [increases] element 0 of relevance" in rewrite and '"analysis"' in rewrite  # elements, analysis first
    verify = next(r.prompt for r in oracle.requests if step_of(r.prompt) == "verification")
    assert "- [increases] element" in verify and "<rewrite>" in verify
    assert augmenter.summary.verification == {"passed": 40, "failed": {}, "unverified": {}}
    assert augmenter.summary.neutrals == {"iqn": 4}


def test_fail_and_unusable_verdicts_drop_exactly_those_rewrites(tmp_path):
    def verdicts(prompt):
        if step_of(prompt) != "verification":
            return None
        rewrite = prompt.split("<rewrite>")[1]
        if rewrite_marker("relevance", "upgrade") in rewrite:
            return {"analysis": "It also changed the tone.", "verdict": "Fail"}
        if rewrite_marker("clarity", "degrade") in rewrite and "egg" in rewrite:
            return {"analysis": "Unsure.", "verdict": "Maybe"}
        if rewrite_marker("safety", "degrade") in rewrite and "Paris" in rewrite:
            return {"analysis": "No verdict field."}
        return None

    oracle = ScriptedOracle(answer=verdicts)
    augmenter = CromeAugmenter(oracle, _config(tmp_path, neutral_augmentation=False))
    rows = augmenter(_data()).to_list()
    kept = {(r["source_row"], r["attribute"], r["direction"]) for r in rows if r["kind"] == "causal"}
    dropped = {(s, "relevance", "upgrade") for s in range(4)} | {(0, "clarity", "degrade"), (2, "clarity", "degrade")}
    dropped |= {(1, "safety", "degrade")}
    everything = {(s, a, d) for s in range(4) for a in SCORED_ORDER for d in ("degrade", "upgrade")}
    assert kept == everything - dropped
    assert augmenter.summary.verification == {
        "passed": 40 - 7,
        "failed": {"upgrade": {"relevance": 4}},
        "unverified": {"invalid_verdict": 2, "malformed": 1},
    }
    assert _steps(oracle.requests)["verification"] == 40  # every rewrite was verified


def test_malformed_scores_are_handled_per_row(tmp_path):
    def scores(prompt):
        if step_of(prompt) != "attributes":
            return None
        listed = ["accuracy", "relevance", "clarity", "tone", "completeness"]
        if "Boil water" in prompt:  # row 0: positive scores that sum to 2 -> rescaled, order by score
            values = [0.2, 0.8, 0.4, 0.2, 0.4]
        elif "Paris" in prompt:  # row 1: a negative score -> unusable, fallback attributes
            values = [0.5, 0.5, -0.2, 0.1, 0.1]
        elif "Put the egg" in prompt:  # row 2: all zero -> unusable
            values = [0.0] * 5
        else:  # row 3: a score missing -> not the schema
            return {"attributes": [{"name": "accuracy", "description": "d"}]}
        return {"attributes": [{"name": n, "description": f"{n}.", "importance": v} for n, v in zip(listed, values)]}

    augmenter = CromeAugmenter(ScriptedOracle(answer=scores), _config(tmp_path, neutral_augmentation=False))
    rows = augmenter(_data()).to_list()

    def attributes(source):
        return [r["attribute"] for r in rows if r["source_row"] == source and r["direction"] == "degrade"]

    assert attributes(0) == ["relevance", "clarity", "completeness", "accuracy", "tone"]  # ties keep oracle order
    for source in (1, 2, 3):
        assert attributes(source) == [
            a.name for a in fallback_attributes(PROMPTS[source], DEFAULT_FALLBACK_ATTRIBUTES, 5, 42)
        ]
    assert augmenter.summary.rubric_fallbacks == {"invalid_scores": 2, "malformed": 1}
    assert augmenter.summary.rescaled_scores == 1


def test_attribute_and_element_parsing_rules():
    def answer(*items):
        return OracleResponse(
            parsed={"attributes": [dict(zip(("name", "description", "importance"), i)) for i in items]}
        )

    found, reason, rescaled = parse_attributes(
        answer(("A b", "x", 0.1), ("c", "y", 0.6), ("a_b", "dup", 0.2), ("", "z", 0.1), ("d", "w", 0.2)), 2
    )
    assert ([a.name for a in found], reason, rescaled) == (["c", "d"], None, True)  # dup and nameless dropped
    assert parse_attributes(answer(("a", "x", math.inf)), 5)[1] == "invalid_scores"
    assert parse_attributes(OracleResponse(error="safety"), 5)[1] == "safety"
    assert parse_attributes(OracleResponse(parsed={"attributes": []}), 5)[1] == "empty"

    elements = OracleResponse(
        parsed={"elements": [{"element": " e1 ", "direction": "Increase"}, {"element": "e2", "direction": "up"}]}
    )
    assert [(e.element, e.direction) for e in parse_elements(elements, 5)[0]] == [("e1", "increases")]
    assert parse_elements(OracleResponse(parsed={"elements": [{"element": "e", "direction": "?"}]}), 5) == (
        (),
        "empty",
    )
    assert parse_verdict(OracleResponse(parsed={"analysis": "a", "verdict": " pass. "})) == ("pass", None)
    assert parse_verdict(OracleResponse(error="truncated")) == (None, "truncated")


def test_causal_element_failures_leave_the_rewrites_without_elements(tmp_path):
    oracle = ScriptedOracle(failures={"Attribute: relevance\n": "safety"})
    augmenter = CromeAugmenter(oracle, _config(tmp_path, neutral_augmentation=False))
    augmenter(_data())
    assert augmenter.summary.element_failures == {"safety": 4}
    rewrite = next(r.prompt for r in oracle.requests if "Attribute to improve: relevance" in r.prompt)
    assert "(none identified" in rewrite


def test_sanity_checks_keep_long_rewrites_but_reject_runaways():
    source = "Boil the egg for nine minutes."
    validator = CounterfactualValidator(check_length=False, check_format=False)
    assert validator(source, source + " Then cool it, peel it, and salt it to taste." * 3) is None  # 5x: kept
    assert validator(source, "word " * 500) == "runaway_length"  # 2,500 characters > 10 x 200
    assert validator(source, "  ") == "empty" and validator(source, source + " ") == "identical"
    lite = CounterfactualValidator()
    assert lite(source, source + " Then cool it, peel it, and salt it to taste." * 3) == "too_long"


def test_neutral_types_are_recorded_and_counted(tmp_path):
    oracle = ScriptedOracle()
    config = _config(tmp_path, neutral_types=["iqn", "aligned", "paraphrase"], causal_augmentation=False)
    augmenter = CromeAugmenter(oracle, config)
    rows = augmenter(_data()).to_list()
    assert _steps(oracle.requests) == {"attributes": 4, "aligned_neutrals": 4, "paraphrase_neutrals": 4}
    for source in range(4):
        group = [r for r in rows if r["source_row"] == source]
        assert [(r["kind"], r["neutral_type"]) for r in group] == [
            ("original", None), ("neutral", "iqn"), ("neutral", "aligned"), ("neutral", "paraphrase")
        ]  # fmt: skip
        aligned, paraphrase = group[2], group[3]
        assert (aligned["chosen"], aligned["rejected"]) == (CHOSEN[source], REJECTED[source] + " [aligned]")
        assert (paraphrase["chosen"], paraphrase["rejected"]) == (CHOSEN[source], CHOSEN[source] + " [paraphrased]")
        assert aligned["tie"] and paraphrase["tie"] and aligned["prompt"] == PROMPTS[source]
    aligned_prompt = next(r.prompt for r in oracle.requests if step_of(r.prompt) == "aligned_neutrals")
    assert "- factual_accuracy: States only true facts." in aligned_prompt  # compared attribute by attribute
    assert augmenter.summary.neutrals == {"iqn": 4, "aligned": 4, "paraphrase": 4}
    estimate = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "fresh", neutral_types=["aligned"])).estimate(
        _data()
    )
    assert estimate.calls_per_row()["aligned_neutrals"] == 1.0


@pytest.mark.parametrize("preset", ["paper", "lite"])
def test_chunks_do_not_change_the_output(tmp_path, preset):
    whole = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "a", preset=preset))(_data()).to_list()
    oracle = ScriptedOracle()
    chunked = CromeAugmenter(oracle, _config(tmp_path / "b", preset=preset, chunk_size=1))(_data())
    assert chunked.to_list() == whole
    if preset == "lite":  # a prompt's rubric is asked once, also when its rows fall in different chunks
        assert _steps(oracle.requests)["rubrics"] == 3


def test_presets_fill_only_fields_left_unset():
    paper, lite = CromeAugmenterConfig(), CromeAugmenterConfig(preset="lite")
    assert (paper.preset, paper.max_attributes, paper.causal_elements, paper.verify_rewrites) == (
        "paper",
        5,
        True,
        True,
    )
    assert (paper.check_length, paper.check_format, paper.neutrals_per_row, paper.neutrals_per_original) == (
        False, False, 1.0, 0
    )  # fmt: skip
    assert (lite.max_attributes, lite.attributes_per_example, lite.verify_rewrites, lite.check_length) == (
        2, 2, False, True
    )  # fmt: skip
    assert (lite.neutrals_per_original, lite.neutrals_per_causal, lite.rewrite_max_output_tokens) == (1, 1, 2048)
    mixed = CromeAugmenterConfig(max_attributes=3, attributes_per_example=3, check_length=True, verify_rewrites=False)
    assert (mixed.max_attributes, mixed.check_length, mixed.verify_rewrites, mixed.causal_elements) == (
        3,
        True,
        False,
        True,
    )
    assert CromeAugmenterConfig(preset="lite", neutrals_per_row=0.5, check_format=False).check_format is False
    with pytest.raises(ValueError, match="causal_elements needs the paper preset"):
        CromeAugmenterConfig(preset="lite", causal_elements=True)
    with pytest.raises(ValueError, match="preset must be one of"):
        CromeAugmenterConfig(preset="fast")
    with pytest.raises(ValueError, match="neutral_types"):
        CromeAugmenterConfig(neutral_types=["sideways"])


def test_recipe_flags_and_yaml_override_the_preset(tmp_path):
    import dataclasses

    from trl import TrlParser

    from trl_crome.recipe import augment_arguments_class

    parser = TrlParser(augment_arguments_class())

    def config(args):
        (parsed,) = parser.parse_args_and_config(args)
        return CromeAugmenterConfig(**dataclasses.asdict(parsed))

    assert config([]).max_attributes == 5
    lite = config(
        ["--preset", "lite", "--max_attributes", "1", "--attributes_per_example", "1", "--check_format", "false"]
    )
    assert (lite.preset, lite.max_attributes, lite.check_format, lite.check_length) == ("lite", 1, False, True)
    yaml = tmp_path / "recipe.yaml"
    yaml.write_text("preset: paper\nverify_rewrites: false\nneutrals_per_row: 0.5\n")
    from_yaml = config(["--config", str(yaml)])
    assert (from_yaml.verify_rewrites, from_yaml.neutrals_per_row, from_yaml.causal_elements) == (False, 0.5, True)


def test_estimate_plans_the_calls_of_a_run_and_counts_what_is_cached(tmp_path):
    data = _data()
    oracle = ScriptedOracle()
    estimate = CromeAugmenter(oracle, _config(tmp_path)).estimate(data)
    assert oracle.requests == []  # nothing was sent
    planned = {step.step: step.calls for step in estimate.steps}
    assert planned == {"attributes": 4, "causal_elements": 20, "rewrites": 40, "verification": 40}
    assert estimate.calls_per_row() == {"attributes": 1, "causal_elements": 5, "rewrites": 10, "verification": 10}

    CromeAugmenter(oracle, _config(tmp_path))(data)
    assert dict(_steps(oracle.requests)) == planned  # the real run made exactly the planned calls
    # Attribute prompts depend on nothing: their input tokens are counted on exactly the prompts the run sent.
    attributes = next(step for step in estimate.steps if step.step == "attributes")
    sent = [r.prompt for r in oracle.requests if step_of(r.prompt) == "attributes"]
    assert attributes.input_tokens == sum(approx_tokens(prompt) for prompt in sent)

    # After a run on the first two rows, an estimate of all four counts their calls as already paid.
    fresh = tmp_path / "partial"
    CromeAugmenter(ScriptedOracle(), _config(fresh, max_rows=2))(data)
    again = CromeAugmenter(ScriptedOracle(), _config(fresh)).estimate(data)
    assert {s.step: (s.calls, s.cached_calls) for s in again.steps} == {
        "attributes": (2, 2), "causal_elements": (10, 10), "rewrites": (20, 20), "verification": (20, 20)
    }  # fmt: skip
    assert again.cost("standard") == pytest.approx(estimate.cost("standard") / 2, rel=0.2)

    sampled = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "s")).estimate(data, sample_rows=2)
    assert (sampled.rows, sampled.total_rows, sampled.scale) == (2, 4, 2.0)
    assert json.loads(json.dumps(sampled.to_dict()))["calls_per_row"]["rewrites"] == 10


def test_max_cost_stops_between_calls_and_a_rerun_completes_without_paying_twice(tmp_path):
    reference_oracle = ScriptedOracle()
    reference = CromeAugmenter(reference_oracle, _config(tmp_path / "ref", chunk_size=1))(_data()).to_list()
    costs = [(len(r.prompt.split()) * 1.0 + 10 * 2.0) / 1e6 for r in reference_oracle.requests]
    cap = sum(costs) * 0.4

    oracle = ScriptedOracle()
    capped = CromeAugmenter(oracle, _config(tmp_path / "run", chunk_size=1, max_cost=cap))
    rows = capped(_data()).to_list()
    summary = capped.summary
    assert summary.stopped is not None and summary.stopped["reason"] == "max_cost"
    assert summary.cost_usd >= cap  # it did reach the cap ...
    # ... and only the calls already in flight finished after it: at most max_concurrency - 1 of them.
    assert summary.cost_usd - cap < (oracle.max_concurrency) * max(costs)
    done = summary.rows_done
    assert 0 < done < 4 and summary.stopped["next_row"] == done
    assert rows == [r for r in reference if r["source_row"] < done]  # the finished rows, exactly

    again = ScriptedOracle()
    resumed = CromeAugmenter(again, _config(tmp_path / "run", chunk_size=1, max_cost=cap))
    assert resumed(_data()).to_list() == rows and again.requests == []  # same cap: same place, nothing paid
    rest = CromeAugmenter(again, _config(tmp_path / "run", chunk_size=1, max_cost=cap * 10))
    assert rest(_data()).to_list() == reference and rest.summary.stopped is None
    assert len(oracle.requests) + len(again.requests) == len(reference_oracle.requests)  # nothing paid twice
