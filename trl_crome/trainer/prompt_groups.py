"""Which pairs share a prompt: the columns prefix sharing reads, and the sampler that batches a prompt's pairs.

`prompt_length` is the number of leading tokens of `chosen_ids` and `rejected_ids` that are the pair's prompt as the
tokenizer or chat template renders it, checked token by token (0: the pair shares nothing). `prompt_hash` identifies
the rendered prompt, for [`PromptGroupedSampler`].
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase
from trl.data_utils import extract_prompt, get_dataset_column_names

from ..prefix_sharing import prompt_token_ids, verified_prefix_length

logger = get_logger(__name__)

PROMPT_LENGTH_COLUMN = "prompt_length"
PROMPT_HASH_COLUMN = "prompt_hash"


def _token_hash(ids: Sequence[int]) -> int:
    digest = hashlib.blake2b(json.dumps(list(ids)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class _PromptColumns:
    """The `map` function: the prompt's rendered tokens, checked against the pair's two sequences."""

    def __init__(self, processing_class: PreTrainedTokenizerBase, streamed_dataset_name: str | None = None):
        self.processing_class = processing_class
        self.streamed_dataset_name = streamed_dataset_name  # warn at the first unshared row (nothing is counted)
        self.warned = False

    def __call__(self, example: dict[str, Any], index: int) -> dict[str, int]:
        prompt = example["prompt"] if "prompt" in example else extract_prompt(example)["prompt"]
        # The same template arguments as TRL's tokenization of the full sequences.
        tools = example.get("tools")
        template_kwargs = {"tools": json.loads(tools) if isinstance(tools, str) else tools}
        template_kwargs.update(example.get("chat_template_kwargs") or {})
        candidates = prompt_token_ids(self.processing_class, prompt, **template_kwargs)
        length = verified_prefix_length(candidates, example["chosen_ids"], example["rejected_ids"])
        if length == 0 and self.streamed_dataset_name and not self.warned:
            self.warned = True
            logger.warning(
                f"prefix sharing: pairs of the streamed {self.streamed_dataset_name} dataset (first: row {index}) "
                f"{_UNSHARED}; later ones are not reported"
            )
        return {PROMPT_LENGTH_COLUMN: length, PROMPT_HASH_COLUMN: _token_hash(candidates[0])}


_UNSHARED = (
    "do not start with their prompt's own tokens (the tokenizer or chat template joins the answer's first token to "
    "the prompt's last), so they are computed without sharing their prompt: same results, less speed-up"
)


def add_prompt_columns(
    dataset: Dataset | IterableDataset, processing_class: PreTrainedTokenizerBase, dataset_name: str, num_proc=None
) -> Dataset | IterableDataset:
    """Add `prompt_length` and `prompt_hash` to a tokenized preference dataset (see the module docstring).

    The prompt is the `prompt` column, or for an implicit prompt the leading part that `chosen` and `rejected` share
    (TRL's `extract_prompt`). Pairs whose sequences do not start with their prompt's own tokens (a tokenizer or chat
    template that merges the answer's first token with the prompt's last) get `prompt_length` 0 and are trained
    without sharing; one warning says how many (for a streamed dataset: the first one). A dataset with neither a
    prompt nor the texts (pre-tokenized ids only) is returned unchanged, with a warning.
    """
    columns = get_dataset_column_names(dataset)
    if "prompt" not in columns and not {"chosen", "rejected"} <= set(columns):
        logger.warning(
            f"prefix sharing: the {dataset_name} dataset has no `prompt` column (nor texts to find one in), so its "
            "pairs share no prompt tokens; identical sequences in a batch are still computed once"
        )
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.map(_PromptColumns(processing_class, dataset_name), with_indices=True)
    desc = f"Finding the prompt tokens of the {dataset_name} dataset"
    dataset = dataset.map(_PromptColumns(processing_class), with_indices=True, num_proc=num_proc, desc=desc)
    unshared = [index for index, length in enumerate(dataset[PROMPT_LENGTH_COLUMN]) if length == 0]
    if unshared:
        logger.warning(
            f"prefix sharing: {len(unshared)} of {len(dataset)} pairs of the {dataset_name} dataset (first: row "
            f"{unshared[0]}) {_UNSHARED}"
        )
    return dataset


class PromptGroupedSampler(Sampler[int]):
    """
    Yields the pairs of each prompt one after the other, prompts in a seeded random order that changes every epoch.

    Consecutive indices form the batches, so a batch holds all the pairs of a few prompts (a batch boundary may split
    one prompt's pairs over two batches), which gives prefix sharing something to share. Within a prompt the pairs
    keep their dataset order. Every index appears exactly once per epoch; the order depends only on `seed` and the
    epoch (see `set_epoch`), so a run resumed from a checkpoint sees the same batches.

    Args:
        group_keys (`Sequence[Hashable]`):
            Per row, the key of its prompt (rows with equal keys are grouped).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the order of the prompts.
    """

    def __init__(self, group_keys: Sequence[Hashable], seed: int = 0):
        groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(group_keys):
            groups.setdefault(key, []).append(index)
        self.groups = list(groups.values())
        self.num_samples = len(group_keys)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = list(range(len(self.groups)))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        for group in order:
            yield from self.groups[group]
