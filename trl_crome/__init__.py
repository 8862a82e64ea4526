"""trl-crome: causally robust reward models for TRL (Crome, arXiv 2506.16507)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the module that defines each. Imported lazily, so that `import trl_crome` stays cheap and
# evaluating a model never imports the training code (and training never imports an LLM client).
_LAZY = {
    # Training
    "CromeRewardConfig": "trl_crome.trainer.config",
    "CromeRewardTrainer": "trl_crome.trainer.reward_trainer",
    "CromeDataCollator": "trl_crome.trainer.reward_trainer",
    "CromePairPMConfig": "trl_crome.trainer.pairpm_config",
    "CromePairPMTrainer": "trl_crome.trainer.pairpm_trainer",
    "composite_loss": "trl_crome.trainer.losses",
    # Data
    "validate_preference_dataset": "trl_crome.data",
    "CromeDataError": "trl_crome.data",
    # Augmentation
    "CromeAugmenter": "trl_crome.augment.augmenter",
    "CromeAugmenterConfig": "trl_crome.augment.augmenter",
    "AugmentationSummary": "trl_crome.augment.summary",
    # Oracles
    "Oracle": "trl_crome.oracles.base",
    "OracleRequest": "trl_crome.oracles.base",
    "OracleResponse": "trl_crome.oracles.base",
    "OracleFatalError": "trl_crome.oracles.base",
    "Usage": "trl_crome.oracles.base",
    "CachedOracle": "trl_crome.oracles.cache",
    "make_oracle": "trl_crome.oracles",
    "GeminiOracle": "trl_crome.oracles.gemini",
    "OpenAICompatibleOracle": "trl_crome.oracles.openai_compat",
    "TransformersOracle": "trl_crome.oracles.local",
    # Evaluation
    "RewardScorer": "trl_crome.evaluation.scoring",
    "PairPMScorer": "trl_crome.evaluation.pairpm",
    "evaluate_rewardbench": "trl_crome.evaluation.rewardbench",
    "evaluate_rewardbench2": "trl_crome.evaluation.rewardbench2",
    "evaluate_rmbench": "trl_crome.evaluation.rmbench",
    "evaluate_robustness": "trl_crome.evaluation.transforms",
    "evaluate_best_of_n": "trl_crome.evaluation.best_of_n",
    # Small local models
    "smollm2_path": "trl_crome.models",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; the names resolve lazily at run time
    from .augment.augmenter import CromeAugmenter, CromeAugmenterConfig  # noqa: F401
    from .augment.summary import AugmentationSummary  # noqa: F401
    from .data import CromeDataError, validate_preference_dataset  # noqa: F401
    from .evaluation.best_of_n import evaluate_best_of_n  # noqa: F401
    from .evaluation.pairpm import PairPMScorer  # noqa: F401
    from .evaluation.rewardbench import evaluate_rewardbench  # noqa: F401
    from .evaluation.rewardbench2 import evaluate_rewardbench2  # noqa: F401
    from .evaluation.rmbench import evaluate_rmbench  # noqa: F401
    from .evaluation.scoring import RewardScorer  # noqa: F401
    from .evaluation.transforms import evaluate_robustness  # noqa: F401
    from .models import smollm2_path  # noqa: F401
    from .oracles import make_oracle  # noqa: F401
    from .oracles.base import Oracle, OracleFatalError, OracleRequest, OracleResponse, Usage  # noqa: F401
    from .oracles.cache import CachedOracle  # noqa: F401
    from .oracles.gemini import GeminiOracle  # noqa: F401
    from .oracles.local import TransformersOracle  # noqa: F401
    from .oracles.openai_compat import OpenAICompatibleOracle  # noqa: F401
    from .trainer.config import CromeRewardConfig  # noqa: F401
    from .trainer.losses import composite_loss  # noqa: F401
    from .trainer.pairpm_config import CromePairPMConfig  # noqa: F401
    from .trainer.pairpm_trainer import CromePairPMTrainer  # noqa: F401
    from .trainer.reward_trainer import CromeDataCollator, CromeRewardTrainer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_crome' has no attribute {name!r}")
