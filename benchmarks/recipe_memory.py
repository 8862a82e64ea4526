"""Memory and speed of the Crome recipes: the planned bytes per GPU, and what a few real training steps use.

For each recipe (Gemma-2-9B, Qwen2.5-7B, Gemma-2-2B; LoRA, full fine-tuning, the paper's configs and their PairPM
variant) the script

1. reads the batch size, `max_length`, LoRA and setting from the recipe's YAML config (recipes/configs), builds the
   model's architecture from the real model's config, written out in model_shapes.py (no download), and prints the
   memory plan per GPU: parameters, gradients, optimizer state and activations, from the model's real parameter
   count and shapes (the arithmetic is in `memory_plan` and in docs/recipes.md);
2. unless `--plan-only`, instantiates it with random weights on the current device and runs a few training steps
   with the recipe's settings (bf16 weights, gradient checkpointing, AdamW, Crome's composite loss on pairs of
   `max_length` tokens, a quarter of them ties), then prints the peak memory, the tokens/s and the ratio of the
   measured peak to the planned peak for one GPU.

Only single-GPU layouts can be measured by one process: LoRA recipes, and full fine-tuning of models that fit one
GPU (Bradley-Terry). The ZeRO-3 plans (full fine-tuning on 8 GPUs, the paper's configs among them) are printed from
the same arithmetic; the per-layer activation terms they share with the single-GPU runs are what the measurement
checks.

    python benchmarks/recipe_memory.py                   # every recipe that fits this GPU
    python benchmarks/recipe_memory.py --recipes gemma9b-lora --steps 5
    python benchmarks/recipe_memory.py --plan-only       # the plan table only (CPU, instant)
    python benchmarks/recipe_memory.py --tiny            # the same code on shrunken models, on CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from model_shapes import model_config  # beside this script
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig

from trl_crome.trainer.losses import composite_loss

GB = 1024**3

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_RANK = 16


CONFIG_DIR = Path(__file__).resolve().parents[1] / "recipes" / "configs"


@dataclass
class Recipe:
    """One recipe config (a file in recipes/configs) on the layout it is planned for. The settings that decide memory
    (`per_device_train_batch_size`, `max_length`, `use_peft`, `setting`) are read from the YAML itself, so the plan
    follows the configs; `overrides` are a variant's command-line flags (e.g. the paper's PairPM column)."""

    name: str
    model: str
    config: str
    gpus: int  # the layout the plan is for: 1 GPU, or ZeRO-3 over 8
    overrides: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        return {**yaml.safe_load((CONFIG_DIR / self.config).read_text()), **self.overrides}

    @property
    def lora(self) -> bool:
        return bool(self.settings.get("use_peft", False))

    @property
    def pairs_per_gpu(self) -> int:
        return self.settings["per_device_train_batch_size"]

    @property
    def max_length(self) -> int:
        return self.settings["max_length"]

    @property
    def setting(self) -> str:
        return self.settings.get("setting", "bt")


PAIRPM_COLUMN = {"setting": "pairpm", "max_length": 2048}  # the paper's PairPM numbers: both answers in one input
RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe("gemma9b-lora", "gemma-2-9b", "gemma9b.yaml", gpus=1),
        Recipe("gemma9b-full-zero3", "gemma-2-9b", "gemma9b_full.yaml", gpus=8),
        Recipe("gemma9b-paper", "gemma-2-9b", "gemma9b_paper.yaml", gpus=8),
        Recipe("gemma9b-paper-pairpm", "gemma-2-9b", "gemma9b_paper.yaml", gpus=8, overrides=PAIRPM_COLUMN),
        Recipe("qwen7b-lora", "qwen2.5-7b", "qwen7b.yaml", gpus=1),
        Recipe("qwen7b-full-zero3", "qwen2.5-7b", "qwen7b_full.yaml", gpus=8),
        Recipe("qwen7b-paper", "qwen2.5-7b", "qwen7b_paper.yaml", gpus=8),
        Recipe("qwen7b-paper-pairpm", "qwen2.5-7b", "qwen7b_paper.yaml", gpus=8, overrides=PAIRPM_COLUMN),
        Recipe("gemma2b-full", "gemma-2-2b", "gemma2b.yaml", gpus=1),
        Recipe("gemma2b-lora", "gemma-2-2b", "gemma2b_lora.yaml", gpus=1),
        Recipe("gemma2b-paper", "gemma-2-2b", "gemma2b_paper.yaml", gpus=8),
        Recipe("gemma2b-paper-pairpm", "gemma-2-2b", "gemma2b_paper.yaml", gpus=8, overrides=PAIRPM_COLUMN),
    )
}


def shrink(config: PretrainedConfig) -> PretrainedConfig:
    """A few-million-parameter model of the same family, for `--tiny` runs on CPU."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    config.update(
        {
            "vocab_size": 4096,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    )
    if head_dim is not None and hasattr(config, "head_dim"):
        config.head_dim = 32
    if getattr(config, "layer_types", None):  # Gemma-2 alternates sliding and global attention, one entry per layer
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    return config


def build_config(model: str, tiny: bool) -> PretrainedConfig:
    config = model_config(model)
    config.num_labels = 1
    config.pad_token_id = 0
    # Gemma-2 soft-caps attention logits, which sdpa does not support: the recipes use eager attention.
    config._attn_implementation = "eager" if config.model_type == "gemma2" else "sdpa"
    return shrink(config) if tiny else config


def parameter_counts(config: PretrainedConfig, setting: str = "bt") -> tuple[int, int]:
    """`(all parameters, LoRA parameters)` of the model, counted on the meta device (no memory used): a reward model
    (bt: no LM head, a score head) or a causal LM (pairpm: its LM head, tied to the embedding in Gemma-2)."""
    model_class = AutoModelForCausalLM if setting == "pairpm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = model_class.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in LORA_TARGETS:
            lora += LORA_RANK * (module.in_features + module.out_features)
    # LoRA A and B of every target, and a reward model's score head (trained in full).
    return total, lora + (config.hidden_size if setting == "bt" else 0)


def memory_plan(recipe: Recipe, config: PretrainedConfig) -> dict[str, float]:
    """Planned bytes per GPU (in GiB) of one recipe.

    - Full fine-tuning, ZeRO-3 over N GPUs (bf16 mixed precision, DeepSpeed's bf16 optimizer): bf16 weights (2 B),
      bf16 gradients (2 B), fp32 master weights + Adam moments (12 B) per parameter, all divided by N; plus the
      largest set of weights gathered at once (the embedding matrix, bf16).
    - Full fine-tuning on one GPU (fp32 weights under bf16 autocast, as `dtype: float32` + `bf16: true` do; pure bf16
      weights would round away updates of a 5e-6 learning rate): fp32 weights, gradients and Adam moments, 16 B.
    - LoRA on one GPU: frozen bf16 weights (2 B); adapters in fp32 with fp32 gradients and Adam moments (16 B).
    - Activations with gradient checkpointing: every layer's input is kept (2 B x tokens x hidden per layer), and one
      layer is recomputed at a time: its attention (eager: bf16 scores and fp32 softmax, heads x L^2 per sequence;
      sdpa: flash/memory-efficient kernels keep O(L)) and its MLP (four bf16 tensors of tokens x intermediate).
    - Two sequences of at most `max_length` tokens per pair: chosen and rejected (bt), or the pair in both orders
      (pairpm, whose LM head computes the logits of the last position only).
    """
    total, lora = parameter_counts(config, recipe.setting)
    n = recipe.gpus
    sequences = 2 * recipe.pairs_per_gpu  # chosen and rejected, or both orders of each pair
    tokens = sequences * recipe.max_length
    h, layers = config.hidden_size, config.num_hidden_layers
    if recipe.lora:
        weights, grads, optimizer = 2 * total, 4 * lora, 8 * lora + 4 * lora  # + the fp32 adapter weights
    elif n > 1:
        embedding = config.vocab_size * h
        weights, grads, optimizer = 2 * total / n + 2 * embedding, 2 * total / n, 12 * total / n
    else:
        weights, grads, optimizer = 4 * total, 4 * total, 8 * total
    checkpoints = 2 * tokens * h * layers
    heads = config.num_attention_heads
    if config._attn_implementation == "eager":
        attention = sequences * heads * recipe.max_length**2 * (3 * 2 + 4)  # scores, capped, probs (bf16) + fp32
    else:
        attention = 4 * 2 * tokens * heads * (h // heads)  # q, k, v, out
    mlp = 4 * 2 * tokens * config.intermediate_size
    plan = {
        "params": weights / GB,
        "grads": grads / GB,
        "optimizer": optimizer / GB,
        "act_checkpoints": checkpoints / GB,
        "act_one_layer": (attention + mlp) / GB,
    }
    plan["total"] = sum(plan.values())
    plan["total_params_B"] = total / 1e9
    plan["trainable_params_B"] = (lora if recipe.lora else total) / 1e9
    return plan


def measure(recipe: Recipe, config: PretrainedConfig, steps: int, device: torch.device) -> dict[str, float]:
    """Peak memory (GiB) and tokens/s of `steps` training steps with the recipe's settings, on one device.

    As the recipes train: bf16 autocast on GPU; frozen bf16 weights under LoRA, fp32 weights for full fine-tuning.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dtype = torch.bfloat16 if recipe.lora and device.type == "cuda" else torch.float32
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype).to(device)
    model.config.use_cache = False
    if hasattr(model, "activation_checkpointing_enable"):  # the current name; the old one warns where both exist
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.lora:
        model.enable_input_require_grads()
        model = get_peft_model(
            model, LoraConfig(task_type="SEQ_CLS", r=LORA_RANK, lora_alpha=32, target_modules=LORA_TARGETS)
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    sequences = 2 * recipe.pairs_per_gpu
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (sequences, recipe.max_length), generator=generator).to(device)
    tie = (torch.arange(recipe.pairs_per_gpu) % 4 == 3).to(device)  # a quarter of the pairs are neutral ties
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            rewards = model(input_ids=ids).logits.squeeze(-1).float()
        chosen, rejected = rewards.chunk(2)
        loss = composite_loss(chosen - rejected, tie, None, 1.0).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - started)
    steady = timings[1:] or timings  # the first step allocates the optimizer state and warms the kernels up
    result = {"tokens_per_s": sequences * recipe.max_length / (sum(steady) / len(steady))}
    result["peak_gb"] = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else float("nan")
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=4, help="Training steps per recipe (the first is warm-up).")
    parser.add_argument("--plan-only", action="store_true", help="Print the plan; run nothing.")
    parser.add_argument("--tiny", action="store_true", help="Shrunken models and short sequences, on CPU.")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    capacity = torch.cuda.get_device_properties(device).total_memory / GB if device.type == "cuda" else None
    header = (
        f"{'recipe':<22}{'GPUs':>5}{'params(B)':>10}{'trainable(B)':>13}{'weights':>9}{'grads':>8}{'optim':>8}"
        f"{'act.ckpt':>9}{'act.layer':>10}{'plan/GPU':>9}{'peak':>8}{'peak/plan':>10}{'tok/s':>9}"
    )
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), GiB per GPU")
    print(header)
    for name in args.recipes:
        recipe = RECIPES[name]
        if args.tiny:
            tiny = {"per_device_train_batch_size": min(recipe.pairs_per_gpu, 2), "max_length": 64}
            recipe = dataclasses.replace(recipe, overrides={**recipe.overrides, **tiny})
        config = build_config(recipe.model, args.tiny)
        plan = memory_plan(recipe, config)
        measured = {"peak_gb": float("nan"), "tokens_per_s": float("nan")}
        fits = recipe.gpus == 1 and recipe.setting == "bt" and (capacity is None or plan["total"] < 0.9 * capacity)
        if not args.plan_only and fits:
            measured = measure(recipe, config, args.steps, device)
        print(
            f"{name:<22}{recipe.gpus:>5}{plan['total_params_B']:>10.3f}{plan['trainable_params_B']:>13.4f}"
            f"{plan['params']:>9.2f}{plan['grads']:>8.2f}{plan['optimizer']:>8.2f}{plan['act_checkpoints']:>9.2f}"
            f"{plan['act_one_layer']:>10.2f}{plan['total']:>9.2f}{measured['peak_gb']:>8.2f}"
            f"{measured['peak_gb'] / plan['total']:>10.2f}{measured['tokens_per_s']:>9.0f}"
        )


if __name__ == "__main__":
    main()
