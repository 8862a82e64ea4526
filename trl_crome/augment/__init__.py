"""The Crome data pipeline: causal rubrics, counterfactual and neutral pairs, validation and baseline filtering.

See `docs/augmenter.md`. One step per module; `augmenter.py` runs them in order.
"""

from .augmenter import CromeAugmenter, CromeAugmenterConfig
from .counterfactuals import CounterfactualValidator
from .filtering import RewardModelBaseline
from .neutrals import neutral_pairs
from .rubrics import DEFAULT_FALLBACK_ATTRIBUTES, CausalAttribute, Rubric
from .summary import AugmentationSummary

__all__ = [
    "DEFAULT_FALLBACK_ATTRIBUTES",
    "AugmentationSummary",
    "CausalAttribute",
    "CounterfactualValidator",
    "CromeAugmenter",
    "CromeAugmenterConfig",
    "RewardModelBaseline",
    "Rubric",
    "neutral_pairs",
]
