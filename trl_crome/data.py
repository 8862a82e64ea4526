"""The Crome pair format and its validation.

A Crome dataset is anything TRL's `RewardTrainer` accepts (standard or conversational, implicit or explicit prompt,
or pre-tokenized `chosen_ids` / `rejected_ids`), plus two optional columns:

- `tie` (`bool`): the pair is a neutral pair; its target is 0.5 instead of "chosen wins".
- `kind` (`str`): a free label used for per-kind metrics, e.g. `"original"`, `"causal"`, `"neutral"`.

Rows without `tie` are preference pairs; rows without `kind` are of kind `"neutral"` when they are ties and
`"original"` otherwise. A missing value of an optional column (`None`: the column exists, but not in this row, as in a
JSON lines file where some lines lack it) reads as its default: `tie` False, `kind` as above, `margin` 0. Validation
runs when the trainer prepares a dataset, before any tokenization, and raises a [`CromeDataError`] that names the
row index and the field.

[`load_preference_data`] reads a local file, a `save_to_disk` folder or a Hub dataset; a JSON lines file with a line
that is not JSON gets an error naming the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset

TIE_COLUMN = "tie"
KIND_COLUMN = "kind"
KIND_ORIGINAL = "original"
KIND_CAUSAL = "causal"
KIND_NEUTRAL = "neutral"
DEFAULT_KINDS = (KIND_ORIGINAL, KIND_CAUSAL, KIND_NEUTRAL)
MARGIN_COLUMN = "margin"
OPTIONAL_COLUMNS = (TIE_COLUMN, KIND_COLUMN, MARGIN_COLUMN)
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
CHECK_BATCH_ROWS = 1_000  # rows read at once by `validate_preference_dataset`


class CromeDataError(ValueError):
    """A dataset row that cannot be trained on. `row` is the index in the dataset (None for a missing column)."""

    def __init__(self, message: str, *, dataset_name: str, row: int | None, field: str):
        self.dataset_name, self.row, self.field = dataset_name, row, field
        where = f"row {row}, field '{field}'" if row is not None else f"field '{field}'"
        super().__init__(f"{dataset_name} dataset, {where}: {message}")


def default_kind(tie: bool) -> str:
    return KIND_NEUTRAL if tie else KIND_ORIGINAL


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _text_of(value: Any) -> str | None:
    """The text a standard answer or a conversational turn list carries; None when the value has the wrong type."""
    if isinstance(value, str):
        return value
    if _is_messages(value) and value:
        content = value[-1]["content"]
        # Multimodal content is a list of parts; any non-empty part counts as content.
        if isinstance(content, list):
            return " ".join(str(part.get("text", part)) if isinstance(part, dict) else str(part) for part in content)
        return content if isinstance(content, str) else None
    return None


def _check_row(row: dict[str, Any], index: int, dataset_name: str, tokenized: bool) -> None:
    def fail(field: str, message: str) -> None:
        raise CromeDataError(message, dataset_name=dataset_name, row=index, field=field)

    if tokenized:
        for field in ("chosen_ids", "rejected_ids"):
            ids = row[field]
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                fail(field, f"expected a list of token ids, got {type(ids).__name__}")
            if not ids:
                fail(field, "is empty")
    else:
        conversational = _is_messages(row["chosen"])
        for field in ("chosen", "rejected"):
            value = row[field]
            if _is_messages(value) != conversational:
                fail(field, "mixes the standard (string) and conversational (list of messages) formats")
            text = _text_of(value)
            if text is None:
                fail(
                    field, f"expected a string or a list of {{'role', 'content'}} messages, got {type(value).__name__}"
                )
            if not text.strip():
                fail(field, "is empty")
        if "prompt" in row:
            prompt = row["prompt"]
            if (_is_messages(prompt) if conversational else isinstance(prompt, str)) is False:
                expected = "a list of messages" if conversational else "a string"
                fail("prompt", f"expected {expected} like the answers, got {type(prompt).__name__}")
    # A missing value (None) of an optional column reads as its default (see `_with_defaults`).
    tie, kind, margin = (row.get(column) for column in OPTIONAL_COLUMNS)
    if tie is not None and not isinstance(tie, bool):
        fail(TIE_COLUMN, f"must be a bool (True for a neutral pair), got {type(tie).__name__} {tie!r}")
    if kind is not None and not (isinstance(kind, str) and kind):
        fail(KIND_COLUMN, f"must be a non-empty string, got {kind!r}")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)):
        fail(MARGIN_COLUMN, f"must be a number, got {type(margin).__name__} {margin!r}")


def _with_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """The row's missing optional values (None) replaced by their defaults: tie False, kind from tie, margin 0."""
    filled = {}
    if TIE_COLUMN in row and row[TIE_COLUMN] is None:
        filled[TIE_COLUMN] = False
    if KIND_COLUMN in row and row[KIND_COLUMN] is None:
        filled[KIND_COLUMN] = default_kind(bool(row.get(TIE_COLUMN)))
    if MARGIN_COLUMN in row and row[MARGIN_COLUMN] is None:
        filled[MARGIN_COLUMN] = 0.0
    return filled


def required_columns(column_names: Iterable[str]) -> tuple[str, ...]:
    names = set(column_names)
    if {"chosen_ids", "rejected_ids"} <= names:
        return ("chosen_ids", "rejected_ids")
    return ("chosen", "rejected")


def validate_preference_dataset(
    dataset: Dataset | IterableDataset, dataset_name: str = "train"
) -> tuple[Dataset | IterableDataset, list[str]]:
    """Check every row of a Crome dataset; return the dataset and the kinds it contains, in order of appearance.

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Preference pairs in any format `RewardTrainer` accepts, with optional `tie` and `kind` columns. An
            `IterableDataset` is returned wrapped so that each row is checked as it streams, and reports no kinds.
        dataset_name (`str`):
            Used in error messages, e.g. `"train"` or `"eval"`.

    Returns:
        The dataset, with the missing values of `tie`, `kind` and `margin` (None) replaced by their defaults, and its
        kinds.

    Raises:
        [`CromeDataError`]: for a missing column, a wrong type, an empty answer, a `tie` that is not a bool, an empty
        `kind`, naming the row index and the field.
    """
    column_names = dataset.column_names or list(next(iter(dataset)).keys())
    required = required_columns(column_names)
    for field in required:
        if field not in column_names:
            raise CromeDataError(
                f"missing column (the dataset has {sorted(column_names)}; preference data needs 'chosen' and "
                "'rejected', or pre-tokenized 'chosen_ids' and 'rejected_ids')",
                dataset_name=dataset_name,
                row=None,
                field=field,
            )
    tokenized = required == ("chosen_ids", "rejected_ids")

    if isinstance(dataset, IterableDataset):
        return dataset.map(_StreamValidator(dataset_name, tokenized), with_indices=True), []

    checked = [c for c in ("prompt", *required, *OPTIONAL_COLUMNS) if c in column_names]
    kinds: dict[str, None] = {}
    missing_values, selected = False, dataset.select_columns(checked)
    # A slice of rows at a time: checking a large data set never holds all of its text as Python objects.
    for start in range(0, len(dataset), CHECK_BATCH_ROWS):
        columns = selected[start : start + CHECK_BATCH_ROWS]
        for offset in range(len(columns[checked[0]])):
            row = {c: values[offset] for c, values in columns.items()}
            _check_row(row, start + offset, dataset_name, tokenized)
            kinds[row.get(KIND_COLUMN) or default_kind(bool(row.get(TIE_COLUMN)))] = None
        missing_values |= any(None in columns[c] for c in OPTIONAL_COLUMNS if c in columns)
    if missing_values:
        dataset = dataset.map(_with_defaults, desc="Filling missing tie / kind / margin values")
    return dataset, list(kinds)


class _StreamValidator:
    """Row check for streaming datasets (picklable, unlike a closure)."""

    def __init__(self, dataset_name: str, tokenized: bool):
        self.dataset_name, self.tokenized = dataset_name, tokenized

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        _check_row(row, index, self.dataset_name, self.tokenized)
        return {**row, **_with_defaults(row)}


def load_preference_data(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """Preference data from a local file (`.jsonl`, `.json`, `.parquet`, `.csv`, optionally compressed), a folder
    saved with `save_to_disk`, or a Hub dataset's split (`config` is its configuration name).

    Raises:
        `ValueError`: for a file of another type, or a JSON file that does not parse, naming the file and the first
        line that is not JSON.
    """
    from datasets import load_dataset, load_from_disk
    from datasets.exceptions import DatasetGenerationError

    path = Path(name)
    if path.is_dir() and (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    if not path.is_file():
        return load_dataset(name, config, split=split)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in COMPRESSION_SUFFIXES]
    builder = FILE_BUILDERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise ValueError(f"Cannot read {path}: expected a .jsonl, .json, .parquet or .csv file (maybe compressed).")
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except DatasetGenerationError as error:
        if builder != "json":
            raise
        raise ValueError(_json_error(path) or f"Cannot read {path}: {error.__cause__ or error}") from None


def _json_error(path: Path) -> str | None:
    """Where `path` (JSON lines, or one JSON document) stops being JSON: `"<file>, line N: ..."`, or None.

    Read as a stream (the file may be large); only a file that is one JSON document is parsed whole."""
    import fsspec  # what datasets reads files with: the same decompression

    def open_text():
        return fsspec.open(str(path), "rt", compression="infer", encoding="utf-8")

    with open_text() as file:
        first = True
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as error:
                if not (first and line.lstrip()[:1] in "[{"):
                    return f"{path}, line {number}: not valid JSON ({error}): {line.strip()[:80]!r}"
                break  # the first line opens a JSON document spread over lines: parse the document
            first = False
        else:
            return None
    with open_text() as file:
        try:
            json.load(file)
        except json.JSONDecodeError as error:
            return f"{path}, line {error.lineno}: not valid JSON ({error.msg})"
    return None
