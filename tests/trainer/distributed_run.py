"""Trains a tiny Crome reward model; run directly (1 process) or with `accelerate launch` (several processes).

Usage: python distributed_run.py OUTPUT_DIR PER_DEVICE_BATCH_SIZE
Writes OUTPUT_DIR/log_history.json and OUTPUT_DIR/final/ (the model) from the main process.
"""

import json
import sys

from tests.helpers import smollm2_tokenizer, tiny_reward_model
from tests.trainer.common import mixed_pairs, tiny_args
from trl_crome import CromeRewardTrainer


def main(output_dir: str, per_device_batch_size: int) -> None:
    tokenizer = smollm2_tokenizer()
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer, seed=2),
        args=tiny_args(
            output_dir,
            per_device_train_batch_size=per_device_batch_size,
            per_device_eval_batch_size=per_device_batch_size,
            max_steps=4,
            logging_steps=2,
            use_cpu=True,
        ),
        train_dataset=mixed_pairs(32),
        eval_dataset=mixed_pairs(18),  # not a multiple of the global batch: checks the de-duplicated gathering
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.evaluate()
    trainer.save_model(f"{output_dir}/final")
    if trainer.is_world_process_zero():
        with open(f"{output_dir}/log_history.json", "w") as f:
            json.dump({"world_size": trainer.args.world_size, "log_history": trainer.state.log_history}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
