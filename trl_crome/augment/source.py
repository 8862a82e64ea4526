"""The input rows, read a slice at a time from the Arrow data set, and the pool of distinct prompts that Irrelevant
Query Neutrals draw from.

A run never holds every row as Python objects: rows are read by index range, one chunk at a time, and the pool keeps
one 64-bit digest per distinct prompt (and the rows where it first and last appears), not the prompt's text. The text
of a drawn prompt is read back from the data set when a neutral pair needs it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence

import numpy as np
from datasets import Dataset

from ..data import CromeDataError, validate_preference_dataset
from .pairs import SourceRow, Turns, is_messages, prompt_key, turn_features

SCAN_ROWS = 1_000  # rows read at once by the scan that checks the input and builds the pool
TURN_COLUMNS = ("prompt", "chosen", "rejected")


def prompt_digest(prompt: Turns) -> int:
    """A 64-bit digest of a prompt's identity ([`~trl_crome.augment.pairs.prompt_key`]): two distinct prompts share
    one with a probability of about 1e-10 in a data set of 60k prompts."""
    return int.from_bytes(hashlib.blake2b(prompt_key(prompt).encode(), digest_size=8).digest(), "little")


class PromptPool:
    """The distinct prompts of a data set in order of first appearance, by digest.

    Args:
        digests (`np.ndarray`):
            One `uint64` [`prompt_digest`] per distinct prompt, in order of first appearance.
        first_rows / last_rows (`np.ndarray`):
            The first and last row of each prompt.
        fetch (`Callable[[int], Turns]`):
            The prompt of a row (read from the data set on demand).
    """

    def __init__(
        self, digests: np.ndarray, first_rows: np.ndarray, last_rows: np.ndarray, fetch: Callable[[int], Turns]
    ):
        self.digests = digests
        self.first_rows, self.last_rows = first_rows, last_rows
        self._fetch = fetch
        self._order = np.argsort(digests, kind="stable")
        self._sorted = digests[self._order]

    @classmethod
    def from_row_digests(cls, row_digests: np.ndarray, fetch: Callable[[int], Turns]) -> PromptPool:
        """The pool of a data set whose row `i` has the prompt digest `row_digests[i]`."""
        unique, first = np.unique(row_digests, return_index=True)
        _, last_from_end = np.unique(row_digests[::-1], return_index=True)
        order = np.argsort(first, kind="stable")
        return cls(unique[order], first[order], (len(row_digests) - 1 - last_from_end)[order], fetch)

    @classmethod
    def from_prompts(cls, prompts: dict[str, Turns]) -> PromptPool:
        """A pool held in memory: `prompts` maps [`~trl_crome.augment.pairs.prompt_key`]s to distinct prompts."""
        values = list(prompts.values())
        rows = np.arange(len(values))
        return cls(np.array([prompt_digest(p) for p in values], dtype=np.uint64), rows, rows, values.__getitem__)

    def __len__(self) -> int:
        return len(self.digests)

    def position(self, digest: int) -> int | None:
        """Where the prompt with `digest` is in the pool, or `None`."""
        found = int(np.searchsorted(self._sorted, np.uint64(digest)))
        if found < len(self._sorted) and self._sorted[found] == digest:
            return int(self._order[found])
        return None

    def prompt(self, position: int) -> Turns:
        """The prompt at `position`, read from its first row."""
        return self._fetch(int(self.first_rows[position]))

    def others(self, rng: random.Random, own: int, count: int) -> list[int]:
        """`count` distinct positions of prompts other than the one with digest `own` (fewer when there are not
        enough), drawn uniformly with `rng`."""
        size, own = len(self.digests), np.uint64(own)
        if size - (self.position(own) is not None) <= count:
            chosen = [position for position in range(size) if self.digests[position] != own]
            rng.shuffle(chosen)
            return chosen
        picked: dict[int, None] = {}
        # Rejection sampling: O(count) per pair instead of copying the whole pool for every pair.
        while len(picked) < count:
            position = rng.randrange(size)
            if self.digests[position] != own:
                picked[position] = None
        return list(picked)

    def fingerprint(self) -> str:
        """A hash of the pool (its prompts and their order): the IQN draws of a run depend on all of it."""
        return hashlib.sha256(self.digests.tobytes()).hexdigest()


class SourceData:
    """The rows of a preference data set, read by index range from its Arrow table.

    Args:
        dataset (`Dataset`):
            `prompt` (optional: an implicit prompt is extracted with TRL's `extract_prompt`), `chosen`, `rejected`.
        max_rows (`int`, *optional*):
            Only the first `max_rows` rows.

    Raises:
        [`~trl_crome.data.CromeDataError`]: for a missing `chosen` or `rejected` column.
    """

    def __init__(self, dataset: Dataset, max_rows: int | None = None):
        missing = [column for column in ("chosen", "rejected") if column not in dataset.column_names]
        if missing:
            raise CromeDataError(
                f"missing column (the dataset has {sorted(dataset.column_names)}; the augmenter needs text in "
                "'chosen' and 'rejected', with an optional 'prompt')",
                dataset_name="input",
                row=None,
                field=missing[0],
            )
        if max_rows is not None and max_rows < len(dataset):
            dataset = dataset.select(range(max_rows))
        self.full = dataset  # every column: `scan` checks them all
        self.features = turn_features(dataset)
        self.dataset = dataset.select_columns([c for c in TURN_COLUMNS if c in dataset.column_names])

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, start: int, stop: int) -> list[SourceRow]:
        """Rows `start` to `stop` (excluded), checked, with explicit prompts."""
        batch = self.dataset[start:stop]
        columns = list(batch)
        return [
            source_row(start + offset, {column: batch[column][offset] for column in columns})
            for offset in range(len(batch[columns[0]]))
        ]

    def rows_at(self, indices: Sequence[int]) -> list[SourceRow]:
        """The rows at `indices`, in that order."""
        return [self.rows(index, index + 1)[0] for index in indices]

    def prompt(self, index: int) -> Turns:
        return self.rows(index, index + 1)[0].prompt

    def scan(self) -> PromptPool:
        """Check every row (the same checks as training data, then the augmenter's own) a slice at a time, and build
        the pool of distinct prompts. Bad input is reported here, before any oracle call is paid for.

        Raises:
            [`~trl_crome.data.CromeDataError`]: naming the row index and the field, for a wrong type, an empty answer
            or prompt, or a message whose content is not a string (it could not be rewritten).
        """
        validate_preference_dataset(self.full, dataset_name="input")
        digests = np.empty(len(self), dtype=np.uint64)
        for start in range(0, len(self), SCAN_ROWS):
            rows = self.rows(start, min(start + SCAN_ROWS, len(self)))
            digests[start : start + len(rows)] = [prompt_digest(row.prompt) for row in rows]
        return PromptPool.from_row_digests(digests, self.prompt)


def source_row(index: int, example: dict) -> SourceRow:
    """One input row with its prompt made explicit, checked: see [`SourceData.scan`]."""
    if "prompt" not in example:
        from trl.data_utils import extract_prompt  # imported here: trl is slow to import and rarely needed

        example = extract_prompt(example)
    for field in TURN_COLUMNS:
        value = example[field]
        if is_messages(value) and not all(isinstance(m.get("content"), str) for m in value):
            raise CromeDataError(
                "every message needs a string 'content' (multimodal content cannot be rewritten)",
                dataset_name="input",
                row=index,
                field=field,
            )
        if not (value.strip() if isinstance(value, str) else value):
            what = "no prompt could be extracted from the common start of chosen and rejected"
            message = what if field == "prompt" else "is empty"
            raise CromeDataError(message, dataset_name="input", row=index, field=field)
    return SourceRow(index, example["prompt"], example["chosen"], example["rejected"])


def rows_digest(rows: Sequence[SourceRow]) -> str:
    """A hash of rows' indices and contents: a chunk finished by an earlier run is reused only for the same rows."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.index, row.prompt, row.chosen, row.rejected], ensure_ascii=False).encode())
    return digest.hexdigest()
