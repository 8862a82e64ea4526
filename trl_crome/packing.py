"""Padding-free (packed) batches for reward models, shared by training and evaluation.

Several token sequences share one row of the batch, with `position_ids` restarting at 0 for each sequence and no
`attention_mask`. Transformers then keeps the sequences apart by itself: sdpa, eager and flex attention get a
block-diagonal causal mask (`masking_utils.find_packed_sequence_indices` detects the restarts in `position_ids`, when
`attention_mask` is None and no cache is built), and flash attention runs its varlen kernel on the `cu_seq_lens_q/k`
and `max_length_q/k` computed here on the CPU. A `...ForSequenceClassification` model pools one token per row, so the
reward of each sequence is taken from the score head's per-token output at that sequence's own pooled token.

This module never imports the trainer: evaluation uses it for no-grad scoring, the trainer for padding-free training.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

# Keys of a packed batch that the model reads; the others (`pooled_index`, `seq_lengths`) are for pooling and metrics.
FLASH_ATTENTION_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group sequence indices into bins holding at most `capacity` tokens each, by best fit decreasing.

    Sequences are placed longest first, each into the bin whose free space fits it most tightly (a new bin when none
    fits), which leaves little free space in practice (at most 11/9 of the optimal number of bins, plus one).

    Args:
        lengths (`Sequence[int]`):
            Token count of each sequence.
        capacity (`int`):
            Token budget of one bin (one packed row).

    Returns:
        `list[list[int]]`: the indices of `lengths` in each bin; every index appears exactly once.

    Raises:
        `ValueError`: a sequence is empty or longer than `capacity` (the message names its index).
    """
    if capacity < 1:
        raise ValueError(f"the token budget of a packed row must be >= 1, got {capacity}")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin index), sorted: bisect finds the tightest fit
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        if length < 1:
            raise ValueError(f"sequence {index} is empty; a packed row needs at least one token per sequence")
        if length > capacity:
            raise ValueError(
                f"sequence {index} has {length} tokens, more than the budget of {capacity} tokens per packed row"
            )
        position = bisect.bisect_left(free, (length, -1))
        if position < len(free):
            space, bin_index = free.pop(position)
        else:
            space, bin_index = capacity, len(bins)
            bins.append([])
        bins[bin_index].append(index)
        if space > length:
            bisect.insort(free, (space - length, bin_index))
    return bins


def pooled_token(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Index of the token a `...ForSequenceClassification` model pools: the last one that is not `pad_token_id`.

    This is the rule of transformers' `GenericForSequenceClassification` (0 when every token is padding; the last
    token when there is no pad token), so packed rewards equal padded ones even when the pad token is also the EOS.
    """
    if pad_token_id is not None:
        for position in range(len(ids) - 1, -1, -1):
            if ids[position] != pad_token_id:
                return position
        return 0
    return len(ids) - 1


def pack_rows(
    rows: Sequence[Sequence[Sequence[int]]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """Lay out rows of sequences as one padding-free batch.

    Rows shorter than the longest one are filled with `pad_token_id` as a sequence of their own (its positions restart
    at 0), so the filler never joins a real sequence's attention block and is never pooled.

    Args:
        rows (`Sequence[Sequence[Sequence[int]]]`):
            The token ids of the sequences of each row.
        pad_token_id (`int`):
            Token id of the filler at the end of shorter rows; also the pad token the score head's pooling skips.
        pad_to_multiple_of (`int`, *optional*):
            Round the row length up to a multiple of this value.

    Returns:
        `dict` with
        - `"input_ids"`, `"position_ids"` (`torch.LongTensor` of shape `(num_rows, row_length)`);
        - `"pooled_index"` (`torch.LongTensor` of shape `(num_sequences,)`): flat index, into the `num_rows *
          row_length` tokens, of each sequence's pooled token, sequences in row-major order;
        - `"seq_lengths"` (`torch.LongTensor` of shape `(num_sequences,)`): the real tokens of each sequence;
        - `"cu_seq_lens_q"`, `"cu_seq_lens_k"` (`torch.IntTensor`) and `"max_length_q"`, `"max_length_k"` (`int`):
          the boundaries of every sequence and filler in the flattened tokens, as flash attention reads them.
    """
    row_length = max(sum(len(ids) for ids in row) for row in rows)
    if pad_to_multiple_of:
        row_length = -(-row_length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), row_length), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), row_length), dtype=torch.long)
    pooled_index, seq_lengths, segment_lengths = [], [], []
    for row_index, row in enumerate(rows):
        start = 0
        for ids in row:
            end = start + len(ids)
            input_ids[row_index, start:end] = torch.as_tensor(ids, dtype=torch.long)
            position_ids[row_index, start:end] = torch.arange(len(ids))
            pooled_index.append(row_index * row_length + start + pooled_token(ids, pad_token_id))
            seq_lengths.append(len(ids))
            segment_lengths.append(len(ids))
            start = end
        if start < row_length:
            position_ids[row_index, start:] = torch.arange(row_length - start)
            segment_lengths.append(row_length - start)
    cu_seq_lens = torch.zeros(len(segment_lengths) + 1, dtype=torch.int32)
    cu_seq_lens[1:] = torch.tensor(segment_lengths).cumsum(0)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "pooled_index": torch.tensor(pooled_index, dtype=torch.long),
        "seq_lengths": torch.tensor(seq_lengths, dtype=torch.long),
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max(segment_lengths),
        "max_length_k": max(segment_lengths),
    }


def pack_sequences(
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    max_tokens: int | None = None,
    one_row: bool = False,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Pack sequences into padding-free rows; `pooled_index` and `seq_lengths` follow the order of `sequences`.

    Args:
        sequences (`Sequence[Sequence[int]]`):
            Token ids of each sequence.
        pad_token_id (`int`):
            See [`pack_rows`].
        max_tokens (`int`, *optional*):
            Token budget of one row, filled by [`best_fit_decreasing`]. `None` uses the longest sequence, so no row
            is longer than a padded batch's rows.
        one_row (`bool`, *optional*, defaults to `False`):
            Put every sequence in one row, in order (for flash attention, whose varlen kernel costs nothing across
            sequences; mask-based attention would cost the square of the whole batch's tokens).
        pad_to_multiple_of (`int`, *optional*):
            See [`pack_rows`].

    Returns:
        `dict`: see [`pack_rows`].
    """
    if not sequences:
        raise ValueError("cannot pack an empty list of sequences")
    if one_row:
        bins = [list(range(len(sequences)))]
    else:
        lengths = [len(ids) for ids in sequences]
        bins = best_fit_decreasing(lengths, max_tokens if max_tokens is not None else max(lengths))
    packed = pack_rows([[sequences[i] for i in row] for row in bins], pad_token_id, pad_to_multiple_of)
    order = torch.tensor([i for row in bins for i in row])
    for key in ("pooled_index", "seq_lengths"):
        in_input_order = torch.empty_like(packed[key])
        in_input_order[order] = packed[key]
        packed[key] = in_input_order
    return packed


def packed_batches(
    lengths: Sequence[int], rows_per_batch: int, max_tokens: int | None = None
) -> list[list[list[int]]]:
    """Plan padding-free inference: all sequences packed into rows (best fit decreasing), `rows_per_batch` rows per
    forward pass, longest sequences first (an out-of-memory error shows up at once).

    Args:
        lengths (`Sequence[int]`):
            Token count of each sequence.
        rows_per_batch (`int`):
            Rows per forward pass.
        max_tokens (`int`, *optional*):
            Token budget of one row; `None` uses the longest sequence, so a forward pass holds at most as many tokens
            as a padded batch of `rows_per_batch` sequences.

    Returns:
        `list[list[list[int]]]`: for each forward pass, the sequence indices of each row.
    """
    if not lengths:
        return []
    rows = best_fit_decreasing(lengths, max_tokens if max_tokens is not None else max(lengths))
    return [rows[start : start + rows_per_batch] for start in range(0, len(rows), rows_per_batch)]


def packed_batch_rewards(
    model: nn.Module, sequences: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[list[int], torch.Tensor, int]:
    """Rewards of one planned forward pass (see [`packed_batches`]), on the model's device.

    With flash attention the rows are laid end to end in one row (no filler at all); otherwise each is its own row.

    Returns:
        `tuple[list[int], torch.Tensor, int]`: the indices of the scored sequences, their rewards (same order, shape
        `(num_sequences, num_labels)`), and the number of token positions computed (real tokens plus filler).
    """
    order = [index for row in rows for index in row]
    if uses_flash_attention(model):
        layout = [[sequences[index] for index in order]]
    else:
        layout = [[sequences[index] for index in row] for row in rows]
    packed = pack_rows(layout, pad_token_id)
    device = next(model.parameters()).device
    packed = {key: value.to(device) if torch.is_tensor(value) else value for key, value in packed.items()}
    return order, packed_rewards(model, packed), packed["input_ids"].numel()


def uses_flash_attention(model: nn.Module) -> bool:
    """Whether the model runs a flash-attention kernel (`flash_attention_2/3`, `kernels-community/flash-attn...`)."""
    config = getattr(extract_model_from_parallel(model), "config", None)
    return "flash" in (getattr(config, "_attn_implementation", None) or "")


def score_head(model: nn.Module) -> nn.Module:
    """The score head (`model.score`) of a sequence-classification model, unwrapping DDP / DeepSpeed / FSDP and PEFT.

    With PEFT (`LoraConfig(task_type="SEQ_CLS")`), this is the `ModulesToSaveWrapper` around the trained head.
    """
    model = extract_model_from_parallel(model)
    if hasattr(model, "get_base_model"):  # a PeftModel
        if model.active_peft_config.is_prompt_learning:
            raise ValueError("padding-free rewards do not support prompt-learning PEFT methods (virtual tokens)")
        model = model.get_base_model()
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"padding-free rewards need a sequence-classification model with a `score` head (Llama, Qwen2, Gemma-2, "
            f"Mistral, ...); {type(model).__name__} has none"
        )
    return head


def packed_rewards(model: nn.Module, packed: Mapping[str, Any], attention_mask: Any = None) -> torch.Tensor:
    """Reward of each sequence of a packed batch, equal to what the padded batch gives.

    The model runs its own forward (so DDP, DeepSpeed, FSDP and PEFT wrappers work as usual) on the packed rows, and
    a forward hook keeps the score head's per-token output, from which each sequence's pooled token is gathered. The
    head is one `hidden_size x num_labels` matrix, so scoring every token costs next to nothing.

    Args:
        model (`torch.nn.Module`):
            A `...ForSequenceClassification` model, possibly wrapped (see [`score_head`]).
        packed (`Mapping`):
            A batch from [`pack_sequences`] / [`pack_rows`], on the model's device.
        attention_mask (*optional*):
            `None` lets transformers build the block-diagonal mask from the restarts in `position_ids`; a prepared
            mask (a 4D mask, a `BlockMask`, or a dict of them per layer type) replaces it, as prefix sharing does
            (see [`~trl_crome.prefix_sharing.prefix_attention_mask`]).

    Returns:
        `torch.Tensor` of shape `(num_sequences, num_labels)`: the rewards, in the order of `packed["pooled_index"]`.
    """
    captured: list[torch.Tensor] = []
    handle = score_head(model).register_forward_hook(lambda module, args, output: captured.append(output))
    inputs = {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"]}
    if attention_mask is None and uses_flash_attention(model):
        inputs.update({key: packed[key] for key in FLASH_ATTENTION_KEYS})
    try:
        # Without a prepared mask and without a cache, transformers builds the block-diagonal mask itself.
        model(**inputs, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    per_token = captured[-1]
    return per_token.reshape(-1, per_token.shape[-1])[packed["pooled_index"]]
