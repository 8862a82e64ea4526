"""Robustness transformations on real RewardBench / GSM8K samples, oracle rewrites, and evaluate_robustness."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict

import pytest

from tests.helpers import shared_data
from trl_crome.evaluation import TRANSFORMS, RewardScorer, apply_transform, evaluate_robustness, list_transforms
from trl_crome.evaluation.answers import extract_final_answer
from trl_crome.evaluation.transforms import FAMILIES, apply_oracle_transform, code_identifiers, protected_spans
from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage

FIELDS = ("prompt", "chosen", "rejected")
LOCAL = [t.name for t in list_transforms(include_oracle=False)]
# Transformations that rewrite only some kinds of text (math answers, code, markdown, ...).
CONDITIONAL = {
    "punctuation_spaces", "sentence_spacing", "line_spacing", "contractions", "char_swap", "char_insert",
    "char_delete", "keyboard_typo", "homoglyph", "boxed_to_answer_header", "answer_header_to_boxed",
    "code_comments", "code_minify", "code_fence", "markdown_strip", "markdown_add",
}  # fmt: skip


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    """3 real pairs per RewardBench subset (69) and 15 GSM8K pairs (gold solution vs. a wrong final answer)."""
    by_subset = defaultdict(list)
    with open(shared_data("rewardbench/filtered.jsonl")) as handle:
        for line in handle:
            row = json.loads(line)
            by_subset[row["subset"]].append(row)
    rng = random.Random(0)
    pairs = [row for subset in sorted(by_subset) for row in rng.sample(by_subset[subset], 3)]
    with open(shared_data("gsm8k/test.jsonl")) as handle:
        gsm8k = [json.loads(line) for line in handle][:15]
    for index, row in enumerate(gsm8k):
        wrong = row["answer"].rpartition("####")[0] + "#### 7"
        pairs.append(
            {"subset": "gsm8k", "id": index, "prompt": row["question"], "chosen": row["answer"], "rejected": wrong}
        )
    return pairs


def test_registry_has_at_least_20_documented_transformations():
    assert len(TRANSFORMS) >= 20
    for name, transform in TRANSFORMS.items():
        assert transform.name == name and transform.family in FAMILIES
        assert transform.definition and "\n" not in transform.definition
        assert transform.fields in (("prompt",), ("chosen", "rejected"))
        assert (transform.edit is None) == transform.needs_oracle
    assert {t.family for t in TRANSFORMS.values()} == set(FAMILIES)
    assert {"paraphrase", "back_translation"} <= {t.name for t in TRANSFORMS.values() if t.needs_oracle}


def _non_comment_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n") if line.strip()]
    return [line for line in lines if not line.strip().startswith(("#", "//")) or line.strip().startswith("#include")]


@pytest.mark.parametrize("name", LOCAL)
def test_transformation_is_deterministic_changes_text_and_keeps_numbers_code_and_answer(name, samples):
    transform = TRANSFORMS[name]
    changed = 0
    for pair in samples:
        out = apply_transform(transform, pair, seed=0)
        assert out == apply_transform(transform, dict(pair), seed=0), "not deterministic for a seed"
        assert out["subset"] == pair["subset"] and out["id"] == pair["id"]
        changed += any(out[f] != pair[f] for f in FIELDS)
        for field in FIELDS:
            before, after = pair[field], out[field]
            if field not in transform.fields:
                assert after == before
                continue
            assert extract_final_answer(after) == extract_final_answer(before), f"final answer changed in {field}"
            if transform.family != "domain":
                assert re.findall(r"\d+", after) == re.findall(r"\d+", before), f"numbers changed in {field}"
            if name == "code_minify":  # only comment and blank lines go; every other line stays as it was
                kept = [line.rstrip() for line in before.split("\n") if line.strip()]
                assert [line for line in after.split("\n") if line.strip()] == [
                    line
                    for line in kept
                    if not line.strip().startswith(("#", "//")) or line.strip().startswith("#include")
                ] or after == before
            else:
                words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", after))
                missing = code_identifiers(before) - words - {"boxed"}
                assert not missing, f"identifiers lost in {field}: {sorted(missing)[:5]}"
    if name in CONDITIONAL:
        assert changed >= 3, f"{name} changed only {changed} of {len(samples)} real pairs"
    else:
        assert changed == len(samples)


@pytest.mark.parametrize("name", ["char_swap", "char_insert", "char_delete", "keyboard_typo", "homoglyph"])
def test_typos_depend_on_the_seed_and_spare_code(name, samples):
    prose = [p for p in samples if p["subset"] == "alpacaeval-easy"]
    assert any(apply_transform(name, p, seed=0) != apply_transform(name, p, seed=1) for p in prose)
    for pair in (p for p in samples if p["subset"] == "hep-python"):
        out = apply_transform(name, pair, seed=0)
        assert out["chosen"] == pair["chosen"] and out["rejected"] == pair["rejected"]  # bare code: nothing to edit


def test_domain_transformations_on_known_texts():
    gsm8k = {"prompt": "q", "chosen": "She makes 9 * 2 = $18.\n#### 18", "rejected": "So 20.\n#### 20"}
    boxed = apply_transform("answer_header_to_boxed", gsm8k)
    assert boxed["chosen"] == "She makes 9 * 2 = $18.\n\nThe final answer is $\\boxed{18}$."
    back = apply_transform("boxed_to_answer_header", boxed)
    assert back["chosen"] == "She makes 9 * 2 = $18.\n\nThe final answer is $18$.\n\n# Answer\n\n18"
    code = {
        "prompt": "p",
        "chosen": "def add(a, b):\n    # sum\n\n    return a + b\n",
        "rejected": "def add(a, b):\n    return a - b",
    }
    assert apply_transform("code_minify", code)["chosen"] == "def add(a, b):\n    return a + b"
    assert apply_transform("code_fence", code)["rejected"] == "```\ndef add(a, b):\n    return a - b\n```"
    commented = apply_transform("code_comments", code)["chosen"].split("\n")
    assert commented[0].startswith("# ") and commented[1:] == code["chosen"].split("\n")
    md = {"prompt": "p", "chosen": "## Steps\n\n- **Wash** the car.\n- Dry it.", "rejected": "Wash it. Then dry it."}
    assert apply_transform("markdown_strip", md)["chosen"] == "Steps\n\nWash the car.\nDry it."
    assert apply_transform("markdown_add", md)["rejected"] == "**Wash it.** Then dry it."
    assert apply_transform("contractions", md)["rejected"] == md["rejected"]
    assert apply_transform("contractions", {**md, "rejected": "I do not know. It is late."})["rejected"] == (
        "I don't know. It's late."
    )


def test_protected_regions_are_exactly_code_math_and_the_final_answer():
    text = "Use `my_var` here.\nWe get $x = 2$.\nThe answer is 5.\nMore prose after.\n# Answer\n\n5"
    assert [text[a:b] for a, b in protected_spans(text)] == [
        "`my_var`",
        "$x = 2$",
        "The answer is 5.",
        "# Answer\n\n5",
    ]
    # Only the plain words "here", "prose" and "after" can change (here: one of them, about 10% of the words).
    swapped = apply_transform("char_swap", {"prompt": "p", "chosen": text, "rejected": text}, seed=0)["chosen"]
    assert swapped == text.replace("here", "hree")


class RuleOracle(Oracle):
    """A rule-based backend of the real oracle interface (no LLM can run in tests): it answers a paraphrase request
    by rewording "Write" to "Compose", a translation request by tagging the text, and drops the numbers of any text
    mentioning "drop" (a bad rewrite that must be rejected)."""

    def __init__(self):
        super().__init__(model="rules")
        self.requests: list[OracleRequest] = []

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        self.requests.append(request)
        text = request.prompt.split("Text:\n", 1)[1]
        if "drop" in text:
            text = re.sub(r"\d+", "", text)
        elif "into French" in request.prompt:
            text = "[fr] " + text
        elif "into English" in request.prompt:
            text = text.removeprefix("[fr] ").replace("Write", "Please write")
        else:
            text = text.replace("Write", "Compose")
        return OracleResponse(text=text, usage=Usage(input_tokens=10, output_tokens=5, calls=1))


def test_oracle_transformations_keep_only_rewrites_with_the_same_numbers():
    pairs = [
        {"prompt": "Write 3 lines.", "chosen": "a", "rejected": "b"},
        {"prompt": "Please drop 7 items.", "chosen": "a", "rejected": "b"},
    ]
    oracle = RuleOracle()
    out = apply_oracle_transform("paraphrase", pairs, oracle)
    assert [p["prompt"] for p in out] == ["Compose 3 lines.", "Please drop 7 items."]
    assert all(r.template == "eval-paraphrase-0@1" and r.temperature == 0.0 for r in oracle.requests)
    back = apply_oracle_transform("back_translation", pairs, RuleOracle())
    assert back[0]["prompt"] == "Please write 3 lines." and back[1] == pairs[1]
    with pytest.raises(ValueError, match="needs an oracle"):
        apply_transform("paraphrase", pairs[0])


def test_oracle_transformation_goes_through_the_disk_cache(tmp_path):
    pairs = [{"prompt": "Write 3 lines.", "chosen": "a", "rejected": "b"}]
    first = RuleOracle()
    assert apply_oracle_transform("paraphrase", pairs, first, cache_dir=tmp_path)[0]["prompt"] == "Compose 3 lines."
    second = RuleOracle()
    assert apply_oracle_transform("paraphrase", pairs, second, cache_dir=tmp_path)[0]["prompt"] == "Compose 3 lines."
    assert len(first.requests) == 1 and second.requests == []  # answered from the cache


def test_evaluate_robustness_with_a_length_reward(samples, tmp_path):
    """Reward = answer length: prompt-only and equal-length edits cannot change any ranking; exact values."""
    scorer = RewardScorer(lambda prompts, answers: [len(a) for a in answers])
    pairs = samples[:40]
    names = ["add_quotes", "distractor_suffix", "punctuation_spaces", "code_fence"]
    result = evaluate_robustness(scorer, pairs, transforms=names, seed=0, output_dir=tmp_path)
    expected_original = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)
    assert result.original_accuracy == pytest.approx(expected_original)
    for name in ("add_quotes", "distractor_suffix"):
        info = result.per_transform[name]
        assert info["changed"] == 40 and info["drop"] == 0 and info["accuracy"] == pytest.approx(expected_original)
    info = result.per_transform["punctuation_spaces"]
    transformed = [apply_transform("punctuation_spaces", p) for p in pairs]
    changed = [i for i, (a, b) in enumerate(zip(pairs, transformed)) if a != b]
    assert info["changed"] == len(changed)
    assert info["accuracy"] == pytest.approx(
        sum(len(transformed[i]["chosen"]) > len(transformed[i]["rejected"]) for i in changed) / len(changed)
    )
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["per_transform"]["add_quotes"]["changed"] == 40
    assert "| add_quotes | controlled | 40 |" in (tmp_path / "robustness.md").read_text()
    assert (tmp_path / "robustness_drop.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="needs an oracle"):
        evaluate_robustness(scorer, pairs, transforms=["paraphrase"])
    with pytest.raises(ValueError, match="pair 1: field 'chosen'"):
        evaluate_robustness(scorer, [pairs[0], {"prompt": "p", "rejected": "r"}], transforms=["add_quotes"])
