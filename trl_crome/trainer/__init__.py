"""Crome trainers: the tie-aware composite loss on top of TRL's reward trainer."""

from .config import CromeRewardConfig
from .losses import composite_loss, preference_loss, tie_loss
from .reward_trainer import CromeDataCollator, CromeRewardTrainer

__all__ = [
    "CromeDataCollator",
    "CromeRewardConfig",
    "CromeRewardTrainer",
    "composite_loss",
    "preference_loss",
    "tie_loss",
]
