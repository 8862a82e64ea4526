"""Padding-free preference batches: the collators of `padding_free=True` and `prefix_sharing=True` training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin

from ..packing import pack_sequences
from ..prefix_sharing import pack_prefix_shared
from .prompt_groups import PROMPT_LENGTH_COLUMN


@dataclass
class DataCollatorForPaddingFreePreference(DataCollatorMixin):
    """
    Padding-free counterpart of TRL's [`~trl.trainer.reward_trainer.DataCollatorForPreference`]: the chosen and the
    rejected sequences of a batch are packed, without padding, into rows of at most `max_tokens` tokens (best fit
    decreasing), with `position_ids` restarting at 0 for each sequence and no attention mask.

    Returns a dictionary with the keys of [`~trl_crome.packing.pack_rows`] (`input_ids`, `position_ids`,
    `pooled_index`, `seq_lengths`, and flash attention's `cu_seq_lens_q/k`, `max_length_q/k`), where sequence `i` of
    `pooled_index` / `seq_lengths` is the chosen answer of example `i` and sequence `len(examples) + i` its rejected
    answer, as in the padded collator; plus `"margin"` when the examples have one.

    Args:
        pad_token_id (`int`):
            Token id that fills the end of shorter rows (and that the score head's pooling skips).
        max_tokens (`int`, *optional*):
            Token budget of one packed row. `None` uses the longest sequence of the batch, so attention, which costs
            the square of a row's length with sdpa / eager / flex, never costs more than in the padded batch.
        one_row (`bool`, *optional*, defaults to `False`):
            Pack the whole batch into one row, for flash attention (its varlen kernel costs nothing across sequences).
        pad_to_multiple_of (`int`, *optional*):
            Round the row length up to a multiple of this value.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.

    Example:

    ```python
    >>> collator = DataCollatorForPaddingFreePreference(pad_token_id=0)
    >>> batch = collator([{"chosen_ids": [1, 2, 3], "rejected_ids": [4, 5]}, {"chosen_ids": [6], "rejected_ids": [7]}])
    >>> batch["input_ids"], batch["position_ids"]
    (tensor([[1, 2, 3], [4, 5, 6], [7, 0, 0]]), tensor([[0, 1, 2], [0, 1, 0], [0, 0, 1]]))
    ```
    """

    pad_token_id: int
    max_tokens: int | None = None
    one_row: bool = False
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sequences = [example["chosen_ids"] for example in examples] + [example["rejected_ids"] for example in examples]
        output = pack_sequences(
            sequences,
            pad_token_id=self.pad_token_id,
            max_tokens=self.max_tokens,
            one_row=self.one_row,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        return _with_margin(output, examples)


@dataclass
class DataCollatorForPrefixSharingPreference(DataCollatorMixin):
    """
    Prefix-sharing counterpart of [`DataCollatorForPaddingFreePreference`] (the collator of `prefix_sharing=True`):
    the sequences of a batch that start with the same verified prompt tokens (the `"prompt_length"` of each example,
    see [`~trl_crome.trainer.prompt_groups.add_prompt_columns`]; 0 or absent shares nothing) are laid out as
    `[prompt][answer 1]...[answer k]` units, identical sequences once, and the units packed into rows of at most
    `max_tokens` tokens (see [`~trl_crome.prefix_sharing.pack_prefix_shared`]).

    Returns a dictionary with the keys of [`~trl_crome.prefix_sharing.pack_prefix_shared`] (`input_ids`,
    `position_ids`, `segment_ids`, `branch_ids`, `pooled_index`, `seq_lengths`), where sequence `i` of `pooled_index`
    / `seq_lengths` is the chosen answer of example `i` and sequence `len(examples) + i` its rejected answer, as in the
    padded collator; plus `"margin"` when the examples have one.

    Args:
        pad_token_id (`int`):
            Token id that fills the end of shorter rows (and that the score head's pooling skips).
        max_tokens (`int`, *optional*):
            Token budget of one row. `None` uses twice the longest sequence of the batch
            ([`~trl_crome.prefix_sharing.default_max_tokens`]).
        pad_to_multiple_of (`int`, *optional*):
            Round the row length up to a multiple of this value.
        deduplicate (`bool`, *optional*, defaults to `True`):
            Lay out identical sequences once.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.

    Example:

    ```python
    >>> collator = DataCollatorForPrefixSharingPreference(pad_token_id=0)
    >>> batch = collator([{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 2, 4, 5], "prompt_length": 2}])
    >>> batch["input_ids"], batch["position_ids"], batch["branch_ids"]
    (tensor([[1, 2, 3, 4, 5]]), tensor([[0, 1, 2, 2, 3]]), tensor([[0, 0, 1, 2, 2]]))
    ```
    """

    pad_token_id: int
    max_tokens: int | None = None
    pad_to_multiple_of: int | None = None
    deduplicate: bool = True
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sequences = [example["chosen_ids"] for example in examples] + [example["rejected_ids"] for example in examples]
        prefix_lengths = [example.get(PROMPT_LENGTH_COLUMN, 0) for example in examples] * 2
        output = pack_prefix_shared(
            sequences,
            prefix_lengths,
            pad_token_id=self.pad_token_id,
            max_tokens=self.max_tokens,
            pad_to_multiple_of=self.pad_to_multiple_of,
            deduplicate=self.deduplicate,
        )
        return _with_margin(output, examples)


def _with_margin(output: dict[str, Any], examples: list[dict[str, Any]]) -> dict[str, Any]:
    if "margin" in examples[0]:
        output["margin"] = torch.tensor([example["margin"] for example in examples], dtype=torch.float)
    return output
