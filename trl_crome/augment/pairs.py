"""The rows the augmenter reads and writes, in TRL's preference format (standard strings or conversational messages).

Input: `prompt` (optional: an implicit prompt is extracted with TRL's `extract_prompt`), `chosen`, `rejected`. Output:
the same three columns in the input's format, plus `tie`, `kind` and the provenance columns `source_row`,
`attribute`, `direction`, `neutral_of` and `neutral_type` (see `docs/augmenter.md`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from datasets import Dataset, Features, Value

from ..data import KIND_ORIGINAL

# A prompt or an answer: a string, or a list of {"role", "content"} messages.
Turns = str | list[dict[str, Any]]


@dataclass
class CromePair:
    """One output row. For a tie (`kind="neutral"`) the order of `chosen` and `rejected` carries no meaning."""

    prompt: Turns
    chosen: Turns
    rejected: Turns
    tie: bool
    kind: str
    source_row: int
    attribute: str | None = None
    direction: str | None = None
    neutral_of: str | None = None
    neutral_type: str | None = None

    @property
    def target(self) -> float:
        """P(chosen wins): 1 for a preference pair, 0.5 for a tie."""
        return 0.5 if self.tie else 1.0


@dataclass
class SourceRow:
    """One validated input row, with its prompt made explicit."""

    index: int
    prompt: Turns
    chosen: Turns
    rejected: Turns

    def as_original_pair(self) -> CromePair:
        return CromePair(self.prompt, self.chosen, self.rejected, tie=False, kind=KIND_ORIGINAL, source_row=self.index)


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def prompt_key(prompt: Turns) -> str:
    """The identity of a prompt: two rows share a prompt exactly when their keys are equal."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def prompt_text(prompt: Turns) -> str:
    """The prompt as the oracle reads it: the text itself, or the conversation as a `Role: content` transcript."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{message['role'].capitalize()}: {message['content']}" for message in prompt)


def answer_text(answer: Turns) -> str:
    """The text to rewrite: the answer itself, or the content of its last message."""
    return answer if isinstance(answer, str) else answer[-1]["content"]


def with_answer_text(answer: Turns, text: str) -> Turns:
    """A copy of `answer` whose text (see [`answer_text`]) is replaced by `text`, in the same format."""
    if isinstance(answer, str):
        return text
    return [*answer[:-1], {**answer[-1], "content": text}]


def pairs_to_dataset(pairs: list[CromePair], turn_features: Features) -> Dataset:
    """Build the output dataset; `turn_features` holds the input's types for `prompt`, `chosen` and `rejected`."""
    features = Features(
        {
            **turn_features,
            "tie": Value("bool"),
            "kind": Value("string"),
            "source_row": Value("int64"),
            "attribute": Value("string"),
            "direction": Value("string"),
            "neutral_of": Value("string"),
            "neutral_type": Value("string"),
        }
    )
    if not pairs:  # a run stopped before its first chunk was done
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list([asdict(pair) for pair in pairs], features=features)


def turn_features(dataset: Dataset) -> Features:
    """The feature types of `prompt`, `chosen` and `rejected` in the output, taken from the input."""
    chosen = dataset.features["chosen"]
    return Features({"prompt": dataset.features.get("prompt", chosen), "chosen": chosen, "rejected": chosen})
