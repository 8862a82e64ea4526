"""The prepared GPU check of trl-crome: everything GPU-specific, measured in one run of about 10 minutes on one GPU,
with random weights built from the real models' shapes (nothing is downloaded), printed as one table.

1. **Padded vs padding-free rewards** with the GPU attention kernels (flash attention 2 when `flash_attn` is
   installed, else sdpa for Qwen2 and flex attention for Gemma-2): the rewards `CromeRewardTrainer` computes for the
   same pairs through its padded collator and through its padding-free one, on 2-layer models of the Qwen2.5-7B and
   Gemma-2-2B shapes, in bf16.
2. **Throughput** (bf16, activation checkpointing, 8 pairs of UltraFeedback-like lengths per step, `max_length`
   1024): real tokens/s, MFU and peak memory of stock TRL `RewardTrainer`, Crome padded and Crome padding-free on the
   Qwen2.5-7B and Gemma-2-2B shapes (`gpu_throughput.py`). Goals: padded Crome at least 0.97x stock TRL's pairs/s,
   padding-free at least 1.5x.
3. **Recipe memory**: peak memory of a few training steps of the gemma2b-full and gemma9b-LoRA recipe shapes against
   the plan of docs/recipes.md (`recipe_memory.py`); the measured peak must stay within 10% above the plan.
4. **ZeRO-3 on one GPU**: 20 steps of the gemma2b-shaped recipe (full fine-tuning, bf16, eager attention, the
   batch, `max_length` and learning rate of recipes/configs/gemma2b.yaml) under `accelerate launch` with
   `recipes/accelerate_configs/deepspeed_zero3.yaml` (one process), then the 16-bit save reloaded with
   `from_pretrained`: its rewards must equal
   those of the model in the DeepSpeed engine.
5. **Prefix sharing** on Crome-shaped groups (3.5 pairs per prompt on average, the original answers repeated in the
   causal pairs) and the Qwen2.5-7B shape, with sdpa and with flex attention: rewards and every gradient equal to the
   padded path's on a 2-layer model in fp32 (on the GPU this runs flex attention's backward, which CPU cannot), then
   pairs/s, computed/real tokens and peak memory of padding-free and prefix-sharing training in bf16 (goal: at
   least 1.3x padding-free's pairs/s with no more memory). `--tiny` runs eager attention in flex's place.

    python benchmarks/gpu_check.py                # a CUDA machine (PYTHONPATH=. when trl_crome is not installed)
    python benchmarks/gpu_check.py --tiny         # the same code with tiny shapes on CPU: what CI runs
    python benchmarks/gpu_check.py --json out.json

Exit status 1 when a row fails. Needs torch, transformers, accelerate, peft, trl, datasets and deepspeed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))  # the sibling benchmark scripts are modules here

from gpu_throughput import (  # noqa: E402
    build_model,
    make_trainer,
    measure_model,
    pick_attention,
    placeholder_tokenizer,
    synthetic_crome_groups,
    synthetic_pairs,
    trainer_settings,
)
from recipe_memory import RECIPES, build_config, measure, memory_plan  # noqa: E402

SHAPES = ("qwen2.5-7b", "gemma-2-2b")
PADDED_MIN_SPEEDUP, PADDING_FREE_GOAL, PREFIX_SHARING_GOAL = 0.97, 1.5, 1.3
MEMORY_MARGIN = 1.10


@dataclass
class Row:
    """One line of the table. `ok` is `None` for a figure that is read, not judged (e.g. speed in `--tiny` runs)."""

    check: str
    setting: str
    measured: str
    reference: str
    ok: bool | None
    seconds: float = 0.0


def on_gpu(tiny: bool) -> bool:
    return torch.cuda.is_available() and not tiny


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# 1. Padded vs padding-free rewards
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def trainer_rewards(trainer, pairs: list[dict]) -> torch.Tensor:
    """The rewards `compute_loss` computes for `pairs` (chosen then rejected), through the trainer's own collator."""
    batch = trainer._prepare_inputs(trainer.data_collator(pairs))
    _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    return outputs.logits.float().flatten().cpu()


def check_padding_free(tiny: bool) -> list[Row]:
    rows = []
    for shape in SHAPES:
        started = time.perf_counter()
        attn = pick_attention(shape, "auto", tiny)
        model = build_model(shape, attn, tiny, num_hidden_layers=2).eval()
        max_length = 64 if tiny else 1024
        pairs = synthetic_pairs(4 if tiny else 8, max_length, model.config.vocab_size, seed=1)
        settings = trainer_settings(len(pairs), max_length, attn)
        rewards = {
            name: trainer_rewards(make_trainer(name, model, pairs, settings), pairs)
            for name in ("crome_padded", "crome_padding_free")
        }
        difference = (rewards["crome_padded"] - rewards["crome_padding_free"]).abs().max().item()
        scale = rewards["crome_padded"].abs().max().item()
        # bf16 keeps ~3 significant digits and the two paths reduce in other orders; fp32 on CPU agrees to ~1e-6.
        tolerance = 1e-4 * max(1.0, scale) if not on_gpu(tiny) else 2e-2 * max(1.0, scale)
        rows.append(
            Row(
                "padded = padding-free rewards",
                f"{shape}, 2 layers, {attn}, {2 * len(pairs)} sequences",
                f"max |diff| {difference:.2e} (|r| <= {scale:.2f})",
                f"<= {tolerance:.1e}",
                difference <= tolerance,
                time.perf_counter() - started,
            )
        )
        del model
        free_memory()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 2. Throughput against stock TRL
# ---------------------------------------------------------------------------------------------------------------


def check_throughput(tiny: bool) -> list[Row]:
    rows = []
    batch_size, max_length, steps = (2, 64, 2) if tiny else (8, 1024, 6)
    for shape in SHAPES:
        started = time.perf_counter()
        info, results = measure_model(shape, batch_size, max_length, steps, tiny=tiny)
        seconds = (time.perf_counter() - started) / len(results)
        trl = results["trl"]
        for name, result in results.items():
            goal = {"crome_padded": PADDED_MIN_SPEEDUP, "crome_padding_free": PADDING_FREE_GOAL}.get(name)
            rows.append(
                Row(
                    "throughput vs stock TRL",
                    f"{shape}, {name}, {info['attn']}, {batch_size} pairs x {steps} steps",
                    f"{result['real_tok_s']:,.0f} real tok/s, MFU {result['mfu']:.1%}, peak "
                    f"{result['peak_gb']:.1f} GiB, {result['speedup']:.2f}x TRL",
                    f"TRL {trl['real_tok_s']:,.0f} tok/s" + (f"; goal >= {goal:.2f}x" if goal else ""),
                    None if goal is None or not on_gpu(tiny) else result["speedup"] >= goal,
                    seconds,
                )
            )
        free_memory()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 3. Recipe memory against the plan of docs/recipes.md
# ---------------------------------------------------------------------------------------------------------------


def check_recipe_memory(tiny: bool) -> list[Row]:
    rows = []
    device = torch.device("cuda" if on_gpu(tiny) else "cpu")
    for name in ("gemma2b-full", "gemma9b-lora"):
        started = time.perf_counter()
        recipe = RECIPES[name]
        if tiny:
            tiny_settings = {"per_device_train_batch_size": min(recipe.pairs_per_gpu, 2), "max_length": 64}
            recipe = dataclasses.replace(recipe, overrides={**recipe.overrides, **tiny_settings})
        config = build_config(recipe.model, tiny)
        plan = memory_plan(recipe, config)
        measured = measure(recipe, config, steps=2 if tiny else 3, device=device)
        ratio = measured["peak_gb"] / plan["total"]
        rows.append(
            Row(
                "recipe memory vs plan",
                f"{name}: {recipe.pairs_per_gpu} pairs x {recipe.max_length} tokens",
                f"peak {measured['peak_gb']:.1f} GiB ({ratio:.2f} of plan), {measured['tokens_per_s']:,.0f} tok/s",
                f"plan {plan['total']:.1f} GiB; <= {MEMORY_MARGIN:.2f} x plan",
                None if math.isnan(ratio) else ratio <= MEMORY_MARGIN,
                time.perf_counter() - started,
            )
        )
        free_memory()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 4. ZeRO-3 on one GPU: the gemma2b-shaped recipe, its 16-bit save reloaded
# ---------------------------------------------------------------------------------------------------------------


def zero3_config(directory: Path, tiny: bool) -> Path:
    """`recipes/accelerate_configs/deepspeed_zero3.yaml` for one process (on CPU in fp32 for `--tiny`)."""
    config = yaml.safe_load((ROOT / "recipes" / "accelerate_configs" / "deepspeed_zero3.yaml").read_text())
    config["num_processes"] = 1
    if tiny:
        config.update(use_cpu=True, mixed_precision="no")
    path = directory / "deepspeed_zero3_1process.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def probe_ids(vocab_size: int, device) -> torch.Tensor:
    """Four unpadded sequences of 128 tokens (no pad token: the reward is read at the last position)."""
    generator = torch.Generator().manual_seed(7)
    return torch.randint(3, vocab_size, (4, 128), generator=generator).to(device)


@torch.no_grad()
def probe_rewards(model, device) -> list[float]:
    model.eval()
    return model(input_ids=probe_ids(model.config.vocab_size, device)).logits[:, 0].float().tolist()


def zero3_worker(output_dir: Path, tiny: bool) -> None:
    """Runs under `accelerate launch` with the ZeRO-3 config: trains, records, saves (`--zero3-worker`)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from trl_crome import CromeRewardConfig, CromeRewardTrainer

    recipe = RECIPES["gemma2b-full"].settings  # recipes/configs/gemma2b.yaml
    batch_size, max_length, steps = (
        (2, 64, 3) if tiny else (recipe["per_device_train_batch_size"], recipe["max_length"], 20)
    )
    args = CromeRewardConfig(
        output_dir=str(output_dir / "model"),
        per_device_train_batch_size=batch_size,
        max_length=max_length,
        max_steps=steps,
        learning_rate=recipe["learning_rate"],
        lr_scheduler_type="constant",
        bf16=not tiny,
        use_cpu=tiny,
        activation_checkpointing=True,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    config = build_config("gemma-2-2b", tiny)  # the recipe's eager attention (Gemma-2 soft-caps its logits)
    model = AutoModelForSequenceClassification.from_config(config)  # built sharded: zero3_init_flag
    pairs = synthetic_pairs(batch_size * steps, max_length, config.vocab_size)
    trainer = CromeRewardTrainer(
        model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=placeholder_tokenizer()
    )
    device = trainer.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    rewards = probe_rewards(trainer.model, device)
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        result = {
            "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
            "steps": trainer.state.global_step,
            "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
            "seconds": seconds,
            "real_tokens": sum(len(pair["chosen_ids"]) + len(pair["rejected_ids"]) for pair in pairs),
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "rewards": rewards,
            "dtype": str(next(iter(trainer.model.parameters())).dtype),
        }
        (output_dir / "zero3.json").write_text(json.dumps(result))


def check_zero3(tiny: bool) -> list[Row]:
    from transformers import AutoModelForSequenceClassification

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        output_dir = Path(tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if tiny:
            env |= {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        config = zero3_config(output_dir, tiny)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        command += [str(Path(__file__).resolve()), "--zero3-worker", str(output_dir)] + (["--tiny"] if tiny else [])
        process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if process.returncode != 0:
            print(process.stderr[-6000:], file=sys.stderr)
            errors = [line for line in process.stderr.splitlines() if "Error" in line] or ["no error line"]
            return [Row("ZeRO-3, 1 process", "gemma2b-shaped recipe", f"failed: {errors[-1][:150]}", "runs", False)]
        result = json.loads((output_dir / "zero3.json").read_text())
        device = torch.device("cuda" if on_gpu(tiny) else "cpu")
        dtype = torch.bfloat16 if on_gpu(tiny) else torch.float32
        reloaded = AutoModelForSequenceClassification.from_pretrained(
            output_dir / "model", dtype=dtype, attn_implementation="eager"
        ).to(device)
        rewards = probe_rewards(reloaded, device)
        saved_dtype = str(next(iter(reloaded.parameters())).dtype)
    del reloaded
    free_memory()
    difference = max(abs(a - b) for a, b in zip(rewards, result["rewards"]))
    losses = result["losses"]
    trained = result["zero_stage"] == 3 and result["steps"] == len(losses) and all(map(math.isfinite, losses))
    seconds = time.perf_counter() - started
    return [
        Row(
            "ZeRO-3, 1 process",
            f"gemma2b-shaped recipe, {result['steps']} steps, weights {result['dtype']}",
            f"{result['real_tokens'] / result['seconds']:,.0f} real tok/s, peak {result['peak_gb']:.1f} GiB, loss "
            f"{losses[0]:.4f} -> {losses[-1]:.4f}",
            "ZeRO stage 3, every step logged, finite losses",
            trained,
            seconds,
        ),
        Row(
            "ZeRO-3 16-bit save reloads",
            f"from_pretrained ({saved_dtype}) vs the DeepSpeed engine, 4 x 128 tokens",
            f"max |reward diff| {difference:.2e}",
            "identical (0)",
            difference == 0.0,
        ),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 5. Prefix sharing: the padded path's rewards and gradients; pairs/s and memory against padding-free
# ---------------------------------------------------------------------------------------------------------------


def trainer_gradients(trainer, pairs: list[dict]) -> dict[str, torch.Tensor]:
    """The gradients of the loss `compute_loss` computes for `pairs` through the trainer's own collator."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    batch = trainer._prepare_inputs(trainer.data_collator(pairs))
    trainer.compute_loss(model, batch).backward()
    gradients = {name: p.grad.float().cpu() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return gradients


def prefix_sharing_attentions(tiny: bool) -> tuple[str, str]:
    """sdpa (a boolean mask) and flex attention (a `BlockMask`); flex has no backward on CPU, so `--tiny` runs the
    mask's other CPU form, eager (an additive float mask), in its place."""
    return ("sdpa", "eager") if tiny else ("sdpa", "flex_attention")


def check_prefix_sharing(tiny: bool) -> list[Row]:
    """Crome-shaped groups (`synthetic_crome_groups`: 3.5 pairs per prompt on average, the original answers repeated
    in the causal pairs) on the Qwen2.5-7B shape. Per attention: rewards and every gradient of prefix sharing against
    the padded path on a 2-layer model in fp32 (exactness, and on the GPU flex attention's backward), then the timed
    training steps of padding-free and prefix sharing on the full shape in bf16 (activation checkpointing)."""
    shape, rows = "qwen2.5-7b", []
    batch_size, max_length, steps = (8, 64, 2) if tiny else (8, 1024, 6)
    for attn in prefix_sharing_attentions(tiny):
        rows.append(prefix_sharing_exactness(shape, attn, batch_size, max_length, tiny))
        started = time.perf_counter()
        trainers = ("crome_padding_free", "crome_prefix_sharing")
        info, results = measure_model(
            shape, batch_size, max_length, steps, attn, tiny, trainers=trainers, make_pairs=synthetic_crome_groups
        )
        unshared, shared = results["crome_padding_free"], results["crome_prefix_sharing"]
        speedup = shared["speedup"]  # pairs/s over padding-free: the same batches
        computed = [result["computed_tok_s"] / result["real_tok_s"] for result in (shared, unshared)]
        met = speedup >= PREFIX_SHARING_GOAL and shared["peak_gb"] <= unshared["peak_gb"]
        rows.append(
            Row(
                "prefix sharing vs padding-free",
                f"{shape}, {info['attn']}, {'bf16' if on_gpu(tiny) else 'fp32'}, {batch_size} Crome-shaped pairs x "
                f"{steps} steps",
                f"{shared['pairs_s']:.2f} vs {unshared['pairs_s']:.2f} pairs/s ({speedup:.2f}x); computed/real tokens "
                f"{computed[0]:.2f} vs {computed[1]:.2f}; peak {shared['peak_gb']:.1f} vs {unshared['peak_gb']:.1f} "
                "GiB",
                f"goal >= {PREFIX_SHARING_GOAL:.1f}x, peak <= padding-free's",
                met if on_gpu(tiny) else None,
                time.perf_counter() - started,
            )
        )
        free_memory()
    return rows


def prefix_sharing_exactness(shape: str, attn: str, batch_size: int, max_length: int, tiny: bool) -> Row:
    """Rewards and every gradient of one Crome-shaped batch, prefix sharing against the padded path, 2 layers, fp32."""
    started = time.perf_counter()
    model = build_model(shape, attn, tiny, num_hidden_layers=2).float()
    pairs = synthetic_crome_groups(batch_size, max_length, model.config.vocab_size, seed=1)
    settings = trainer_settings(len(pairs), max_length, attn) | {"bf16": False}
    rewards, gradients = {}, {}
    for name in ("crome_padded", "crome_prefix_sharing"):
        trainer = make_trainer(name, model, pairs, settings)
        rewards[name] = trainer_rewards(trainer, pairs)
        gradients[name] = trainer_gradients(trainer, pairs)
    del model, trainer
    free_memory()
    reward_diff = (rewards["crome_padded"] - rewards["crome_prefix_sharing"]).abs().max().item()
    reward_scale = rewards["crome_padded"].abs().max().item()
    padded, shared = gradients["crome_padded"], gradients["crome_prefix_sharing"]
    assert padded.keys() == shared.keys(), "the two paths train different parameters"
    grad_diff = max((padded[name] - shared[name]).abs().max().item() for name in padded)
    grad_scale = max(gradient.abs().max().item() for gradient in padded.values())
    # fp32: CPU kernels agree to ~1e-6; GPU kernels (flex's Triton one included) reduce in other orders.
    relative = 1e-4 if not on_gpu(tiny) else 1e-3
    prompts = len({pair["prompt_hash"] for pair in pairs})
    return Row(
        "prefix sharing = padded",
        f"{shape}, 2 layers, {attn}, fp32, {len(pairs)} pairs over {prompts} prompts",
        f"rewards max |diff| {reward_diff:.1e} (|r| <= {reward_scale:.2f}); gradients max |diff| {grad_diff:.1e} "
        f"(|g| <= {grad_scale:.1e})",
        f"<= {relative:.0e} x scale",
        reward_diff <= relative * max(1.0, reward_scale) and grad_diff <= relative * grad_scale,
        time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------

# Each check returns its rows. ZeRO-3 runs first, in its own process, before this one holds GPU memory.
CHECKS: list[Callable[[bool], list[Row]]] = [
    check_zero3,
    check_padding_free,
    check_throughput,
    check_recipe_memory,
    check_prefix_sharing,
]


def print_table(rows: list[Row], device: str, total: float) -> None:
    headers = ("check", "setting", "measured", "reference", "ok", "s")
    cells = [
        (r.check, r.setting, r.measured, r.reference, {True: "yes", False: "NO", None: "-"}[r.ok], f"{r.seconds:.0f}")
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(f"\ntrl-crome GPU check on {device}, {total / 60:.1f} min")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cell in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths)) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: check the logic (CI)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--zero3-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.zero3_worker is not None:
        zero3_worker(args.zero3_worker, args.tiny)
        return 0
    if not args.tiny and not torch.cuda.is_available():
        print("SKIP: no CUDA GPU (use --tiny to check the logic on CPU)")
        return 0
    device = torch.cuda.get_device_name() if on_gpu(args.tiny) else "cpu (--tiny)"
    started = time.perf_counter()
    rows = [row for check in CHECKS for row in check(args.tiny)]
    print_table(rows, device, time.perf_counter() - started)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "rows": [asdict(row) for row in rows]}, indent=1))
    return 1 if any(row.ok is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
