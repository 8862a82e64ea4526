"""Bad rows fail at dataset preparation with an error that names the row index and the field; missing values of
optional columns read as their defaults; a file that is not JSON is named with its bad line."""

import bz2
import gzip
import json

import pytest
from datasets import Dataset

from tests.helpers import tiny_reward_model
from tests.trainer.common import tiny_args
from trl_crome import CromeDataError, CromeRewardTrainer, validate_preference_dataset
from trl_crome.data import load_preference_data

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven.", "tie": False, "kind": "original"}


def rows_with(index: int, **changes) -> list[dict]:
    rows = [dict(GOOD) for _ in range(5)]
    rows[index].update(changes)
    return rows


@pytest.mark.parametrize(
    "rows, row, field, message",
    [
        (rows_with(3, chosen=""), 3, "chosen", "is empty"),
        (rows_with(1, rejected="   \n"), 1, "rejected", "is empty"),
        ([{**GOOD, "tie": i % 2} for i in range(5)], 0, "tie", "got int 0"),
        ([{**GOOD, "tie": "yes"} for i in range(5)], 0, "tie", "got str 'yes'"),
        (rows_with(4, kind=""), 4, "kind", "non-empty string"),
        ([{**GOOD, "chosen": i} for i in range(5)], 0, "chosen", "expected a string or a list of"),
        ([{**GOOD, "margin": "big" if i == 1 else "0"} for i in range(5)], 0, "margin", "must be a number"),
    ],
)
def test_bad_standard_rows(rows, row, field, message):
    with pytest.raises(CromeDataError, match=message) as error:
        validate_preference_dataset(Dataset.from_list(rows), "train")
    assert (error.value.row, error.value.field) == (row, field)
    assert f"row {row}, field '{field}'" in str(error.value)


def test_missing_column_is_named():
    with pytest.raises(CromeDataError, match="field 'rejected': missing column") as error:
        validate_preference_dataset(Dataset.from_list([{"prompt": "p", "chosen": "c"}]), "eval")
    assert error.value.row is None and str(error.value).startswith("eval dataset")


def test_bad_conversational_rows():
    def turn(text):
        return [{"role": "assistant", "content": text}]

    rows = [{"prompt": [{"role": "user", "content": "Hi"}], "chosen": turn("Hello!"), "rejected": turn("Go.")}] * 3
    rows = [dict(r) for r in rows]
    rows[2]["rejected"] = turn("")
    with pytest.raises(CromeDataError, match="row 2, field 'rejected': is empty"):
        validate_preference_dataset(Dataset.from_list(rows))
    rows = [{**row, "rejected": turn("Go."), "prompt": "a plain-text prompt"} for row in rows]
    with pytest.raises(CromeDataError, match="row 0, field 'prompt': expected a list of messages like the answers"):
        validate_preference_dataset(Dataset.from_list(rows))


def test_bad_pretokenized_row():
    data = Dataset.from_dict({"chosen_ids": [[1, 2], [3]], "rejected_ids": [[4], []]})
    with pytest.raises(CromeDataError, match="row 1, field 'rejected_ids': is empty"):
        validate_preference_dataset(data)


def test_the_trainer_raises_at_construction_before_tokenizing(tmp_path, tokenizer):
    with pytest.raises(CromeDataError, match="train dataset, row 3, field 'chosen'"):
        CromeRewardTrainer(
            tiny_reward_model(tokenizer),
            args=tiny_args(tmp_path),
            train_dataset=Dataset.from_list(rows_with(3, chosen="")),
            processing_class=tokenizer,
        )
    with pytest.raises(CromeDataError, match="eval dataset, row 0, field 'tie'"):
        CromeRewardTrainer(
            tiny_reward_model(tokenizer),
            args=tiny_args(tmp_path),
            train_dataset=Dataset.from_list(rows_with(0)),
            eval_dataset=Dataset.from_list([{**GOOD, "tie": 1}]),
            processing_class=tokenizer,
        )


def test_defaults_for_rows_without_tie_or_kind():
    data = Dataset.from_list([{**GOOD, "tie": i == 1} for i in range(3)]).remove_columns("kind")
    assert validate_preference_dataset(data)[1] == ["original", "neutral"]


def test_missing_values_of_optional_columns_read_as_their_defaults():
    rows = [{**GOOD, "margin": 1.5} for _ in range(4)]
    rows[1].update(tie=None, kind=None)  # in a JSON lines file: a line without them
    rows[2].update(kind=None, tie=True)
    rows[3].update(margin=None)
    data, kinds = validate_preference_dataset(Dataset.from_list(rows), "train")
    assert data["tie"] == [False, False, True, False]
    assert data["kind"] == ["original", "original", "neutral", "original"]
    assert data["margin"] == [1.5, 1.5, 1.5, 0.0]
    assert kinds == ["original", "neutral"]
    streamed, _ = validate_preference_dataset(Dataset.from_list(rows).to_iterable_dataset(), "train")
    assert [row["kind"] for row in streamed] == data["kind"] and [row["tie"] for row in streamed] == data["tie"]


def write_jsonl(path, lines: list[str]) -> None:
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in lines))


def test_a_tie_absent_in_one_row_and_yes_in_another_names_the_row_with_yes(tmp_path):
    without_tie = {key: value for key, value in GOOD.items() if key != "tie"}
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [json.dumps(without_tie), json.dumps(GOOD | {"tie": "yes"})])
    data = load_preference_data(str(path))
    assert data["tie"] == [None, "yes"]  # how datasets reads it: row 0's tie is merely missing
    with pytest.raises(CromeDataError, match="row 1, field 'tie': must be a bool .* got str 'yes'") as error:
        validate_preference_dataset(data, "input")
    assert error.value.row == 1


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz", "pairs.json.bz2"])
def test_a_line_that_is_not_json_is_named_with_its_file_and_line(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    path = tmp_path / name
    lines = [json.dumps(GOOD)] * 3 + ['{"prompt": "p", "chosen": "c",'] + [json.dumps(GOOD)] * 2
    write_jsonl(path, lines)
    with pytest.raises(ValueError, match=rf"{name}, line 4: not valid JSON \(.*\): '{{\"prompt\": \"p\"") as error:
        load_preference_data(str(path))
    assert error.value.__cause__ is None and "DatasetGenerationError" not in repr(error.value)


def test_a_json_document_that_does_not_parse_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([GOOD, GOOD], indent=1)[:-2] + "\n,,]\n")
    with pytest.raises(ValueError, match=r"pairs.json, line \d+: not valid JSON"):
        load_preference_data(str(path))
    path.write_text(json.dumps([GOOD, GOOD]))
    assert len(load_preference_data(str(path))) == 2


def test_a_streamed_dataset_with_an_unknown_kind_names_the_row(tmp_path, tokenizer):
    """Kinds of a stream cannot be collected up front: an unknown one fails when its row streams, named."""
    rows = rows_with(2, kind="paraphrase")
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer),
        args=tiny_args(tmp_path),
        train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
        processing_class=tokenizer,
    )
    with pytest.raises(CromeDataError, match="train dataset, row 2, field 'kind': unknown kind 'paraphrase'"):
        list(trainer.train_dataset)
