from collections import Counter

from trl_crome.augment.neutrals import neutral_pairs
from trl_crome.augment.pairs import CromePair, prompt_key


def _originals(prompts):
    return [
        CromePair(prompt, f"good answer {i}", f"bad answer {i}", tie=False, kind="original", source_row=i)
        for i, prompt in enumerate(prompts)
    ]


def _pool(pairs):
    return {prompt_key(pair.prompt): pair.prompt for pair in pairs}


def test_neutrals_never_reuse_their_own_prompt_even_when_prompts_repeat():
    # 12 rows but only 3 distinct prompt texts: another *row* often has the same prompt.
    prompts = ["What is 2+2?", "Name a colour.", "Define entropy."] * 4
    originals = _originals(prompts)
    causal = [
        CromePair(
            p.prompt,
            p.chosen,
            "worse",
            tie=False,
            kind="causal",
            source_row=p.source_row,
            attribute="a",
            direction="degrade",
        )
        for p in originals
    ]
    neutrals, missing = neutral_pairs(originals + causal, _pool(originals), per_original=2, per_causal=1, seed=0)

    assert missing == 0
    assert len(neutrals) == 12 * 2 + 12
    own_prompt = {p.source_row: p.prompt for p in originals}
    for pair in neutrals:
        assert pair.prompt != own_prompt[pair.source_row]
        assert pair.prompt in prompts
    # Two neutrals of one original pair use two different prompts.
    per_source = Counter((p.source_row, p.prompt) for p in neutrals if p.neutral_of == "original")
    assert set(per_source.values()) == {1}


def test_neutral_labels_kinds_and_provenance():
    originals = _originals(["p0", "p1", "p2"])
    causal = [
        CromePair(
            "p1",
            "up",
            "bad answer 1",
            tie=False,
            kind="causal",
            source_row=1,
            attribute="relevance",
            direction="upgrade",
        )
    ]
    neutrals, _ = neutral_pairs(originals + causal, _pool(originals), per_original=1, per_causal=1, seed=3)

    assert [(p.source_row, p.neutral_of) for p in neutrals] == [
        (0, "original"),
        (1, "original"),
        (2, "original"),
        (1, "causal"),
    ]
    for pair in neutrals:
        assert pair.tie is True and pair.kind == "neutral" and pair.target == 0.5
    from_causal = neutrals[-1]
    assert (from_causal.chosen, from_causal.rejected) == ("up", "bad answer 1")
    assert (from_causal.attribute, from_causal.direction) == ("relevance", "upgrade")
    assert from_causal.prompt in ("p0", "p2")
    assert (neutrals[0].chosen, neutrals[0].rejected, neutrals[0].attribute) == ("good answer 0", "bad answer 0", None)


def test_neutrals_are_seeded():
    originals = _originals([f"prompt {i}" for i in range(50)])
    pool = _pool(originals)
    first, _ = neutral_pairs(originals, pool, per_original=1, seed=7)
    again, _ = neutral_pairs(originals, pool, per_original=1, seed=7)
    other, _ = neutral_pairs(originals, pool, per_original=1, seed=8)
    assert [p.prompt for p in first] == [p.prompt for p in again]
    assert [p.prompt for p in first] != [p.prompt for p in other]


def test_neutrals_of_a_pair_do_not_depend_on_the_other_pairs():
    originals = _originals([f"prompt {i}" for i in range(30)])
    pool = _pool(originals)
    everything, _ = neutral_pairs(originals, pool, seed=1)
    without_first, _ = neutral_pairs(originals[1:], pool, seed=1)
    assert [p.prompt for p in everything[1:]] == [p.prompt for p in without_first]


def test_too_few_distinct_prompts_are_counted_not_invented():
    originals = _originals(["same prompt", "same prompt", "other prompt"])
    neutrals, missing = neutral_pairs(originals, _pool(originals), per_original=2, seed=0)
    # Each pair has exactly one other distinct prompt: one neutral each, one missing each.
    assert [p.prompt for p in neutrals] == ["other prompt", "other prompt", "same prompt"]
    assert missing == 3


def test_conversational_prompts_are_compared_by_content():
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    prompts = [user("Hi"), user("Hi"), user("Bye")]
    originals = [
        CromePair(
            p,
            [{"role": "assistant", "content": f"a{i}"}],
            [{"role": "assistant", "content": f"b{i}"}],
            tie=False,
            kind="original",
            source_row=i,
        )
        for i, p in enumerate(prompts)
    ]
    neutrals, missing = neutral_pairs(originals, _pool(originals), seed=0)
    assert missing == 0
    assert [p.prompt for p in neutrals] == [user("Bye"), user("Bye"), user("Hi")]
    assert neutrals[0].chosen == [{"role": "assistant", "content": "a0"}]


def test_zero_neutrals_per_pair_makes_none():
    originals = _originals(["a", "b"])
    assert neutral_pairs(originals, _pool(originals), per_original=0, per_causal=0) == ([], 0)
