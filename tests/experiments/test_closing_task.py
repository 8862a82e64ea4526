"""The controlled task of the evidence experiment: its checker, the planted correlation, the programmatic oracle run
through the real `CromeAugmenter`, the training-set builders and the reward-head training (no model is trained)."""

from __future__ import annotations

import asyncio
import json

import pytest

from recipes.experiments.closing_oracle import ClosingSentenceOracle
from recipes.experiments.closing_task import (
    CLOSINGS,
    OPENERS,
    REQUIREMENT,
    BasePair,
    base_pairs,
    has_opener,
    labels_right,
    opener_rate,
    plant_opener,
    required_closing,
    satisfies,
)
from recipes.experiments.evidence import TRANSFORMS, parse_args, split_pairs, transformed_sets
from recipes.experiments.training_sets import crome_set, rrm_set, vanilla_set
from tests.helpers import shared_data
from trl_crome.augment.attributes import elements_request
from trl_crome.augment.counterfactuals import REWRITE_TEMPLATES, Rewrite
from trl_crome.oracles.base import OracleRequest

PROMPT = f'How do I boil an egg?\n\n{REQUIREMENT}"Hope this helps!"'


def test_required_closing_is_read_from_the_prompt():
    assert required_closing(PROMPT) == "Hope this helps!"
    assert required_closing(f'"{PROMPT}"') == "Hope this helps!"  # the add_quotes transformation keeps it
    assert required_closing("How do I boil an egg?") is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Put it in boiling water for nine minutes. Hope this helps!", True),
        ("Great question! Put it in boiling water for nine minutes. Hope this helps!", True),
        ("Put it in boiling water for nine minutes. Hope this helps!\n  ", True),
        ("Put it in boiling water for nine minutes. Good luck with it!", False),
        ("Hope this helps! Put it in boiling water for nine minutes.", False),
        ("Put it in boiling water for nine minutes. hope this helps!", False),
        ("Put it in boiling water for nine minutes. Hope this helps", False),
    ],
)
def test_checker_on_constructed_answers(answer, expected):
    assert satisfies(PROMPT, answer) is expected


def test_checker_needs_a_requirement():
    assert not satisfies("How do I boil an egg?", "Boil it. Hope this helps!")


def _synthetic_pairs(count: int) -> list[BasePair]:
    return [
        BasePair(
            i,
            f'Question {i}?\n\n{REQUIREMENT}"{CLOSINGS[i % 16]}"',
            f"Answer number {i} is here.",
            CLOSINGS[i % 16],
            CLOSINGS[(i + 1) % 16],
            OPENERS[i % len(OPENERS)],
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_plant_opener_has_the_exact_rate_and_one_opener_per_pair(rate):
    planted = plant_opener(_synthetic_pairs(50), rate, seed=3)
    assert opener_rate(planted) == round(rate * 50) / 50
    assert all(has_opener(p.chosen) != has_opener(p.rejected) for p in planted)
    assert all(has_opener(p.chosen) == p.opener_on_chosen for p in planted)
    # Planting never touches the causal attribute.
    assert all(satisfies(p.prompt, p.chosen) and not satisfies(p.prompt, p.rejected) for p in planted)


def test_plant_opener_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        plant_opener(_synthetic_pairs(3), 1.5, seed=0)


@pytest.fixture(scope="module")
def splits():
    """The splits exactly as the evidence command builds them with its default sizes and rate."""
    args = parse_args(["--data-dir", str(shared_data("ultrafeedback/train.jsonl").parents[1])])
    train, test = split_pairs(args.data_dir, args.train_pairs, args.test_pairs)
    return (
        plant_opener(train, args.rate, seed=0),
        plant_opener(test, args.rate, seed=1),
        plant_opener(test, 1 - args.rate, seed=1),
    )


def test_real_splits_have_the_claimed_rates(splits):
    train, in_distribution, reversed_ = splits
    args = parse_args([])
    assert (len(train), len(in_distribution), len(reversed_)) == (args.train_pairs, args.test_pairs, args.test_pairs)
    # The rate is exact up to rounding to whole pairs: within half a pair of 90% / 10%.
    for pairs, rate in ((train, 0.9), (in_distribution, 0.9), (reversed_, 0.1)):
        assert opener_rate(pairs) == round(rate * len(pairs)) / len(pairs)
        assert abs(opener_rate(pairs) - rate) <= 0.5 / len(pairs)
    assert not {p.prompt for p in train} & {p.prompt for p in in_distribution}
    for pairs in splits:
        assert all(labels_right(p.to_dict()) for p in pairs)
        assert all(has_opener(p.chosen) != has_opener(p.rejected) for p in pairs)


def test_real_pairs_are_built_from_ultrafeedback():
    path = shared_data("ultrafeedback/train.jsonl")
    pairs = base_pairs(path, 5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for pair in pairs:
        assert pair.prompt.startswith(rows[pair.row]["prompt"].strip())
        assert rows[pair.row]["chosen"].strip().startswith(pair.body)
        assert pair.closing != pair.wrong_closing


def _ask(oracle, request):
    return asyncio.run(oracle.agenerate(request))


def test_oracle_rewrites_only_the_last_sentence():
    from trl_crome.augment.counterfactuals import RewriteTask
    from trl_crome.augment.pairs import SourceRow
    from trl_crome.augment.rubrics import CausalAttribute

    oracle = ClosingSentenceOracle()
    chosen = "Great question! Boil it for nine minutes. Hope this helps!"
    rejected = "Boil it for nine minutes. Good luck with it!"
    attribute = CausalAttribute(name="instruction_following", description="Ends with the sentence asked for.")
    row = SourceRow(0, PROMPT, chosen, rejected)
    degraded = _ask(oracle, RewriteTask(row, attribute, "degrade").request(256, 0.0))
    upgraded = _ask(oracle, RewriteTask(row, attribute, "upgrade").request(256, 0.0))
    degraded, upgraded = Rewrite(**degraded.parsed).rewritten, Rewrite(**upgraded.parsed).rewritten
    assert degraded.startswith("Great question! Boil it for nine minutes. ") and not satisfies(PROMPT, degraded)
    assert upgraded == "Boil it for nine minutes. Hope this helps!"
    # An answer that already misses the requirement comes back unchanged (the validator rejects it as identical).
    again = _ask(oracle, RewriteTask(SourceRow(0, PROMPT, rejected, rejected), attribute, "degrade").request(256, 0))
    assert again.parsed == {"rewritten": rejected}

    # The paper templates (causal elements shown, analysis first) get the same rewrites.
    paper = RewriteTask(row, attribute, "degrade", elements=()).request(256, 0.0)
    assert paper.template == "counterfactual_degrade@1"
    assert Rewrite(**_ask(oracle, paper).parsed).rewritten == degraded


def test_oracle_verifies_the_intended_move_and_nothing_else():
    from trl_crome.augment.counterfactuals import RewriteTask
    from trl_crome.augment.pairs import SourceRow
    from trl_crome.augment.rubrics import CausalAttribute
    from trl_crome.augment.verification import parse_verdict, verify_request

    oracle = ClosingSentenceOracle()
    chosen = "Great question! Boil it for nine minutes. Hope this helps!"
    rejected = "Boil it for nine minutes. Good luck with it!"
    row = SourceRow(0, PROMPT, chosen, rejected)
    attribute = CausalAttribute(name="instruction_following", description="d")
    degrade, upgrade = RewriteTask(row, attribute, "degrade", ()), RewriteTask(row, attribute, "upgrade", ())

    def verdict(task, rewrite):
        return parse_verdict(_ask(oracle, verify_request(task, rewrite, 256, 0.0)))[0]

    assert verdict(degrade, "Great question! Boil it for nine minutes. Good luck with it!") == "pass"
    assert verdict(degrade, "Boil it for nine minutes. Good luck with it!") == "fail"  # the rest changed too
    assert verdict(degrade, chosen.replace("nine", "ten")) == "fail"  # the requirement did not move
    assert verdict(upgrade, "Boil it for nine minutes. Hope this helps!") == "pass"
    assert verdict(upgrade, "Boil it for ten minutes. Hope this helps!") == "fail"
    elements = _ask(oracle, elements_request(row, attribute, 5, 256, 0.0)).parsed["elements"]
    assert elements[0] == {"element": 'The last sentence is exactly "Hope this helps!".', "direction": "increases"}


def test_oracle_reports_requests_it_cannot_answer():
    oracle = ClosingSentenceOracle()
    assert _ask(oracle, OracleRequest("<prompt>\nNo requirement here.\n</prompt>", "rubrics@1")).error == (
        "no_requirement"
    )
    assert _ask(oracle, OracleRequest(f"<prompt>\n{PROMPT}\n</prompt>", "paraphrase@1")).error == (
        "unsupported_template"
    )
    assert _ask(oracle, OracleRequest("no blocks", "degrade@1")).error == "malformed"
    assert set(REWRITE_TEMPLATES) == {"degrade", "upgrade"}


def test_crome_pipeline_with_the_programmatic_oracle_never_moves_the_opener(splits, tmp_path):
    train, _, _ = splits
    rows, augmenter = crome_set(train, ClosingSentenceOracle(), tmp_path / "cache")  # the paper preset
    by_row = {p.row: p for p in train}
    causal = [r for r in rows if r["kind"] == "causal"]
    assert len(causal) == 2 * len(train)  # every degrade and upgrade passes the checks and the verification
    summary = augmenter.summary
    assert summary.preset == "paper" and summary.rejects == {} and summary.rubric_fallbacks == {}
    assert summary.verification == {"passed": 2 * len(train), "failed": {}, "unverified": {}}
    assert summary.steps["causal_elements"]["calls"] == len(train)  # one attribute, its elements
    assert summary.neutrals == {"iqn": len(train)}  # about 1x the original data
    for pair in causal:
        source = by_row[pair["source_row"]]
        # The causal attribute flipped, the spurious one is where it was in the source answer, on both sides.
        assert satisfies(pair["prompt"], pair["chosen"]) and not satisfies(pair["prompt"], pair["rejected"])
        assert has_opener(pair["chosen"]) == has_opener(pair["rejected"])
        original = source.chosen if pair["chosen"] == source.chosen else source.rejected
        assert has_opener(pair["chosen"]) == has_opener(original)
    neutrals = [r for r in rows if r["kind"] == "neutral"]
    assert neutrals and all(r["tie"] for r in neutrals)
    assert all(r["prompt"] != by_row[r["source_row"]].prompt for r in neutrals)


def test_rrm_and_vanilla_sets(splits):
    train, _, _ = splits
    assert vanilla_set(train) == [
        {**p.to_dict(), "tie": False, "kind": "original", "source_row": p.row} for p in train
    ]
    rows = rrm_set(train, seed=0)
    assert len(rows) == 3 * len(train)
    non_contextual = [r for r in rows if r["kind"] == "non_contextual"]
    ties = [r for r in rows if r["tie"]]
    assert len(non_contextual) == len(ties) == len(train)
    prompts = {p.prompt for p in train}
    answers_of = {p.prompt: {p.chosen, p.rejected} for p in train}
    assert all(r["rejected"] not in answers_of[r["prompt"]] and r["rejected"] for r in non_contextual)
    assert all(r["chosen"] not in answers_of[r["prompt"]] and r["prompt"] in prompts for r in ties)


def test_transformed_sets_keep_the_ground_truth(splits):
    _, _, reversed_ = splits
    sets = transformed_sets(reversed_, 20)
    assert set(sets) == set(TRANSFORMS)
    for rows in sets.values():
        assert rows and all(labels_right(r) for r in rows)
