"""`trl-crome quickstart`: the whole Crome pipeline on a CPU in minutes, offline (see `docs/quickstart.md`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="Run the Crome pipeline on CPU: local oracle, small reward model, RewardBench slice (minutes, offline).",
        description="Augment a few dozen preference pairs with a local SmolLM2 oracle, train a small Crome reward "
        "model, evaluate it on a RewardBench slice and a few transformations, and print a report.",
    )
    parser.add_argument("--dataset", help="Local file or Hub name of preference data (default: the package's set).")
    parser.add_argument("--output_dir", default="outputs/quickstart", help="Where everything is written.")
    parser.add_argument("--num_pairs", type=int, default=16, help="Original pairs to augment and train on.")
    parser.add_argument("--max_steps", type=int, default=20, help="Training steps.")
    parser.add_argument("--max_length", type=int, default=256, help="Longest sequence, in tokens.")
    parser.add_argument("--rewardbench", help="RewardBench file or 'hub' (default: shared copy, Hub, or held out).")
    parser.add_argument("--rewardbench_per_subset", type=int, default=3, help="RewardBench pairs per subset.")
    parser.add_argument("--transforms", nargs="+", help="Robustness transformations (default: four local ones).")
    parser.add_argument(
        "--rubrics", dest="identify_rubrics", action="store_true", help="Ask the local oracle for causal rubrics."
    )
    parser.add_argument("--seed", type=int, default=42, help="Seed of everything random.")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..quickstart import QuickstartConfig, run_quickstart

    options = {key: value for key, value in vars(args).items() if key not in ("command", "func") and value is not None}
    _, report = run_quickstart(QuickstartConfig(**options))
    print(report)
    return 0
