"""The finished chunks of an augmentation run, on disk as the run goes: a chunk's pairs in an Arrow file, and its
record (which rows, what they produced, what their answers cost) in a JSON file written last.

A chunk is reused by a later run only when the run's fingerprint (settings, oracle model, the pool of prompts) and the
chunk's rows are the same, so a killed run (or one stopped at `max_cost`) resumes after its last finished chunk
without recomputing any, and the output, read back chunk after chunk, is what one uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, Features, concatenate_datasets
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from ..oracles.base import Oracle, OracleRequest, OracleResponse
from .pairs import CromePair, pairs_to_dataset
from .verification import VerificationCounts

FORMAT_VERSION = 1


@dataclass
class ChunkReport:
    """What one chunk of rows produced, and what its answers cost when they were paid.

    `counters` holds the counts that add up into the run's [`~trl_crome.augment.AugmentationSummary`]: `"rejects"`,
    `"fallbacks"` and `"elements"` per reason, `"scores"["rescaled"]` and `"neutrals"["missing"]`.
    `answers` holds, per step, `[requests, input_tokens, output_tokens, cost_usd]` of its answers (cached ones at what
    they cost when paid); `transient` the answers that failed with a transient error (not cached: a later run computes
    the chunk again, to ask them again).
    """

    counters: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    verification: VerificationCounts = field(default_factory=VerificationCounts)
    answers: dict[str, list[float]] = field(default_factory=dict)
    templates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    transient: int = 0

    def add_answers(
        self, oracle: Oracle, calls: Sequence[tuple[str, OracleRequest]], responses: Sequence[OracleResponse]
    ):
        for (step, request), response in zip(calls, responses):
            usage = response.cached_usage if response.from_cache else response.usage
            totals = self.answers.setdefault(step, [0, 0, 0, 0.0])
            totals[0] += 1
            totals[1] += usage.input_tokens
            totals[2] += usage.output_tokens
            totals[3] += oracle.cost(usage)
            self.templates[step].add(request.template)
            self.transient += response.transient

    def to_dict(self, pairs: Sequence[CromePair], filtered_out: Counter | None) -> dict[str, Any]:
        """The record's report: the counts in the summary's format, the answers, the templates per step."""
        counters, verification = self.counters, self.verification
        counts = {
            "pairs": dict(Counter(pair.kind for pair in pairs)),
            "neutrals": dict(Counter(pair.neutral_type for pair in pairs if pair.neutral_type is not None)),
            "rejects": dict(counters["rejects"]),
            "rubric_fallbacks": dict(counters["fallbacks"]),
            "rescaled_scores": counters["scores"]["rescaled"],
            "element_failures": dict(counters["elements"]),
            "verification": {
                "passed": verification.passed,
                "failed": {direction: dict(failed) for direction, failed in verification.failed.items()},
                "unverified": dict(verification.unverified),
            },
            "neutrals_missing": counters["neutrals"]["missing"],
            "filtered_out": dict(filtered_out or {}),
        }
        templates = {step: sorted(names) for step, names in self.templates.items()}
        return {"counts": counts, "answers": self.answers, "templates": templates, "transient": self.transient}


class ChunkStore:
    """A folder of finished chunks (`<start>-<stop>.arrow` and `.json`), keeping only those of `fingerprint`.

    Args:
        folder (`str` or `os.PathLike`):
            Created when missing. Chunks of another fingerprint found there are deleted: their answers stay in the
            oracle cache, so a run with other settings recomputes them without paying again.
        fingerprint (`str`):
            The run's settings, oracle model and pool of prompts, hashed.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.records: dict[int, dict[str, Any]] = {}
        for temp in self.folder.glob(".*.tmp"):  # half-written by a killed run: never a finished chunk
            temp.unlink(missing_ok=True)
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                valid = record["format"] == FORMAT_VERSION and record["fingerprint"] == fingerprint
            except (OSError, ValueError, KeyError, TypeError):
                valid = False
            if valid and self.path(record).exists():
                self.records[record["start"]] = record
            else:
                path.unlink(missing_ok=True)
                path.with_suffix(".arrow").unlink(missing_ok=True)
        finished = {self.path(record) for record in self.records.values()}
        for path in self.folder.glob("*.arrow"):
            if path not in finished:  # written by a run killed before the chunk's record: never read, so not kept
                path.unlink(missing_ok=True)

    def path(self, record: dict[str, Any]) -> Path:
        """The Arrow file of a record's pairs."""
        return self.folder / f"{record['start']:012d}-{record['stop']:012d}.arrow"

    def get(self, start: int) -> dict[str, Any] | None:
        """The record of the finished chunk that starts at row `start`, if any."""
        return self.records.get(start)

    def save(
        self, start: int, stop: int, rows_digest: str, pairs: list[CromePair], features: Features, report: dict
    ) -> dict[str, Any]:
        """Write a finished chunk: its pairs first, then its record (a chunk without a record is not finished)."""
        for other in [r for r in self.records.values() if r["start"] < stop and start < r["stop"]]:
            self._delete(other)  # an overlapping chunk of an earlier run (another chunk size, or recomputed)
        record = {
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "start": start,
            "stop": stop,
            "rows_digest": rows_digest,
            "num_pairs": len(pairs),
            "report": report,
        }
        table = pairs_to_dataset(pairs, features).data.table
        path = self.path(record)
        temp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(temp, path)
        json_path, json_temp = path.with_suffix(".json"), path.with_name(f".{path.stem}.json.tmp")
        json_temp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(json_temp, json_path)
        self.records[start] = record
        return record

    def _delete(self, record: dict[str, Any]) -> None:
        path = self.path(record)
        path.with_suffix(".json").unlink(missing_ok=True)  # the record first: a kill in between leaves no half chunk
        path.unlink(missing_ok=True)
        del self.records[record["start"]]

    def dataset(self, records: Sequence[dict[str, Any]], features: Features) -> Dataset:
        """The pairs of `records`, in order, as one data set memory-mapped from the chunks' files (no copy)."""
        if not records:
            return pairs_to_dataset([], features)
        return concatenate_datasets([Dataset.from_file(str(self.path(record))) for record in records])

    def write_jsonl(self, records: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
        """Write the pairs of `records` as JSON lines, one chunk at a time (so memory does not grow with the data
        set), atomically: exactly the bytes `Dataset.to_json(path, lines=True, force_ascii=False)` writes for the
        whole output."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        quiet = not are_progress_bars_disabled()
        if quiet:
            disable_progress_bars()  # one bar per chunk says nothing
        try:
            with open(temp, "wb") as file:
                for record in records:
                    Dataset.from_file(str(self.path(record))).to_json(file, lines=True, force_ascii=False)
        finally:
            if quiet:
                enable_progress_bars()
        os.replace(temp, path)
