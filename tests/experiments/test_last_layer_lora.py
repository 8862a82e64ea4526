"""The experiments' fast reward model computes exactly what peft's LoRA on the whole network computes.

Uses a tiny random Llama (2 layers, grouped-query attention, the SmolLM2 vocabulary) saved to disk: the equality is a
property of the computation, not of the weights, and the real SmolLM2 would only make the test slower.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForSequenceClassification

from recipes.experiments.last_layer_lora import (
    LORA_TARGETS,
    LastLayerCache,
    LastLayerRewardModel,
    pair_accuracy,
    train_reward_model,
)
from tests.helpers import smollm2_tokenizer, tiny_llama_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    # 2 layers, grouped-query attention (4 heads, 2 key-value heads)
    model = LlamaForSequenceClassification(tiny_llama_config(smollm2_tokenizer())).eval()
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    # Ids from 3 up: no pad id (2), since the classifier scores the last non-pad token.
    sequences = {f"s{i}": torch.randint(3, 300, (n,)).tolist() for i, n in enumerate([5, 17, 9, 23, 1, 12])}
    return path, sequences


def peft_rewards(path, reward_model: LastLayerRewardModel, sequences) -> list[float]:
    """The same adapters and head loaded into peft's LoRA over the full network, scored one sequence at a time."""
    full = LlamaForSequenceClassification.from_pretrained(path).eval()
    last = full.config.num_hidden_layers - 1
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=list(LORA_TARGETS), layers_to_transform=[last], modules_to_save=["score"]
    )
    peft_model = get_peft_model(full, config)
    state = {
        f"base_model.model.model.layers.{last}.{k[len('layer.') :]}": v
        for k, v in reward_model.state_dict().items()
        if "lora_" in k
    }
    state["base_model.model.score.modules_to_save.default.weight"] = reward_model.score.weight
    missing = set(state) - set(peft_model.state_dict())
    assert not missing, missing
    peft_model.load_state_dict(state, strict=False)
    with torch.no_grad():
        return [peft_model(input_ids=torch.tensor([ids])).logits.item() for ids in sequences.values()]


def test_rewards_equal_peft_lora_on_the_full_network(tiny, tmp_path):
    path, sequences = tiny
    cache = LastLayerCache(tmp_path / "cache", path, batch_size=4, dtype=torch.float32)
    assert cache.compute(sequences) == len(sequences)
    model = LastLayerRewardModel(cache.backbone, rank=4, alpha=8, seed=3)
    with torch.no_grad():  # non-zero adapters (LoRA's B starts at zero, which would hide a wrong path)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.3)
    ours = model.rewards(cache.table(list(sequences)))
    torch.testing.assert_close(ours, torch.tensor(peft_rewards(path, model, sequences)), atol=1e-5, rtol=1e-4)


def test_cache_resumes_from_its_shards(tiny, tmp_path):
    path, sequences = tiny
    first = dict(list(sequences.items())[:3])
    LastLayerCache(tmp_path, path, batch_size=2, dtype=torch.float32).compute(first)
    again = LastLayerCache(tmp_path, path, batch_size=2, dtype=torch.float32)
    assert set(again.entries) == set(first)
    assert again.compute(sequences) == len(sequences) - len(first)
    fresh = LastLayerCache(tmp_path / "fresh", path, batch_size=6, dtype=torch.float32)
    fresh.compute(sequences)
    for key in sequences:
        for a, b in zip(again.entries[key], fresh.entries[key], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_only_adapters_and_head_train_and_training_learns_the_pairs(tiny, tmp_path):
    path, sequences = tiny
    cache = LastLayerCache(tmp_path, path, batch_size=6, dtype=torch.float32)
    cache.compute(sequences)
    table = cache.table(list(sequences))
    model = LastLayerRewardModel(cache.backbone, rank=4, alpha=8, seed=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name == "score.weight" for name in trainable)
    assert not any("k_proj" in name or "v_proj" in name for name in trainable)  # cached keys/values stay valid
    frozen = {name: p.clone() for name, p in model.named_parameters() if not p.requires_grad}
    chosen, rejected = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    train_reward_model(
        model, table, chosen, rejected, torch.zeros(3, dtype=torch.bool), steps=60, batch_size=3, learning_rate=1e-2
    )
    assert pair_accuracy(model.rewards(table), chosen, rejected) == 1.0
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name
