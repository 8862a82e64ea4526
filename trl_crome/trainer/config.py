"""Configuration of [`CromeRewardTrainer`]."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig


@dataclass
class CromeRewardConfig(RewardConfig):
    r"""
    Configuration class for the [`CromeRewardTrainer`].

    This class adds to [`~trl.RewardConfig`] only the parameters of Crome's composite loss and of padding-free
    training; every other parameter, and every default, is TRL's. For the full list of training arguments, see
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
            row's length. `None` uses the longest sequence of each batch. Ignored with flash attention, which packs
            the whole batch into one row. Must be at least `max_length`.
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

    def __post_init__(self):
        super().__post_init__()
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
