"""Evaluate any reward model (or pairwise preference model) without the training code.

- [`RewardScorer`]: batched, length-sorted reward inference in the token format TRL trains on.
- [`evaluate_rewardbench`]: RewardBench with the official section weighting and a length-bias gap.
- [`evaluate_rewardbench2`]: RewardBench 2 with the official best-of-N and Ties scoring.
- [`evaluate_rmbench`]: RM-Bench's style matrices and hard / normal / easy accuracies, as the official code averages.
- [`evaluate_robustness`]: accuracy under meaning-preserving transformations ([`TRANSFORMS`]).
- [`evaluate_best_of_n`]: Best-of-N curves for safety (XSTest, CoCoNot) and math (GSM8K).
"""

from .best_of_n import (
    BestOfNResult,
    best_of_n_index,
    coconot_pools,
    evaluate_best_of_n,
    expected_best_of_n,
    generate_candidates,
    gsm8k_generated_pools,
    gsm8k_pools,
    load_pools,
    xstest_pools,
)
from .pair_scoring import compare_pairs
from .rewardbench import RewardBenchResult, evaluate_rewardbench, load_rewardbench, section_scores
from .rewardbench2 import RewardBench2Result, evaluate_rewardbench2, load_rewardbench2
from .rmbench import RMBenchResult, evaluate_rmbench, load_rmbench
from .scoring import RewardScorer, build_input_ids, load_reward_model
from .transforms import TRANSFORMS, RobustnessResult, Transform, apply_transform, evaluate_robustness, list_transforms

__all__ = [
    "TRANSFORMS",
    "BestOfNResult",
    "RMBenchResult",
    "RewardBench2Result",
    "RewardBenchResult",
    "RewardScorer",
    "RobustnessResult",
    "Transform",
    "apply_transform",
    "best_of_n_index",
    "build_input_ids",
    "coconot_pools",
    "compare_pairs",
    "evaluate_best_of_n",
    "evaluate_rewardbench",
    "evaluate_rewardbench2",
    "evaluate_rmbench",
    "evaluate_robustness",
    "expected_best_of_n",
    "generate_candidates",
    "gsm8k_generated_pools",
    "gsm8k_pools",
    "list_transforms",
    "load_pools",
    "load_reward_model",
    "load_rewardbench",
    "load_rewardbench2",
    "load_rmbench",
    "section_scores",
    "xstest_pools",
]
