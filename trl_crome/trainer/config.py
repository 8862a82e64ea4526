"""Configuration of [`CromeRewardTrainer`]."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig


@dataclass
class CromeRewardConfig(RewardConfig):
    r"""
    Configuration class for the [`CromeRewardTrainer`].

    This class adds to [`~trl.RewardConfig`] only the parameters of Crome's composite loss; every other parameter, and
    every default, is TRL's. For the full list of training arguments, see [`~trl.RewardConfig`] and
    [`~transformers.TrainingArguments`].

    Parameters:
        > Parameters that control the loss

        tie_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight lambda of the tie (neutral pair) term of the composite loss, `lambda * -(log sigmoid(d) +
            log sigmoid(-d)) / 2`. `1.0` is the paper's value; `0.0` trains on preference pairs only while still
            logging the ties' metrics.
    """

    tie_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight lambda of the tie (neutral pair) term of the composite loss, "
            "`lambda * -(log sigmoid(d) + log sigmoid(-d)) / 2`. `1.0` is the paper's value."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.tie_loss_weight < 0:
            raise ValueError(f"`tie_loss_weight` must be >= 0, got {self.tie_loss_weight}.")
