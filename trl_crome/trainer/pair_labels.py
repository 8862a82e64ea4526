"""The per-pair labels both trainers add: a `kind_id` column at dataset preparation, `tie` and `kind_id` tensors in
every collated batch."""

from __future__ import annotations

from typing import Any

import torch

from ..data import DEFAULT_KINDS, KIND_COLUMN, TIE_COLUMN, CromeDataError, default_kind

KIND_ID_COLUMN = "kind_id"


def add_pair_labels(output: dict[str, Any], examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Add `tie` (bool) and `kind_id` (long) tensors to a collated batch; a pair without a `kind_id` gets the default
    kind of its tie flag."""
    ties = [bool(example.get(TIE_COLUMN, False)) for example in examples]
    output[TIE_COLUMN] = torch.tensor(ties, dtype=torch.bool)
    default_ids = [DEFAULT_KINDS.index(default_kind(tie)) for tie in ties]
    kind_ids = [example.get(KIND_ID_COLUMN, default) for example, default in zip(examples, default_ids)]
    output[KIND_ID_COLUMN] = torch.tensor(kind_ids, dtype=torch.long)
    return output


def add_kind_id(example: dict[str, Any], index: int, kind_ids: dict[str, int], dataset_name: str) -> dict[str, int]:
    """`Dataset.map` function (`with_indices=True`): the example's `kind` as an id of `kind_ids`."""
    kind = example[KIND_COLUMN]
    if kind not in kind_ids:  # only a streamed dataset gets here: its kinds cannot be collected up front
        raise CromeDataError(
            f"unknown kind {kind!r}; a streamed dataset may use only {sorted(kind_ids)}",
            dataset_name=dataset_name,
            row=index,
            field=KIND_COLUMN,
        )
    return {KIND_ID_COLUMN: kind_ids[kind]}
