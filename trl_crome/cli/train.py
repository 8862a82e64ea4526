"""`trl-crome train`: the Crome recipe ([`~trl_crome.recipe.run_recipe`]) from the command line.

Arguments are parsed with TRL's [`~trl.TrlParser`]: `--config recipe.yaml` sets any field and every field can be
overridden on the command line, in either spelling (`--output_dir` or `--output-dir`).

```bash
trl-crome train --config recipes/configs/gemma2b.yaml --max_train_samples 1000
accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml recipes/crome.py \\
    --config recipes/configs/gemma9b_full.yaml
```
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    # The recipe's own TrlParser reads every option: this sub-parser only collects them. With "+" as its only prefix
    # character it treats `--config` and `--learning_rate` as plain strings instead of rejecting them as unknown.
    parser = subparsers.add_parser(
        "train",
        help="Run the Crome recipe: augment, train, evaluate, save (and push).",
        description="Run the Crome recipe. Every option of the recipe YAML configs can be given here; see "
        "docs/recipes.md. Example: trl-crome train --config recipes/configs/gemma2b.yaml",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("recipe_args", nargs="*", help="--config FILE.yaml and any recipe option")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from ..recipe import main, make_recipe_parser

    recipe_args = list(args.recipe_args)
    if recipe_args in (["-h"], ["--help"]):
        make_recipe_parser().print_help()
        return 0
    main(recipe_args)
    return 0
