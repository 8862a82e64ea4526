"""Crome reward model on Gemma-2-2B-IT: augment UltraFeedback with Gemini, train, evaluate on RewardBench, save.

The default config (recipes/configs/gemma2b.yaml) is full fine-tuning on one 80 GB GPU:

    accelerate launch recipes/gemma2b.py

The other variant is LoRA on a 24 GB GPU:

    accelerate launch recipes/gemma2b.py --config recipes/configs/gemma2b_lora.yaml

Any field can be overridden on the command line, e.g. `--max_train_samples 2000 --learning_rate 5e-6`. The steps and
every option are in docs/recipes.md; the pipeline itself is `trl_crome.recipe`.
"""

from pathlib import Path

from trl_crome.recipe import main

if __name__ == "__main__":
    main(default_config=Path(__file__).resolve().parent / "configs" / "gemma2b.yaml")
