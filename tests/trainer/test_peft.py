"""LoRA through `peft_config`: the score head is trained, saved with the adapter, and reloads to the same rewards."""

import torch
from peft import AutoPeftModelForSequenceClassification, LoraConfig
from safetensors.torch import load_file

from tests.helpers import tiny_reward_model
from tests.trainer.common import mixed_pairs, tiny_args
from trl_crome import CromeRewardTrainer


def test_lora_trains_saves_and_reloads_the_score_head(tmp_path, tokenizer):
    base_dir = tmp_path / "base"
    base = tiny_reward_model(tokenizer, seed=5)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    initial_score = base.score.weight.detach().clone()

    trainer = CromeRewardTrainer(
        str(base_dir),  # the string path goes through TRL's own model loading
        args=tiny_args(tmp_path / "out", max_steps=5, learning_rate=1e-2),
        train_dataset=mixed_pairs(16),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trainer.save_model()

    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    score_keys = [key for key in adapter if "score" in key]
    assert score_keys, f"the score head is missing from the adapter: {sorted(adapter)}"
    assert any("lora_A" in key for key in adapter)
    assert not torch.allclose(adapter[score_keys[0]], initial_score)  # trained, not the random init

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**inputs).logits
        reloaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=1).eval()
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
