"""The Crome recipe as a library: from preference data to a saved, evaluated reward model.

[`run_recipe`] runs the steps in order: load the data -> augment it with [`~trl_crome.CromeAugmenter`] (optionally
filtered by a baseline reward model) -> train a [`~trl_crome.CromeRewardTrainer`] or [`~trl_crome.CromePairPMTrainer`]
-> save -> evaluate on RewardBench and robustness transformations -> model card -> push. The recipe scripts in
`recipes/`, `trl-crome train` and `trl-crome quickstart` all call it.

```python
from trl_crome.recipe import parse_recipe_args, run_recipe

result = run_recipe(*parse_recipe_args(["--config", "recipes/configs/gemma2b.yaml", "--max_train_samples", "1000"]))
```

- `arguments.py`  the four argument dataclasses and their [`~trl.TrlParser`]
- `steps.py`      each step on its own (load, train, augment, evaluate)
- `model_card.py` the recipe's sections of the model card
- `pipeline.py`   [`run_recipe`] and its [`RecipeResult`]
"""

from .arguments import (
    RECIPE_SET_AUGMENT_FIELDS,
    SETTINGS,
    CromeScriptArguments,
    augment_arguments_class,
    make_recipe_parser,
    parse_recipe_args,
    trainer_classes,
)
from .model_card import model_card_sections
from .pipeline import RESULTS_FILE, RecipeResult, main, run_recipe
from .steps import (
    AUGMENTED_DATA_DIR,
    BASELINE_DIR,
    EVAL_DIR,
    augment,
    evaluate,
    last_train_metrics,
    load_preference_data,
    load_scorer,
    train,
    train_baseline,
)

__all__ = [
    "AUGMENTED_DATA_DIR",
    "BASELINE_DIR",
    "EVAL_DIR",
    "RECIPE_SET_AUGMENT_FIELDS",
    "RESULTS_FILE",
    "SETTINGS",
    "CromeScriptArguments",
    "RecipeResult",
    "augment",
    "augment_arguments_class",
    "evaluate",
    "last_train_metrics",
    "load_preference_data",
    "load_scorer",
    "main",
    "make_recipe_parser",
    "model_card_sections",
    "parse_recipe_args",
    "run_recipe",
    "train",
    "train_baseline",
    "trainer_classes",
]
