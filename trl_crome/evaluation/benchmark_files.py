"""Rows of a benchmark: a local JSONL / JSON / parquet file, or a split of its Hub dataset.

JSON and JSONL files are read with the standard library, so every row keeps its own types (a `chosen` that is a
string in one row and a list in another reaches the benchmark's validation, which names the row, instead of failing
inside Arrow's type inference).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
