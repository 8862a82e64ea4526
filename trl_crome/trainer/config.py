"""Configuration of [`CromeRewardTrainer`]."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments
from trl import RewardConfig

# transformers renamed `gradient_checkpointing` to `activation_checkpointing` (5.24 warns on the old name, which TRL's
# configs still set, default `True`); older versions, which `pyproject.toml` allows, know only the old name.
HAS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}


def activation_checkpointing_kwargs(enabled: bool) -> dict[str, bool]:
    """The keyword argument that turns activation checkpointing on or off in any `TrainingArguments`, a stock TRL
    config included, under the name the installed transformers knows (no deprecation warning)."""
    return {"activation_checkpointing" if HAS_ACTIVATION_CHECKPOINTING else "gradient_checkpointing": enabled}


@dataclass
class ActivationCheckpointingArguments:
    """`activation_checkpointing` under its current name with every transformers version `pyproject.toml` allows, and
    TRL's default (on) without a deprecation warning. Mixed in before a TRL config; call
    `_resolve_activation_checkpointing()` at the start of `__post_init__`.

    With a transformers that knows the new name it only replaces TRL's `gradient_checkpointing=True` default by
    "unset" (on unless `activation_checkpointing` or the deprecated name says otherwise); with older versions it adds
    the `activation_checkpointing` field and hands it to `gradient_checkpointing`.
    """

    if HAS_ACTIVATION_CHECKPOINTING:
        gradient_checkpointing: bool | None = field(
            default=None,
            metadata={"help": "Deprecated alias of `activation_checkpointing`.", "nargs": "?", "const": True},
        )
    else:
        activation_checkpointing: bool | None = field(
            default=None,
            metadata={
                "help": "Recompute activations in the backward pass to save memory (on by default). The current name "
                "of `gradient_checkpointing`.",
                "nargs": "?",
                "const": True,
            },
        )

    def _resolve_activation_checkpointing(self) -> None:
        if HAS_ACTIVATION_CHECKPOINTING:
            if self.activation_checkpointing is None and self.gradient_checkpointing is None:
                self.activation_checkpointing = True  # TRL's default
        elif self.activation_checkpointing is not None:
            self.gradient_checkpointing = self.activation_checkpointing


@dataclass
class CromeRewardConfig(ActivationCheckpointingArguments, RewardConfig):
    r"""
    Configuration class for the [`CromeRewardTrainer`].

    This class adds to [`~trl.RewardConfig`] only the parameters of Crome's composite loss and of padding-free
    training; every other parameter, and every default, is TRL's. Activation checkpointing is on by default, as in
    TRL, and is set with `activation_checkpointing` with every supported transformers version (the deprecated
    `gradient_checkpointing` still works). For the full list of training arguments, see
    [`~trl.RewardConfig`] and [`~transformers.TrainingArguments`]. To batch pairs of similar length together, use
    transformers' `train_sampling_strategy="group_by_length"`: the trainer adds the length column it reads.

    Parameters:
        > Parameters that control the loss

        tie_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight lambda of the tie (neutral pair) term of the composite loss, `lambda * -(log sigmoid(d) +
            log sigmoid(-d)) / 2`. `1.0` is the paper's value; `0.0` trains on preference pairs only while still
            logging the ties' metrics.

        > Parameters that control padding-free training

        padding_free (`bool`, *optional*, defaults to `False`):
            Pack the chosen and rejected sequences of each batch into rows without padding (`position_ids` restart
            at 0 for each sequence, no attention mask) and take each sequence's reward at its own last token. Rewards,
            loss and metrics equal the padded path's; only real tokens are computed. Works with sdpa, eager and flex
            attention (block-diagonal causal mask) and with flash attention (varlen kernels).
        packing_max_tokens (`int`, *optional*):
            Token budget of one packed row with sdpa / eager / flex attention, whose cost grows with the square of a
            row's length. `None` uses the longest sequence of each batch (twice that with `prefix_sharing`). Ignored
            with flash attention, which packs the whole batch into one row. Must be at least `max_length`.
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Compute each prompt once for all of its answers in a batch, and identical sequences once: the sequences
            that share a prompt are packed as `[prompt][answer 1]...[answer k]`, each answer attending to the prompt
            and causally to itself, positions continuing from the prompt's end. Implies `padding_free`. Rewards,
            loss, metrics and gradients equal the padded path's. The shared prompt is the prompt as the tokenizer or
            chat template renders it, checked token by token; a pair whose answer tokens do not start where its
            prompt's end shares nothing (a warning says how many). Needs sdpa, eager or flex attention; with flash
            attention, training falls back to padding-free batches (a warning says so). Pair it with
            `group_by_prompt` so that batches hold several answers per prompt.

        > Parameters that control the order of training pairs

        group_by_prompt (`bool`, *optional*, defaults to `False`):
            Batch the pairs of a prompt together: prompts in a seeded random order (`data_seed`, else `seed`; a new
            order each epoch), each prompt's pairs one after the other, every pair once per epoch. See
            [`~trl_crome.trainer.prompt_groups.PromptGroupedSampler`] and docs/performance.md for what it changes.
    """

    tie_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight lambda of the tie (neutral pair) term of the composite loss, "
            "`lambda * -(log sigmoid(d) + log sigmoid(-d)) / 2`. `1.0` is the paper's value."
        },
    )

    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Pack the chosen and rejected sequences of each batch into rows without padding and take each "
            "sequence's reward at its own last token. Rewards, loss and metrics equal the padded path's."
        },
    )
    packing_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Token budget of one packed row with sdpa / eager / flex attention. `None` uses the longest "
            "sequence of each batch. Ignored with flash attention (one row per batch). Must be >= `max_length`."
        },
    )

    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Compute each prompt once for all of its answers in a batch (and identical sequences once). "
            "Implies `padding_free`. Same rewards, loss and gradients as the padded path."
        },
    )
    group_by_prompt: bool = field(
        default=False,
        metadata={
            "help": "Batch the pairs of a prompt together, prompts in a seeded random order (a new one each epoch); "
            "every pair once per epoch. Gives `prefix_sharing` something to share."
        },
    )

    def __post_init__(self):
        self._resolve_activation_checkpointing()
        super().__post_init__()
        if self.prefix_sharing:
            self.padding_free = True
        if self.group_by_prompt and self.train_sampling_strategy != "random":
            raise ValueError(
                f"`group_by_prompt=True` sets the order of training pairs; it cannot be combined with "
                f"`train_sampling_strategy={self.train_sampling_strategy!r}`."
            )
        if self.tie_loss_weight < 0:
            raise ValueError(f"`tie_loss_weight` must be >= 0, got {self.tie_loss_weight}.")
        if self.packing_max_tokens is not None:
            if self.packing_max_tokens < 1:
                raise ValueError(f"`packing_max_tokens` must be >= 1, got {self.packing_max_tokens}.")
            if self.max_length is not None and self.packing_max_tokens < self.max_length:
                raise ValueError(
                    f"`packing_max_tokens` ({self.packing_max_tokens}) must be >= `max_length` ({self.max_length}): "
                    "a sequence of `max_length` tokens must fit in one packed row."
                )
