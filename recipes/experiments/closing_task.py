"""The controlled task: a real UltraFeedback prompt that ends with a verifiable requirement, and a spurious opener.

- Causal attribute: the prompt asks the answer to end with an exact sentence (`"End your answer with the exact
  sentence: ..."`, an IFEval-style instruction). An answer is good exactly when it does; [`satisfies`] checks it.
- Answers: the opening sentences of the real UltraFeedback chosen answer to that prompt, then a closing sentence.
  The chosen answer closes with the requested sentence, the rejected one with another sentence of the same pool, so
  the two answers of a pair differ only in their closing (the causal attribute) and in the planted attribute.
- Spurious attribute: a flattering opener ("Great question!") put in front of exactly one answer of each pair. It
  says nothing about quality. [`plant_opener`] puts it on the chosen answer of an exact fraction of the pairs: 90% in
  the training set and the in-distribution test set, 10% in the reversed test set.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Closing sentences of ordinary assistant answers: the requested one and the wrong ones come from this pool.
CLOSINGS = (
    "Hope this helps!",
    "Let me know if you have any other questions.",
    "Good luck with it!",
    "I hope this answers your question.",
    "Feel free to ask for more details.",
    "Thanks for asking about this.",
    "Have a great day!",
    "That is the short version.",
    "I am happy to help further.",
    "Enjoy exploring this topic!",
    "I hope you find this useful.",
    "Let me know how it goes.",
    "Those are the main points.",
    "Best of luck!",
    "Please ask if anything is unclear.",
    "That should get you started.",
)

# The planted spurious attribute: flattery that says nothing about the answer's quality.
OPENERS = (
    "Great question!",
    "What a great question!",
    "What a wonderful question!",
    "Excellent question!",
    "Such a thoughtful question!",
)

REQUIREMENT = "End your answer with the exact sentence: "
_REQUIREMENT_RE = re.compile(re.escape(REQUIREMENT) + r'"([^"\n]+)"')
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def required_closing(prompt: str) -> str | None:
    """The sentence the prompt asks the answer to end with, or `None` when the prompt asks for none."""
    found = _REQUIREMENT_RE.findall(prompt)
    return found[-1] if found else None  # the last one: a prompt that quotes another prompt keeps its own


def satisfies(prompt: str, answer: str) -> bool:
    """The task's checker: whether `answer` ends with the exact sentence `prompt` asks for."""
    closing = required_closing(prompt)
    return closing is not None and answer.rstrip().endswith(closing)


def labels_right(pair: dict[str, str]) -> bool:
    """Whether a `prompt` / `chosen` / `rejected` pair is labeled as the checker says: chosen right, rejected wrong."""
    return satisfies(pair["prompt"], pair["chosen"]) and not satisfies(pair["prompt"], pair["rejected"])


def has_opener(answer: str) -> bool:
    """Whether `answer` carries the planted spurious attribute (starts with a flattering opener)."""
    return answer.startswith(OPENERS)


def split_last_sentence(text: str) -> tuple[str, str]:
    """`(head, last_sentence)`: the text before its last sentence (with the separating space) and that sentence."""
    parts = _SENTENCE_END.split(text.rstrip())
    if len(parts) < 2:
        return "", text.rstrip()
    last = parts[-1]
    return text.rstrip()[: -len(last)], last


def _stable_rng(*parts: object) -> random.Random:
    return random.Random(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest())


def other_closing(closing: str, key: str) -> str:
    """A closing sentence of the pool other than `closing`, chosen by `key` (deterministic)."""
    return _stable_rng("closing", key).choice([c for c in CLOSINGS if c != closing])


@dataclass(frozen=True)
class BasePair:
    """A pair before planting: same body, the requested closing in `chosen`, another one in `rejected`."""

    row: int
    prompt: str
    body: str
    closing: str
    wrong_closing: str
    opener: str

    @property
    def chosen(self) -> str:
        return f"{self.body} {self.closing}"

    @property
    def rejected(self) -> str:
        return f"{self.body} {self.wrong_closing}"


def _first_sentences(answer: str, max_words: int) -> str | None:
    """The first sentences of the answer's first paragraph, at most `max_words` words; `None` when unusable."""
    paragraph = answer.strip().split("\n")[0].strip()
    if not paragraph or paragraph.startswith(("#", "*", "-", "|", "`", "1.")) or has_opener(paragraph):
        return None
    body, words = [], 0
    for sentence in _SENTENCE_END.split(paragraph):
        count = len(sentence.split())
        if words + count > max_words:
            break
        body.append(sentence)
        words += count
    text = " ".join(body)
    if words < 6 or not text.endswith((".", "!", "?")) or '"' in text:
        return None
    return text


def base_pairs(path: str | Path, limit: int, max_prompt_words: int = 40, max_body_words: int = 25) -> list[BasePair]:
    """Build up to `limit` base pairs from an UltraFeedback JSONL file (`prompt`, `chosen`, `rejected` strings).

    Rows with a long or multi-line prompt, or whose chosen answer does not open with a short plain paragraph, are
    skipped, so that every sequence stays short. The requested closing, the wrong closing and the opener are chosen
    per row with a generator seeded by the row's text, so the same file always gives the same pairs.
    """
    pairs = []
    with open(path, encoding="utf-8") as file:
        for row, line in enumerate(file):
            if len(pairs) == limit:
                break
            example = json.loads(line)
            question = example["prompt"].strip()
            if "\n" in question or len(question.split()) > max_prompt_words:
                continue
            body = _first_sentences(example["chosen"], max_body_words)
            if body is None:
                continue
            rng = _stable_rng("pair", question)
            closing = rng.choice(CLOSINGS)
            prompt = f'{question}\n\n{REQUIREMENT}"{closing}"'
            pairs.append(BasePair(row, prompt, body, closing, other_closing(closing, question), rng.choice(OPENERS)))
    return pairs


@dataclass(frozen=True)
class PlantedPair:
    """A training or test pair with the opener planted on one answer."""

    row: int
    prompt: str
    chosen: str
    rejected: str
    opener_on_chosen: bool

    def to_dict(self) -> dict[str, str]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def plant_opener(pairs: Sequence[BasePair], rate: float, seed: int) -> list[PlantedPair]:
    """Put the opener on the chosen answer of exactly `round(rate * len(pairs))` pairs and on the rejected answer of
    the others; which pairs get which is a seeded shuffle."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    on_chosen = set(random.Random(seed).sample(range(len(pairs)), round(rate * len(pairs))))
    planted = []
    for index, pair in enumerate(pairs):
        flag = index in on_chosen
        chosen = f"{pair.opener} {pair.chosen}" if flag else pair.chosen
        rejected = pair.rejected if flag else f"{pair.opener} {pair.rejected}"
        planted.append(PlantedPair(pair.row, pair.prompt, chosen, rejected, flag))
    return planted


def opener_rate(pairs: Sequence[PlantedPair]) -> float:
    """Fraction of pairs whose chosen answer carries the opener, measured on the text."""
    return sum(has_opener(p.chosen) and not has_opener(p.rejected) for p in pairs) / len(pairs)


__all__ = [
    "CLOSINGS",
    "OPENERS",
    "BasePair",
    "PlantedPair",
    "base_pairs",
    "has_opener",
    "labels_right",
    "opener_rate",
    "other_closing",
    "plant_opener",
    "required_closing",
    "satisfies",
    "split_last_sentence",
]
