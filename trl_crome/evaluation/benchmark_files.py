"""Rows of a benchmark: a local JSONL / JSON / parquet file, or a split of its Hub dataset.

JSON and JSONL files are read with the standard library, so every row keeps its own types (a `chosen` that is a
string in one row and a list in another reaches the benchmark's validation, which names the row, instead of failing
inside Arrow's type inference).
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from ..data import CromeDataError


def read_rows(path: str | os.PathLike, name: str) -> list[dict[str, Any]]:
    """The rows of a local `.jsonl`, `.json` (a list of objects) or `.parquet` file of benchmark `name`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name} file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from datasets import load_dataset

        return load_dataset("parquet", data_files=str(path), split="train").to_list()
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{name} file {path}, line {number}: not valid JSON ({error})") from None
        return rows
    if suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{name} file {path}: expected a JSON list of rows, got a {type(rows).__name__}")
        return rows
    raise ValueError(f"Cannot read {name} file {path}: expected a .jsonl, .json or .parquet file")


def load_benchmark_rows(source: str | os.PathLike | None, hub_id: str, split: str, name: str) -> list[dict[str, Any]]:
    """Rows from a local file (see [`read_rows`]), or from `hub_id`'s `split` when `source` is `None` or `"hub"`."""
    if source is None or str(source) == "hub":
        from datasets import load_dataset

        return load_dataset(hub_id, split=split).to_list()
    return read_rows(source, name)


def row_error(dataset_name: str, index: int, field: str, message: str) -> CromeDataError:
    """The [`~trl_crome.CromeDataError`] of row `index`, field `field` of a benchmark."""
    return CromeDataError(message, dataset_name=dataset_name, row=index, field=field)


def check_row(
    dataset_name: str, index: int, row: Any, required: Sequence[str], hints: dict[str, str] | None = None
) -> None:
    """Raise [`row_error`] unless `row` is an object with every `required` field set and a string `prompt`
    (`hints[field]` is appended to the message of a missing field)."""
    if not isinstance(row, dict):
        raise row_error(dataset_name, index, "row", f"each row must be an object, got {describe(row)}")
    for name in required:
        if row.get(name) is None:
            raise row_error(dataset_name, index, name, "is missing" + (hints or {}).get(name, ""))
    if not isinstance(row["prompt"], str):
        raise row_error(dataset_name, index, "prompt", f"must be a string, got {describe(row['prompt'])}")


def is_string_list(value: Any, length: int | None = None) -> bool:
    """Whether `value` is a non-empty list of strings (of exactly `length` items when given)."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        return False
    return length is None or len(value) == length


def describe(value: Any) -> str:
    """A short description of a bad field value for error messages: its type, and its length for a list."""
    if isinstance(value, list):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a list of {len(value)} item(s) of type {', '.join(kinds) or 'none'}"
    return f"a {type(value).__name__}"


def subsample(
    rows: Sequence[dict[str, Any]],
    per_group: int,
    seed: int,
    group: Callable[[dict[str, Any]], Hashable],
    unit: Callable[[int, dict[str, Any]], Hashable] | None = None,
) -> list[dict[str, Any]]:
    """At most `per_group` units of each `group(row)`, drawn with `random.Random(seed)`; rows keep their order.

    A unit is one row, or, with `unit(index, row)`, the rows sharing a key (kept or dropped together, e.g. the two
    rows of a RewardBench 2 Ties prompt).
    """
    groups: dict[Hashable, dict[Hashable, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, row in enumerate(rows):
        groups[group(row)][index if unit is None else unit(index, row)].append(index)
    rng = random.Random(seed)
    keep: set[int] = set()
    for name in sorted(groups):
        units = list(groups[name])
        for key in units if len(units) <= per_group else rng.sample(units, per_group):
            keep.update(groups[name][key])
    return [row for index, row in enumerate(rows) if index in keep]
