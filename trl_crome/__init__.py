"""trl-crome: causally robust reward models for TRL (Crome, arXiv 2506.16507)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the module that defines each. Imported lazily, so that `import trl_crome` stays cheap and
# evaluating a model never imports the training code (and training never imports an LLM client).
_LAZY = {
    "CromeRewardConfig": "trl_crome.trainer.config",
    "CromeRewardTrainer": "trl_crome.trainer.reward_trainer",
    "CromeDataCollator": "trl_crome.trainer.reward_trainer",
    "composite_loss": "trl_crome.trainer.losses",
    "validate_preference_dataset": "trl_crome.data",
    "CromeDataError": "trl_crome.data",
    "CromeAugmenter": "trl_crome.augment.augmenter",
    "CromeAugmenterConfig": "trl_crome.augment.augmenter",
    "Oracle": "trl_crome.oracles.base",
    "OracleRequest": "trl_crome.oracles.base",
    "OracleResponse": "trl_crome.oracles.base",
    "GeminiOracle": "trl_crome.oracles.gemini",
    "OpenAICompatibleOracle": "trl_crome.oracles.openai_compat",
    "TransformersOracle": "trl_crome.oracles.local",
    "smollm2_path": "trl_crome.models",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; the names resolve lazily at run time
    from .data import CromeDataError, validate_preference_dataset  # noqa: F401
    from .models import smollm2_path  # noqa: F401
    from .trainer.config import CromeRewardConfig  # noqa: F401
    from .trainer.losses import composite_loss  # noqa: F401
    from .trainer.reward_trainer import CromeDataCollator, CromeRewardTrainer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_crome' has no attribute {name!r}")
