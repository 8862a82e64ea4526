"""Step 5: keep the augmented pairs a baseline reward model is wrong or unsure about.

A pair with baseline margin `m = r(prompt, chosen) - r(prompt, rejected)` and target `t` (1 for a preference, 0.5 for
a tie) is kept when `|sigmoid(m) - t| >= tau`: pairs the baseline already gets right with confidence teach little.
Original pairs are always kept. The baseline is any callable `(prompts, answers_a, answers_b) -> margins`, or a
Hugging Face sequence-classification reward model (a path, or a `(model, tokenizer)` pair).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..data import KIND_ORIGINAL
from .pairs import CromePair, Turns

# (prompts, answers_a, answers_b) -> one margin r_a - r_b per pair.
BaselineFn = Callable[[list[Turns], list[Turns], list[Turns]], Sequence[float]]

if TYPE_CHECKING:  # torch and transformers load only when a baseline model is used: an LLM-only run needs neither
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Baseline = str | os.PathLike | tuple[PreTrainedModel, PreTrainedTokenizerBase] | BaselineFn


class RewardModelBaseline:
    """Margins from a Hugging Face reward model (`...ForSequenceClassification` with one label).

    Sequences are built as [`~trl.RewardTrainer`] builds them: the chat template for conversational data, `prompt +
    answer + eos` for plain text. Each distinct (prompt, answer) is scored once, in length-sorted batches.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The reward model.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer.
        batch_size (`int`):
            Sequences per forward pass.
        max_length (`int`):
            Longer sequences keep their last `max_length` tokens, where the reward is read.
        show_progress (`bool`):
            Whether to show a progress bar.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 16,
        max_length: int = 1024,
        show_progress: bool = True,
    ):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length, self.show_progress = batch_size, max_length, show_progress

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> RewardModelBaseline:
        """Load a reward model and its tokenizer from a local folder or a Hub name."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        return cls(model, AutoTokenizer.from_pretrained(path), **kwargs)

    def _token_ids(self, prompt: Turns, answer: Turns) -> list[int]:
        if isinstance(prompt, str):
            text = prompt + answer
            if self.tokenizer.eos_token and not text.endswith(self.tokenizer.eos_token):
                text += self.tokenizer.eos_token
            ids = self.tokenizer(text)["input_ids"]
        else:
            ids = self.tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
        return ids[-self.max_length :]

    def rewards(self, prompts: Sequence[Turns], answers: Sequence[Turns]) -> list[float]:
        """The reward of each `(prompt, answer)`."""
        import torch

        sequences = [self._token_ids(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        device = next(self.model.parameters()).device
        rewards = [0.0] * len(sequences)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="Filtering: baseline rewards", unit="batch", disable=not self.show_progress):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer.pad({"input_ids": [sequences[i] for i in batch]}, return_tensors="pt").to(device)
            with torch.inference_mode():
                scores = self.model(**inputs).logits[:, 0].float().tolist()
            for index, score in zip(batch, scores):
                rewards[index] = score
        return rewards

    def __call__(self, prompts: list[Turns], answers_a: list[Turns], answers_b: list[Turns]) -> list[float]:
        # Answers recur across pairs (an original answer sits in its causal and neutral pairs): score each once.
        unique: dict[str, int] = {}
        items: list[tuple[Turns, Turns]] = []
        for prompt, answer in zip(prompts + prompts, answers_a + answers_b):
            key = json.dumps([prompt, answer], ensure_ascii=False)
            if key not in unique:
                unique[key] = len(items)
                items.append((prompt, answer))
        scores = self.rewards([p for p, _ in items], [a for _, a in items])
        keys = [json.dumps([p, a], ensure_ascii=False) for p, a in zip(prompts + prompts, answers_a + answers_b)]
        n = len(prompts)
        return [scores[unique[keys[i]]] - scores[unique[keys[n + i]]] for i in range(n)]


def as_baseline(
    baseline: Baseline, batch_size: int = 16, max_length: int = 1024, show_progress: bool = True
) -> BaselineFn:
    """Turn a model path, a `(model, tokenizer)` pair or a margin callable into a margin callable."""
    kwargs = dict(batch_size=batch_size, max_length=max_length, show_progress=show_progress)
    if isinstance(baseline, str | os.PathLike):
        return RewardModelBaseline.from_pretrained(baseline, **kwargs)
    if isinstance(baseline, tuple) and len(baseline) == 2:
        return RewardModelBaseline(baseline[0], baseline[1], **kwargs)
    if hasattr(baseline, "config") and hasattr(baseline, "parameters"):  # a model alone: it is callable, but not so
        raise TypeError("Pass a baseline model together with its tokenizer: baseline=(model, tokenizer).")
    if callable(baseline):
        return baseline
    raise TypeError(
        "baseline must be a model path, a (model, tokenizer) pair, or a callable (prompts, answers_a, answers_b) -> "
        f"margins; got {type(baseline).__name__}."
    )


def is_uncertain(margin: float, target: float, tau: float) -> bool:
    """Whether the baseline is wrong or unsure about a pair: `|sigmoid(margin) - target| >= tau`."""
    probability = 0.5 * (1.0 + math.tanh(0.5 * margin))  # sigmoid, without overflow for large margins
    return abs(probability - target) >= tau


def filter_pairs(pairs: Sequence[CromePair], baseline: BaselineFn, tau: float) -> tuple[list[CromePair], Counter[str]]:
    """Keep the original pairs and the augmented pairs the baseline is unsure about, in the same order.

    Returns:
        `(kept, dropped)`: the kept pairs and the number of dropped pairs per kind.
    """
    augmented = [pair for pair in pairs if pair.kind != KIND_ORIGINAL]
    margins = list(
        baseline([p.prompt for p in augmented], [p.chosen for p in augmented], [p.rejected for p in augmented])
    )
    if len(margins) != len(augmented):
        raise ValueError(f"The baseline returned {len(margins)} margins for {len(augmented)} pairs.")
    keep = {id(pair): is_uncertain(m, pair.target, tau) for pair, m in zip(augmented, margins)}
    kept, dropped = [], Counter()
    for pair in pairs:
        if keep.get(id(pair), True):
            kept.append(pair)
        else:
            dropped[pair.kind] += 1
    return kept, dropped
