"""Prefix sharing: the sequences of a batch that start with the same prompt are computed with one copy of its tokens.

A reward model reads every answer after its prompt, and Crome data has many answers per prompt (the original pair,
the causal pairs, the neutrals put under it), so a padding-free batch still computes most prompts several times.
Here the sequences that share a prompt are laid out as one *unit* `[prompt][answer 1][answer 2]...[answer k]`, with
position ids continuing from the prompt's end for every answer, and an attention mask in which each answer attends
to the prompt and causally to itself only. A causal model computes the prompt's tokens identically in every sequence
that starts with them, so rewards, losses and gradients are those of the padded batch. Identical sequences (Crome's
original chosen answer reappears in every degrade pair, the rejected one in every upgrade pair) are computed once.
Units are packed into rows of at most `max_tokens` tokens by best fit decreasing, as in [`~trl_crome.packing`].

The mask is built by transformers' own mask interface for the model's attention implementation, from a mask function
over per-token unit, branch and position ids: a boolean mask for sdpa, an additive float mask for eager, a `BlockMask`
for flex attention (which skips the blocks that are fully masked). Sliding-window layers (Gemma-2, Mistral) get their
window measured in positions, so it matches the padded sequence. Flash attention's varlen kernel cannot express "the
prompt and itself only" (its `cu_seqlens` describe disjoint sequences): callers fall back to padding-free batches.

This module never imports the trainer: evaluation uses it for no-grad scoring, the trainer for training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from .packing import best_fit_decreasing, packed_rewards, pooled_token, uses_flash_attention

# Per-token layout keys of a prefix-shared batch, beside `input_ids` and `position_ids`; never passed to the model.
LAYOUT_KEYS = ("segment_ids", "branch_ids")
# Layer types whose mask prefix sharing builds, and the config attribute holding their window (None: no window).
_LAYER_WINDOWS = {"full_attention": None, "sliding_attention": "sliding_window"}


class PrefixUnit(NamedTuple):
    """One unit of a row: the first `prefix_length` tokens of its members, once, then each member's remaining tokens.

    `members` are indices of sequences that all start with the same `prefix_length` tokens; with `prefix_length=0` a
    unit is a single whole sequence.
    """

    prefix_length: int
    members: tuple[int, ...]

    def num_tokens(self, sequences: Sequence[Sequence[int]]) -> int:
        return self.prefix_length + sum(len(sequences[i]) - self.prefix_length for i in self.members)


def shared_prefix_length(prefix_ids: Sequence[int], sequence_ids: Sequence[int]) -> int:
    """`len(prefix_ids)` when `sequence_ids` starts with exactly these tokens and has at least one token more, else 0.

    This is the token-by-token check that a prompt tokenized on its own is the start of the prompt + answer sequence:
    a tokenizer or chat template may merge the answer's first characters with the prompt's last token, and then the
    prompt's hidden states differ between the two, so the sequence must not share them.
    """
    length = len(prefix_ids)
    if 0 < length < len(sequence_ids) and list(sequence_ids[:length]) == list(prefix_ids):
        return length
    return 0


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], **template_kwargs
) -> list[list[int]]:
    """The token ids of a prompt as it starts a tokenized prompt + answer sequence, most likely candidate first.

    A plain-text prompt is tokenized on its own, as TRL tokenizes `prompt + answer`. A conversational prompt is
    rendered by the chat template with the generation prompt (the assistant header every answer follows), then
    without it. Check each candidate against the real sequences with [`shared_prefix_length`]: only a verified
    candidate may be shared.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer that tokenized the sequences.
        prompt (`str` or `list[dict]`):
            The prompt, as text or as chat messages.
        **template_kwargs:
            Passed to `apply_chat_template` (e.g. `tools`), as for the full sequences.
    """
    if isinstance(prompt, str):
        return [list(tokenizer(text=prompt)["input_ids"])]
    return [
        list(
            tokenizer.apply_chat_template(
                prompt, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt, **template_kwargs
            )["input_ids"]
        )
        for generation_prompt in (True, False)
    ]


def verified_prefix_length(candidates: Sequence[Sequence[int]], *sequences: Sequence[int]) -> int:
    """Length of the first candidate prefix (see [`prompt_token_ids`]) that starts every one of `sequences` and leaves
    each at least one token of its own; 0 when none does (the sequences then share nothing)."""
    for candidate in candidates:
        if all(shared_prefix_length(candidate, ids) for ids in sequences):
            return len(candidate)
    return 0


def default_max_tokens(lengths: Sequence[int]) -> int:
    """Row budget when none is given: twice the longest sequence, so a prompt's unit can hold several of its answers
    while a dense (sdpa / eager) mask, whose cost grows with the square of a row's length, stays moderate."""
    return 2 * max(lengths)


def plan_prefix_sharing(
    sequences: Sequence[Sequence[int]],
    prefix_lengths: Sequence[int],
    max_tokens: int | None = None,
    deduplicate: bool = True,
) -> tuple[list[list[PrefixUnit]], list[int]]:
    """Group sequences into units by shared prefix and pack the units into rows.

    Args:
        sequences (`Sequence[Sequence[int]]`):
            Token ids of each sequence.
        prefix_lengths (`Sequence[int]`):
            Per sequence, how many of its first tokens it may share (its verified prompt, see
            [`shared_prefix_length`]); 0 shares nothing. Sequences share a unit when these tokens are identical.
        max_tokens (`int`, *optional*):
            Token budget of one row; a prompt whose answers do not fit in one unit gets several. `None` uses
            [`default_max_tokens`].
        deduplicate (`bool`, *optional*, defaults to `True`):
            Lay out identical sequences once (their rewards are identical).

    Returns:
        `(rows, representative)`: the units of each row, and for each sequence the index of the sequence laid out in
        its place (itself, or the first identical one). Every representative is a member of exactly one unit.

    Raises:
        `ValueError`: a sequence is empty or longer than `max_tokens` (the message names its index).
    """
    if len(prefix_lengths) != len(sequences):
        raise ValueError(f"got {len(prefix_lengths)} prefix lengths for {len(sequences)} sequences")
    lengths = [len(ids) for ids in sequences]
    if not lengths:
        raise ValueError("cannot pack an empty list of sequences")
    budget = max_tokens if max_tokens is not None else default_max_tokens(lengths)
    for index, length in enumerate(lengths):
        if length < 1:
            raise ValueError(f"sequence {index} is empty; a packed row needs at least one token per sequence")
        if length > budget:
            raise ValueError(f"sequence {index} has {length} tokens, more than the budget of {budget} tokens per row")

    representative = list(range(len(sequences)))
    if deduplicate:
        first: dict[tuple[int, ...], int] = {}
        representative = [first.setdefault(tuple(ids), index) for index, ids in enumerate(sequences)]
    groups: dict[tuple[int, ...] | int, tuple[int, list[int]]] = {}  # prefix tokens (or the index alone) -> members
    for index in dict.fromkeys(representative):
        prefix = prefix_lengths[index] if 0 < prefix_lengths[index] < lengths[index] else 0
        key = tuple(sequences[index][:prefix]) if prefix else index
        groups.setdefault(key, (prefix, []))[1].append(index)

    units = []
    for prefix, members in groups.values():
        answers = [lengths[index] - prefix for index in members]
        for unit in best_fit_decreasing(answers, budget - prefix):
            units.append(PrefixUnit(prefix, tuple(members[i] for i in sorted(unit))))
    rows = best_fit_decreasing([unit.num_tokens(sequences) for unit in units], budget)
    return [[units[i] for i in row] for row in rows], representative


def pack_prefix_rows(
    sequences: Sequence[Sequence[int]],
    rows: Sequence[Sequence[PrefixUnit]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Lay out planned rows (see [`plan_prefix_sharing`]) as tensors.

    Rows shorter than the longest one end with a filler of `pad_token_id` that forms a unit of its own.

    Returns:
        `dict` with
        - `"input_ids"`, `"position_ids"` (`torch.LongTensor` of shape `(num_rows, row_length)`): positions restart at
          0 for each unit's prefix and continue from the prefix's end for each of its members;
        - `"segment_ids"`: the index of each token's unit within its row; `"branch_ids"`: 0 for a prefix token (and
          the filler), `k` for the tokens of the unit's `k`-th member. Same shape;
        - `"pooled_index"` (`torch.LongTensor` of shape `(num_members,)`): flat index, into the `num_rows *
          row_length` tokens, of each member's pooled token (the last that is not `pad_token_id`, as transformers
          pools), members in row-major order.
    """
    row_length = max(sum(unit.num_tokens(sequences) for unit in row) for row in rows)
    if pad_to_multiple_of:
        row_length = -(-row_length // pad_to_multiple_of) * pad_to_multiple_of
    shape = (len(rows), row_length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids, segment_ids, branch_ids = (torch.zeros(shape, dtype=torch.long) for _ in range(3))
    pooled_index = []
    for row_index, row in enumerate(rows):
        start = 0
        for unit_index, unit in enumerate(row):
            prefix = unit.prefix_length
            segment_ids[row_index, start : start + unit.num_tokens(sequences)] = unit_index
            if prefix:
                input_ids[row_index, start : start + prefix] = torch.as_tensor(sequences[unit.members[0]][:prefix])
                position_ids[row_index, start : start + prefix] = torch.arange(prefix)
            prefix_start, start = start, start + prefix
            for branch, index in enumerate(unit.members, start=1):
                ids = sequences[index]
                end = start + len(ids) - prefix
                input_ids[row_index, start:end] = torch.as_tensor(ids[prefix:])
                position_ids[row_index, start:end] = torch.arange(prefix, len(ids))
                branch_ids[row_index, start:end] = branch
                pooled = pooled_token(ids, pad_token_id)
                offset = prefix_start + pooled if pooled < prefix else start + pooled - prefix
                pooled_index.append(row_index * row_length + offset)
                start = end
        if start < row_length:
            position_ids[row_index, start:] = torch.arange(row_length - start)
            segment_ids[row_index, start:] = len(row)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "branch_ids": branch_ids,
        "pooled_index": torch.tensor(pooled_index, dtype=torch.long),
    }


def pack_prefix_shared(
    sequences: Sequence[Sequence[int]],
    prefix_lengths: Sequence[int],
    pad_token_id: int,
    max_tokens: int | None = None,
    pad_to_multiple_of: int | None = None,
    deduplicate: bool = True,
) -> dict[str, Any]:
    """Plan and lay out one prefix-shared batch; `pooled_index` and `seq_lengths` follow the order of `sequences`.

    Args:
        sequences, prefix_lengths, max_tokens, deduplicate:
            See [`plan_prefix_sharing`].
        pad_token_id, pad_to_multiple_of:
            See [`pack_prefix_rows`].

    Returns:
        `dict`: the keys of [`pack_prefix_rows`], with `"pooled_index"` given for every input sequence (identical
        sequences point at the same token), plus `"seq_lengths"` (`torch.LongTensor`): the tokens of each input
        sequence, i.e. what a padded batch counts as real tokens.
    """
    rows, representative = plan_prefix_sharing(sequences, prefix_lengths, max_tokens, deduplicate)
    packed = pack_prefix_rows(sequences, rows, pad_token_id, pad_to_multiple_of)
    laid_out = [index for row in rows for unit in row for index in unit.members]
    position = {index: i for i, index in enumerate(laid_out)}
    packed["pooled_index"] = packed["pooled_index"][[position[index] for index in representative]]
    packed["seq_lengths"] = torch.tensor([len(ids) for ids in sequences], dtype=torch.long)
    return packed


def prefix_attention_mask(model: nn.Module, packed: Mapping[str, Any]) -> Any:
    """The attention mask of a prefix-shared batch, in the form the model's attention implementation reads.

    A token attends to an earlier token of its own unit when that token is a prefix token or belongs to the same
    member; sliding-window layers also require the two positions to be less than the window apart. The mask is made
    by transformers' mask interface (`transformers.masking_utils`), so it has the format and dtype that sdpa, eager
    or flex attention expect. Models whose config lists `layer_types` (Gemma-2, Qwen2, ...) get a dict with one mask
    per layer type, as their forward accepts; others one mask (with the window of `config.sliding_window`, if any).

    Raises:
        `ValueError`: the attention implementation has no mask (flash attention), or a layer type is neither full
        nor sliding-window attention.
    """
    config = extract_model_from_parallel(model).config
    implementation = config._attn_implementation
    if uses_flash_attention(model) or implementation not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"prefix sharing needs an attention implementation that reads a mask (sdpa, eager, flex_attention), got "
            f"{implementation!r}; flash attention's varlen kernel cannot let several answers attend to one prompt"
        )
    text_config = config.get_text_config()
    input_ids = packed["input_ids"]
    segments, branches, positions = packed["segment_ids"], packed["branch_ids"], packed["position_ids"]
    dtype = extract_model_from_parallel(model).get_input_embeddings().weight.dtype

    def build(window: int | None):
        def mask_function(batch_idx, head_idx, q_idx, kv_idx):
            visible = (segments[batch_idx, q_idx] == segments[batch_idx, kv_idx]) & (kv_idx <= q_idx)
            kv_branch = branches[batch_idx, kv_idx]
            visible = visible & ((kv_branch == 0) | (kv_branch == branches[batch_idx, q_idx]))
            if window is not None:
                visible = visible & (positions[batch_idx, q_idx] - positions[batch_idx, kv_idx] < window)
            return visible

        return ALL_MASK_ATTENTION_FUNCTIONS[implementation](
            batch_size=input_ids.shape[0],
            q_length=input_ids.shape[1],
            kv_length=input_ids.shape[1],
            mask_function=mask_function,
            allow_is_causal_skip=False,
            dtype=dtype,
            device=input_ids.device,
            config=text_config,
        )

    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is None:
        return build(getattr(text_config, "sliding_window", None))
    unsupported = sorted(set(layer_types) - set(_LAYER_WINDOWS))
    if unsupported:
        raise ValueError(
            f"prefix sharing supports full and sliding-window attention layers; this model also has {unsupported}"
        )
    windows = {kind: getattr(text_config, name) if name else None for kind, name in _LAYER_WINDOWS.items()}
    return {kind: build(windows[kind]) for kind in dict.fromkeys(layer_types)}


def prefix_shared_rewards(model: nn.Module, packed: Mapping[str, Any]) -> torch.Tensor:
    """Reward of each sequence of a prefix-shared batch (from [`pack_prefix_shared`]), equal to the padded batch's.

    Returns:
        `torch.Tensor` of shape `(num_sequences, num_labels)`, in the order of `packed["pooled_index"]`.
    """
    return packed_rewards(model, packed, attention_mask=prefix_attention_mask(model, packed))
