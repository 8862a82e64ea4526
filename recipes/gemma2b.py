"""Crome reward model on Gemma-2-2B-IT: augment UltraFeedback with Gemini, train, evaluate on RewardBench, save.

The default config (recipes/configs/gemma2b.yaml) is full fine-tuning on one 80 GB GPU:

    accelerate launch recipes/gemma2b.py

The LoRA variant runs on a 24 GB GPU:

    accelerate launch recipes/gemma2b.py --config recipes/configs/gemma2b_lora.yaml

The paper's recipe (full fine-tuning, 1 epoch, lr 1e-6, global batch 256 on 8 GPUs, ZeRO-3; docs/recipes.md):

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml recipes/gemma2b.py \\
        --config recipes/configs/gemma2b_paper.yaml

Any field can be overridden on the command line, e.g. `--max_train_samples 2000 --learning_rate 5e-6`. The steps and
every option are in docs/recipes.md; the pipeline itself is `trl_crome.recipe`.
"""

from pathlib import Path

from trl_crome.recipe import main

if __name__ == "__main__":
    main(default_config=Path(__file__).resolve().parent / "configs" / "gemma2b.yaml")
