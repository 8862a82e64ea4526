"""GPU training throughput and MFU: stock TRL `RewardTrainer` vs padding-free `CromeRewardTrainer`.

Qwen2.5-7B- and Gemma-2-2B-shaped reward models with random weights, built on the GPU from the configs written below
(nothing is downloaded), bf16, gradient checkpointing, batches of UltraFeedback-like lengths (synthetic token ids whose
prompt and answer lengths follow log-normal fits of the real UltraFeedback pairs). Both trainers get the same batches,
run with their own collator and `training_step`, after a warm-up step. Needs only torch, transformers, accelerate,
peft, trl and datasets (and this repository on the path); about 3-5 minutes on one H100.

    python benchmarks/gpu_throughput.py                  # both models (PYTHONPATH=. when trl_crome is not installed)
    python benchmarks/gpu_throughput.py --models qwen2.5-7b --batch-size 8 --steps 10
    python benchmarks/gpu_throughput.py --tiny           # the same logic with tiny shapes, on CPU, in seconds

Prints real tokens/s, computed (padded) tokens/s, peak memory and MFU = 6 x non-embedding parameters x real tokens/s
/ 989e12 (H100 dense bf16 peak). Attention: flash attention 2 when `flash_attn` is installed; otherwise sdpa for Qwen2
and flex attention for Gemma-2 (no sdpa kernel does Gemma-2's logit softcapping), for both trainers alike.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import random
import sys
import tempfile
import time

import torch
from datasets import Dataset
from model_shapes import MODEL_SHAPES  # beside this script
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast
from trl import RewardConfig, RewardTrainer

from trl_crome import CromeRewardConfig, CromeRewardTrainer

H100_BF16_DENSE_FLOPS = 989e12

MODEL_CONFIGS = {name: MODEL_SHAPES[name] for name in ("qwen2.5-7b", "gemma-2-2b")}
TINY_OVERRIDES = dict(
    vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16
)

# Log-normal fits (natural log of the token count) of the 1,000 UltraFeedback training pairs of ../shared/data,
# tokenized with SmolLM2's tokenizer: prompt, and each answer; log lengths of the two answers correlate at 0.51.
PROMPT_LOG_MEAN, PROMPT_LOG_STD = 4.33, 1.38
ANSWER_LOG_MEAN, ANSWER_LOG_STD, ANSWER_CORRELATION = 4.95, 1.44, 0.51
PAD_ID, EOS_ID, FIRST_TOKEN_ID = 0, 1, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODEL_CONFIGS), default=sorted(MODEL_CONFIGS)[::-1])
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per trainer")
    parser.add_argument("--attn", default="auto", help="attention implementation; 'auto' picks as described above")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, fp32: check the logic")
    return parser.parse_args()


def synthetic_pairs(num_pairs: int, max_length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Pre-tokenized pairs (prompt + answer + EOS) with UltraFeedback-like lengths, both sequences <= max_length."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < num_pairs:
        prompt = round(math.exp(rng.gauss(PROMPT_LOG_MEAN, PROMPT_LOG_STD)))
        z_chosen, z_other = rng.gauss(0, 1), rng.gauss(0, 1)
        z_rejected = ANSWER_CORRELATION * z_chosen + math.sqrt(1 - ANSWER_CORRELATION**2) * z_other
        answers = [max(1, round(math.exp(ANSWER_LOG_MEAN + ANSWER_LOG_STD * z))) for z in (z_chosen, z_rejected)]
        if max(1, prompt) + max(answers) + 1 > max_length:
            continue  # TRL filters out pairs longer than max_length
        prompt_ids = [rng.randrange(FIRST_TOKEN_ID, vocab_size) for _ in range(max(1, prompt))]
        chosen, rejected = ([rng.randrange(FIRST_TOKEN_ID, vocab_size) for _ in range(n)] for n in answers)
        pairs.append({"chosen_ids": prompt_ids + chosen + [EOS_ID], "rejected_ids": prompt_ids + rejected + [EOS_ID]})
    return pairs


def placeholder_tokenizer() -> PreTrainedTokenizerFast:
    """The trainers need a tokenizer with a pad token; the data is already tokenized, so three tokens suffice."""
    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<unk>": 2}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def pick_attention(model_name: str, requested: str, tiny: bool) -> str:
    if requested != "auto":
        return requested
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        return "flash_attention_2"
    if model_name.startswith("gemma"):
        return "eager" if tiny else "flex_attention"  # flex attention compiles its kernel, which CPU tests skip
    return "sdpa"


def build_model(model_name: str, attn: str, tiny: bool) -> torch.nn.Module:
    config_class, kwargs = MODEL_CONFIGS[model_name]
    config = config_class(**{**kwargs, **(TINY_OVERRIDES if tiny else {})}, num_labels=1, pad_token_id=PAD_ID)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random initialization directly on the GPU: seconds, not minutes
        return AutoModelForSequenceClassification.from_config(config, dtype=dtype, attn_implementation=attn)


def timed_steps(trainer, batches: list[list[dict]]) -> dict[str, float]:
    """Time `len(batches)` optimizer steps (collation, `training_step`, optimizer step), after an untimed warm-up step
    on the first batch: lazy initializations, optimizer states, kernel compilation, first touch of the memory."""
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by `Trainer.train`, read by `training_step`
    on_gpu = torch.cuda.is_available()

    def step(examples) -> tuple[int, int]:
        batch = trainer.data_collator(examples)
        real = int(batch["attention_mask"].sum() if "attention_mask" in batch else batch["seq_lengths"].sum())
        computed = batch["input_ids"].numel()
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return real, computed

    step(batches[0])
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, start_cpu = time.perf_counter(), time.process_time()
    real_tokens = computed_tokens = 0
    for examples in batches:
        real, computed = step(examples)
        real_tokens, computed_tokens = real_tokens + real, computed_tokens + computed
    if on_gpu:
        torch.cuda.synchronize()
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - start_cpu,
        "pairs": sum(len(examples) for examples in batches),
        "real_tokens": real_tokens,
        "computed_tokens": computed_tokens,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan"),
    }


def run_model(model_name: str, args: argparse.Namespace) -> None:
    attn = pick_attention(model_name, args.attn, args.tiny)
    model = build_model(model_name, attn, args.tiny)
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    pairs = synthetic_pairs(args.batch_size * args.steps, args.max_length, model.config.vocab_size)
    batches = [pairs[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.steps)]
    tokenizer = placeholder_tokenizer()
    settings = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        # flex attention compiles a kernel per shape: few distinct row lengths keep it from recompiling every step
        pad_to_multiple_of=128 if attn == "flex_attention" else None,
    )
    print(
        f"\n{model_name}: {non_embedding / 1e9:.2f}B non-embedding parameters, attention {attn}, {args.batch_size} "
        f"pairs/step, max_length {args.max_length}, {args.steps} timed steps, device {model.device}",
        flush=True,
    )
    results = {}
    for name in ("trl", "crome_padding_free"):
        if name == "trl":
            trainer = RewardTrainer(
                model,
                args=RewardConfig(**settings),
                train_dataset=Dataset.from_list(pairs),
                processing_class=tokenizer,
            )
        else:
            config = CromeRewardConfig(**settings, padding_free=True)
            trainer = CromeRewardTrainer(
                model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
            )
        results[name] = timed_steps(trainer, batches)
        trainer.optimizer = None  # free the optimizer states before the next trainer
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    print(
        f"{'trainer':<20} {'real tok/s':>11} {'computed tok/s':>15} {'padding':>8} {'peak GB':>8} {'MFU':>6} "
        f"{'vs TRL':>7}"
    )
    for name, result in results.items():
        real_per_s = result["real_tokens"] / result["seconds"]
        mfu = 6 * non_embedding * real_per_s / H100_BF16_DENSE_FLOPS
        speedup = results["trl"]["seconds"] / result["seconds"]  # same pairs: the ratio of pairs/s
        print(
            f"{name:<20} {real_per_s:11.0f} {result['computed_tokens'] / result['seconds']:15.0f} "
            f"{1 - result['real_tokens'] / result['computed_tokens']:8.1%} {result['peak_gb']:8.1f} {mfu:6.1%} "
            f"{speedup:6.2f}x"
        )


def main() -> int:
    args = parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("SKIP: no CUDA GPU (use --tiny to check the logic on CPU)")
        return 0
    for model_name in args.models:
        run_model(model_name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
