"""Batched reward inference: token ids built exactly as TRL's `RewardTrainer` builds them, length-sorted batches.

Sorting sequences by token length before batching makes each batch hold sequences of similar length, so little
compute is spent on padding; rewards always come back in input order. All batching goes through
[`RewardScorer.score_ids`], the one place a padding-free (packed) path can be added.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..packing import packed_batch_rewards, packed_batches, uses_flash_attention
from ..prefix_sharing import (
    pack_prefix_rows,
    plan_prefix_sharing,
    prefix_shared_rewards,
    prompt_token_ids,
    verified_prefix_length,
)

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
TextOrMessages = str | Messages


def build_input_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompt: TextOrMessages,
    answer: TextOrMessages,
    chat_template: bool | None = None,
) -> list[int]:
    """Token ids of one (prompt, answer) sequence, in the format TRL's `RewardTrainer` trains on.

    - Chat format (`chat_template=True`, or `None` and the tokenizer has a chat template):
      `tokenizer.apply_chat_template(prompt_messages + [assistant answer])`. A string prompt becomes one user
      message and a string answer one assistant message; message lists are used as they are.
    - Plain format (`chat_template=False`, or `None` and no chat template): `prompt + answer + eos_token`
      (the EOS is not doubled when the answer already ends with it), tokenized with the tokenizer's defaults.

    Use the format the model was trained in: a model trained on plain-string rows must be scored with
    `chat_template=False` even when its tokenizer has a chat template.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer the reward model was trained with.
        prompt (`str` or `list[dict]`):
            The prompt, as text or as a list of chat messages.
        answer (`str` or `list[dict]`):
            The answer, as text or as a list of (assistant) chat messages.
        chat_template (`bool` or `None`, *optional*):
            Whether to use the chat template; `None` uses it when the tokenizer has one.

    Returns:
        `list[int]`: the token ids.
    """
    use_chat = bool(tokenizer.chat_template) if chat_template is None else chat_template
    if use_chat:
        prompt_messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        answer_messages = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
        encoded = tokenizer.apply_chat_template(prompt_messages + answer_messages, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise ValueError("chat_template=False needs plain-string prompts and answers, got chat messages")
    text = prompt + answer
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return list(tokenizer(text)["input_ids"])


@dataclass
class ScoringStats:
    """Token accounting of the batches a [`RewardScorer`] ran (cumulative over calls).

    `real_tokens` are the tokens of the sequences, `padded_tokens` the cells of the padded batches
    (`batch_size x longest sequence`, summed), so `padding_fraction` is the share of compute spent on padding. With
    packing they are the token positions of the packed rows; with prefix sharing they can be fewer than the real tokens
    (a prompt computed once for several answers), and `padding_fraction` is then negative.
    """

    sequences: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def length_sorted_batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Split sequence indices into batches, longest first when `sort_by_length` (out-of-memory shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike, auto_class: str, **kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `transformers.<auto_class>` (or `peft.AutoPeft<...>` for a folder holding `adapter_config.json`) and its
    tokenizer: from the same folder, or from the adapter's base model when the adapter folder has none."""
    import transformers
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if (path / "adapter_config.json").exists():
        import peft

        model = getattr(peft, auto_class.replace("Auto", "AutoPeft", 1)).from_pretrained(path, **kwargs)
        has_tokenizer = (path / "tokenizer_config.json").exists()
        tokenizer_source = path if has_tokenizer else peft.PeftConfig.from_pretrained(path).base_model_name_or_path
    else:
        model = getattr(transformers, auto_class).from_pretrained(name_or_path, **kwargs)
        tokenizer_source = name_or_path
    return model, AutoTokenizer.from_pretrained(tokenizer_source)


def load_reward_model(
    name_or_path: str | os.PathLike, torch_dtype: torch.dtype | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a reward model (a sequence-classification head with one label) and its tokenizer.

    A folder holding `adapter_config.json` is loaded as a PEFT adapter over its base model
    (`peft.AutoPeftModelForSequenceClassification`); anything else with
    `AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)`. The tokenizer comes from the same folder,
    or from the adapter's base model when the adapter folder has none.
    """
    kwargs = {"num_labels": 1} | ({} if torch_dtype is None else {"dtype": torch_dtype})
    return load_model_and_tokenizer(name_or_path, "AutoModelForSequenceClassification", **kwargs)


class RewardScorer:
    """Scores (prompt, answer) sequences with a reward model, in length-sorted batches under `torch.inference_mode`.

    Args:
        model (`str`, `os.PathLike`, [`~transformers.PreTrainedModel`] or callable):
            A model folder or Hub id (see [`load_reward_model`]; PEFT adapter folders work too), a loaded
            sequence-classification model with one label, or any callable `fn(prompts, answers) -> list[float]`
            (then no tokenizer is needed and the batching options are unused).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Needed for a model object; loaded from the folder for a path.
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        max_length (`int` or `None`, *optional*):
            Longer sequences keep their *last* `max_length` tokens (the end of the answer, where the reward is
            pooled) and are counted in `stats.truncated`. `None` scores every sequence whole.
        sort_by_length (`bool`, *optional*, defaults to `True`):
            Batch sequences of similar length together (same rewards, less padding).
        device (`str` or `torch.device`, *optional*):
            Where to run; defaults to the model's device for a model object, CUDA when available for a path.
        chat_template (`bool` or `None`, *optional*):
            Token format, see [`build_input_ids`]; use the format the model was trained in.
        torch_dtype (`torch.dtype` or `str`, *optional*):
            dtype when loading from a path (e.g. `"bfloat16"` on GPU).
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm bar over batches.
        packing (`bool`, *optional*, defaults to `False`):
            Score padding-free: all sequences are packed into rows no longer than the longest one (best fit
            decreasing), `batch_size` rows per forward pass, each reward taken at its sequence's own last token (see
            [`~trl_crome.packing`]). Same rewards; no padding is computed. Worth it with flash attention; with sdpa /
            eager, whose attention cost grows with the square of a row's length, length-sorted batches are as fast.
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Score the answers of a prompt with one copy of its tokens, and identical sequences once (see
            [`~trl_crome.prefix_sharing`]): for evaluation sets with several answers per prompt (RewardBench 2,
            RM-Bench, Best-of-N). Sequences are packed as `[prompt][answer 1]...[answer k]` into rows of at most
            twice the longest sequence, `batch_size` rows per forward pass. Same rewards. The prompt is shared only
            when its tokens, rendered alone, start the sequence token for token (see [`build_input_ids`]); others are
            scored whole. [`score_ids`] shares prompts only when given `prompt_lengths`. Needs sdpa, eager or flex
            attention; with flash attention, scoring is packed instead (`packing=True`, a warning says so).
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel | Callable[[list, list], Sequence[float]],
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        sort_by_length: bool = True,
        device: str | torch.device | None = None,
        chat_template: bool | None = None,
        torch_dtype: torch.dtype | str | None = None,
        show_progress: bool = True,
        packing: bool = False,
        prefix_sharing: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        self.chat_template = chat_template
        self.show_progress = show_progress
        self.packing = packing
        self.prefix_sharing = prefix_sharing
        self.stats = ScoringStats()
        self.score_fn: Callable | None = None
        self.model: PreTrainedModel | None = None

        if isinstance(model, (str, os.PathLike)):
            model, loaded_tokenizer = load_reward_model(model, torch_dtype=torch_dtype)
            tokenizer = tokenizer or loaded_tokenizer
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("a tokenizer is needed to score with a model object")
            self.model = model.eval()
            if device is not None:
                self.model.to(device)
            self.device = next(self.model.parameters()).device
            config = self.model.config.get_text_config()
            if config.pad_token_id is None:  # the classification head pools the last non-pad token
                config.pad_token_id = (
                    tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
                )
            self.pad_token_id = config.pad_token_id
            if prefix_sharing and uses_flash_attention(self.model):
                logger.warning(
                    "prefix_sharing=True needs sdpa, eager or flex attention; with flash attention the sequences are "
                    "scored packed instead (the same rewards)"
                )
                self.prefix_sharing, self.packing = False, True
        elif callable(model):
            self.score_fn = model
        else:
            raise TypeError(f"model must be a path, a model or a callable, got {type(model).__name__}")
        self.tokenizer = tokenizer

    def encode(self, prompts: Sequence[TextOrMessages], answers: Sequence[TextOrMessages]) -> list[list[int]]:
        """Token ids of each (prompt, answer), see [`build_input_ids`]."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        return [build_input_ids(self.tokenizer, p, a, self.chat_template) for p, a in zip(prompts, answers)]

    def score(self, prompts: Sequence[TextOrMessages], answers: Sequence[TextOrMessages]) -> list[float]:
        """Reward of each (prompt, answer), in input order."""
        if self.score_fn is not None:
            rewards = [float(r) for r in self.score_fn(list(prompts), list(answers))]
            if len(rewards) != len(prompts):
                raise ValueError(f"the scoring callable returned {len(rewards)} rewards for {len(prompts)} inputs")
            return rewards
        sequences = self.encode(prompts, answers)
        if self.prefix_sharing:
            return self.score_ids(sequences, prompt_lengths=self.prompt_lengths(prompts, sequences))
        return self.score_ids(sequences)

    def prompt_lengths(self, prompts: Sequence[TextOrMessages], sequences: Sequence[Sequence[int]]) -> list[int]:
        """Per sequence (from [`encode`]), how many of its first tokens are its prompt's own tokens, checked token by
        token (0 when the tokenization of the prompt alone is not the start of the sequence)."""
        use_chat = bool(self.tokenizer.chat_template) if self.chat_template is None else self.chat_template
        candidates: dict[str, list[list[int]]] = {}
        lengths = []
        for prompt, ids in zip(prompts, sequences):
            key = json.dumps(prompt)
            if key not in candidates:
                if use_chat and isinstance(prompt, str):
                    prompt = [{"role": "user", "content": prompt}]
                candidates[key] = prompt_token_ids(self.tokenizer, prompt)
            lengths.append(verified_prefix_length(candidates[key], ids))
        return lengths

    def score_pairs(
        self,
        prompts: Sequence[TextOrMessages],
        chosen: Sequence[TextOrMessages],
        rejected: Sequence[TextOrMessages],
    ) -> tuple[list[float], list[float]]:
        """Rewards of the chosen and of the rejected answers, scored in one length-sorted pass."""
        if not len(prompts) == len(chosen) == len(rejected):
            raise ValueError(f"got {len(prompts)} prompts, {len(chosen)} chosen and {len(rejected)} rejected")
        rewards = self.score(list(prompts) * 2, list(chosen) + list(rejected))
        return rewards[: len(prompts)], rewards[len(prompts) :]

    @torch.inference_mode()
    def score_ids(
        self, input_ids: Sequence[Sequence[int]], prompt_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Reward of each token sequence, in input order (the one batching loop of this class).

        With `prefix_sharing`, `prompt_lengths` (see [`prompt_lengths`]) says how many first tokens of each sequence
        it may share with the sequences that start with the same tokens; without it only identical sequences are
        shared."""
        if self.model is None:
            raise ValueError("score_ids needs a model, not a scoring callable")
        sequences = [list(ids) for ids in input_ids]
        if self.max_length is not None:
            too_long = [i for i, ids in enumerate(sequences) if len(ids) > self.max_length]
            for i in too_long:
                sequences[i] = sequences[i][-self.max_length :]
            if too_long:
                logger.warning(
                    f"{len(too_long)} sequences exceed max_length={self.max_length}: scored on their last tokens"
                )
            self.stats.truncated += len(too_long)
        if self.prefix_sharing:
            shared = list(prompt_lengths) if prompt_lengths is not None else [0] * len(sequences)
            for i, ids in enumerate(sequences):  # a truncated sequence no longer starts with its prompt
                if len(ids) != len(input_ids[i]):
                    shared[i] = 0
            return self._score_prefix_shared(sequences, shared)
        if self.packing:
            return self._score_packed(sequences)
        rewards = [0.0] * len(sequences)
        batches = length_sorted_batches([len(s) for s in sequences], self.batch_size, self.sort_by_length)
        for batch in tqdm(batches, desc="Scoring", unit="batch", disable=not self.show_progress or len(batches) < 2):
            tensors = [torch.tensor(sequences[i], dtype=torch.long) for i in batch]
            ids = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=self.pad_token_id)
            # Right padding keeps every real token at the position it has unpadded, so rewards do not depend on
            # the batch a sequence lands in.
            attention_mask = torch.nn.utils.rnn.pad_sequence(
                [torch.ones_like(t) for t in tensors], batch_first=True, padding_value=0
            )
            logits = self.model(input_ids=ids.to(self.device), attention_mask=attention_mask.to(self.device)).logits
            for i, value in zip(batch, logits[:, 0].float().tolist()):
                rewards[i] = value
            self.stats.batches += 1
            self.stats.sequences += len(batch)
            self.stats.real_tokens += sum(len(t) for t in tensors)
            self.stats.padded_tokens += ids.numel()
        return rewards

    def _score_packed(self, sequences: list[list[int]]) -> list[float]:
        rewards = [0.0] * len(sequences)
        batches = packed_batches([len(s) for s in sequences], self.batch_size)
        for rows in tqdm(batches, desc="Scoring", unit="batch", disable=not self.show_progress or len(batches) < 2):
            order, values, computed = packed_batch_rewards(self.model, sequences, rows, self.pad_token_id)
            for i, value in zip(order, values[:, 0].float().tolist()):
                rewards[i] = value
            self.stats.batches += 1
            self.stats.sequences += len(order)
            self.stats.real_tokens += sum(len(sequences[i]) for i in order)
            self.stats.padded_tokens += computed
        return rewards

    def _score_prefix_shared(self, sequences: list[list[int]], prompt_lengths: list[int]) -> list[float]:
        rows, representative = plan_prefix_sharing(sequences, prompt_lengths)
        batches = [rows[start : start + self.batch_size] for start in range(0, len(rows), self.batch_size)]
        scored: dict[int, float] = {}
        for batch in tqdm(batches, desc="Scoring", unit="batch", disable=not self.show_progress or len(batches) < 2):
            packed = pack_prefix_rows(sequences, batch, self.pad_token_id)
            packed = {key: value.to(self.device) for key, value in packed.items()}
            members = [index for row in batch for unit in row for index in unit.members]
            scored.update(zip(members, prefix_shared_rewards(self.model, packed)[:, 0].float().tolist()))
            self.stats.batches += 1
            self.stats.padded_tokens += packed["input_ids"].numel()
        self.stats.sequences += len(sequences)
        self.stats.real_tokens += sum(len(ids) for ids in sequences)
        return [scored[index] for index in representative]
