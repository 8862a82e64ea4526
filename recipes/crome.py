"""The Crome recipe for any model: pass a config (one of recipes/configs/*.yaml or your own) and any overrides.

    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/crome.py \
        --config recipes/configs/qwen7b.yaml --model_name_or_path Qwen/Qwen2.5-3B-Instruct

Steps: load data -> Crome augmentation (or --augmented_dataset) -> optional baseline RM for the filter -> train
(--setting bt | pairpm) -> save -> RewardBench and robustness evaluation -> model card -> push when --push_to_hub.
See docs/recipes.md.
"""

from trl_crome.recipe import main

if __name__ == "__main__":
    main()
