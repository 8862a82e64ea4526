import pytest

from trl_crome.augment.counterfactuals import (
    CounterfactualValidator,
    RewriteTask,
    causal_pairs,
    parse_rewrite,
    rewrite_tasks,
)
from trl_crome.augment.pairs import SourceRow
from trl_crome.augment.rubrics import CausalAttribute
from trl_crome.oracles.base import OracleResponse

SOURCE = """Here is how to boil an egg:

1. Put the egg in boiling water.
2. Wait **nine minutes**.
3. Cool it in cold water."""


@pytest.mark.parametrize(
    ("rewritten", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (SOURCE, "identical"),
        (SOURCE.replace("\n\n", "\n   \n") + "  ", "identical"),  # whitespace only
        ("Boil it.", "too_short"),
        (SOURCE + "\n\n" + SOURCE.replace("boil", "cook") + "\n\n" + SOURCE, "too_long"),
        (SOURCE.replace("1. ", "").replace("2. ", "").replace("3. ", ""), "format_changed"),  # list dropped
        (SOURCE.replace("**nine minutes**", "nine minutes"), "format_changed"),  # bold dropped
        (SOURCE.replace("Here is", "## Steps\nHere is"), "format_changed"),  # heading added
        (SOURCE.replace("nine", "two"), None),  # a real change, same format
        (SOURCE.replace("3. Cool it in cold water.", "3. Cool it."), None),  # shorter, within bounds
    ],
)
def test_validator_rejects_each_failure_with_its_reason(rewritten, reason):
    assert CounterfactualValidator()(SOURCE, rewritten) == reason


def test_format_check_can_be_turned_off_and_bounds_moved():
    no_list = SOURCE.replace("1. ", "").replace("2. ", "").replace("3. ", "")
    assert CounterfactualValidator(check_format=False)(SOURCE, no_list) is None
    assert CounterfactualValidator(min_length_ratio=0.95)(SOURCE, SOURCE[: int(len(SOURCE) * 0.9)]) == "too_short"
    assert CounterfactualValidator(max_length_ratio=1.05)(SOURCE, SOURCE + " Enjoy it with salt.") == "too_long"


def test_lengths_can_be_counted_in_tokens(tokenizer):
    def tokens(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    source = " understanding" * 10  # 140 characters, 10 tokens
    rewritten = "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 2  # 104 characters, 53 tokens
    assert len(rewritten) / len(source) < 2.0  # fine in characters ...
    assert tokens(rewritten) / tokens(source) > 2.0  # ... too long in tokens
    assert CounterfactualValidator()(source, rewritten) is None
    assert CounterfactualValidator(length=tokens)(source, rewritten) == "too_long"


def test_oracle_failures_become_reasons():
    assert parse_rewrite(OracleResponse(error="safety")) == (None, "safety")
    assert parse_rewrite(OracleResponse(error="truncated")) == (None, "truncated")
    assert parse_rewrite(OracleResponse(text="not json", parsed=None)) == (None, "malformed")
    assert parse_rewrite(OracleResponse(text="{}", parsed={"other": 1})) == (None, "malformed")
    assert parse_rewrite(OracleResponse(text="x", parsed={"rewritten": "new"})) == ("new", None)


def test_plain_text_rewrites_are_accepted_only_when_asked():
    malformed = OracleResponse(text="  A plain rewrite.  ", error="malformed")
    assert parse_rewrite(malformed) == (None, "malformed")
    assert parse_rewrite(malformed, accept_plain_text=True) == ("A plain rewrite.", None)
    assert parse_rewrite(OracleResponse(text="cut off", error="truncated"), accept_plain_text=True) == (
        None,
        "truncated",
    )
    assert parse_rewrite(OracleResponse(text=" ", error="malformed"), accept_plain_text=True) == (None, "malformed")


def test_tasks_requests_and_pairs():
    row = SourceRow(7, "How do I boil an egg?", SOURCE, "Fry it in oil for a minute or two, then eat.")
    accuracy = CausalAttribute(name="accuracy", description="Right facts.")
    clarity = CausalAttribute(name="clarity", description="Clear steps.")
    tasks = rewrite_tasks([row], [[accuracy, clarity]], ["degrade", "upgrade"])
    assert [(t.attribute.name, t.direction) for t in tasks] == [
        ("accuracy", "degrade"),
        ("accuracy", "upgrade"),
        ("clarity", "degrade"),
        ("clarity", "upgrade"),
    ]
    degrade, upgrade = tasks[0], tasks[1]
    request = degrade.request(max_output_tokens=100, temperature=0.0)
    assert request.template == "degrade@1" and request.max_output_tokens == 100
    assert SOURCE in request.prompt and "accuracy" in request.prompt and "Right facts." in request.prompt
    assert "How do I boil an egg?" in request.prompt and "WORSE" in request.prompt
    assert upgrade.request(100, 0.0).template == "upgrade@1" and row.rejected in upgrade.request(100, 0.0).prompt

    worse = SOURCE.replace("nine", "two")
    better = "Boil it in water for nine minutes, then cool it and eat."
    responses = [
        OracleResponse(parsed={"rewritten": worse}),
        OracleResponse(parsed={"rewritten": better}),
        OracleResponse(error="safety"),
        OracleResponse(parsed={"rewritten": row.rejected}),  # identical to its source
    ]
    pairs, rejects = causal_pairs(tasks, responses, CounterfactualValidator())
    assert rejects == {"safety": 1, "identical": 1}
    assert [(p.chosen, p.rejected) for p in pairs] == [(SOURCE, worse), (better, row.rejected)]
    for pair, direction in zip(pairs, ("degrade", "upgrade")):
        assert (pair.kind, pair.tie, pair.source_row, pair.attribute, pair.direction, pair.neutral_of) == (
            "causal",
            False,
            7,
            "accuracy",
            direction,
            None,
        )


def test_conversational_rewrite_keeps_the_message_format():
    chosen = [{"role": "assistant", "content": "The capital of France is Paris, on the Seine."}]
    row = SourceRow(0, [{"role": "user", "content": "Capital of France?"}], chosen, chosen)
    task = RewriteTask(row, CausalAttribute(name="accuracy", description="d"), "degrade")
    assert "Capital of France?" in task.request(10, 0.0).prompt
    pair = task.pair("The capital of France is Lyon, on the Seine.")
    assert pair.rejected == [{"role": "assistant", "content": "The capital of France is Lyon, on the Seine."}]
    assert pair.chosen is chosen and pair.prompt == row.prompt
