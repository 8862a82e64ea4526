"""GPU training throughput and MFU: stock TRL `RewardTrainer` vs `CromeRewardTrainer`, padded and padding-free.

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
from collections.abc import Callable

import torch
from crome_shape import crome_group  # beside this script
from datasets import Dataset
from model_shapes import MODEL_SHAPES
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast
from trl import RewardConfig, RewardTrainer

from trl_crome import CromeRewardConfig, CromeRewardTrainer
from trl_crome.trainer.config import activation_checkpointing_kwargs

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


def _synthetic_pair(rng: random.Random, max_length: int, vocab_size: int) -> tuple[list[int], list[int], list[int]]:
    """Prompt, chosen and rejected token ids with UltraFeedback-like lengths; prompt + answer + EOS <= max_length."""
    while True:
        prompt = round(math.exp(rng.gauss(PROMPT_LOG_MEAN, PROMPT_LOG_STD)))
        z_chosen, z_other = rng.gauss(0, 1), rng.gauss(0, 1)
        z_rejected = ANSWER_CORRELATION * z_chosen + math.sqrt(1 - ANSWER_CORRELATION**2) * z_other
        answers = [max(1, round(math.exp(ANSWER_LOG_MEAN + ANSWER_LOG_STD * z))) for z in (z_chosen, z_rejected)]
        if max(1, prompt) + max(answers) + 1 <= max_length:  # TRL filters out pairs longer than max_length
            break
    prompt_ids = _random_ids(rng, max(1, prompt), vocab_size)
    return prompt_ids, _random_ids(rng, answers[0], vocab_size), _random_ids(rng, answers[1], vocab_size)


def _random_ids(rng: random.Random, count: int, vocab_size: int) -> list[int]:
    return [rng.randrange(FIRST_TOKEN_ID, vocab_size) for _ in range(count)]


def synthetic_pairs(num_pairs: int, max_length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Pre-tokenized pairs (prompt + answer + EOS) with UltraFeedback-like lengths, both sequences <= max_length."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(num_pairs):
        prompt, chosen, rejected = _synthetic_pair(rng, max_length, vocab_size)
        pairs.append({"chosen_ids": prompt + chosen + [EOS_ID], "rejected_ids": prompt + rejected + [EOS_ID]})
    return pairs


def synthetic_crome_groups(num_pairs: int, max_length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Pre-tokenized Crome-shaped groups (`crome_shape.py`: 3.5 pairs per prompt on average) over prompts and
    answers of `synthetic_pairs`' lengths, one prompt's pairs after the other (the order of `group_by_prompt=True`),
    with the `prompt_length`, `prompt_hash` and `tie` columns the trainer derives from text data. Pairs that a rewrite
    made longer than `max_length` are left out, as TRL filters them."""
    rng = random.Random(seed)

    def donor() -> list[int]:
        return _random_ids(rng, 256, vocab_size)

    def other_pair() -> tuple[list[int], list[int]]:
        return _synthetic_pair(rng, max_length, vocab_size)[1:]

    pairs, group = [], 0
    while len(pairs) < num_pairs:
        prompt, chosen, rejected = _synthetic_pair(rng, max_length, vocab_size)
        for answer_a, answer_b, kind in crome_group(chosen, rejected, donor, other_pair, rng):
            chosen_ids, rejected_ids = prompt + answer_a + [EOS_ID], prompt + answer_b + [EOS_ID]
            if max(len(chosen_ids), len(rejected_ids)) <= max_length:
                pairs.append(
                    {
                        "chosen_ids": chosen_ids,
                        "rejected_ids": rejected_ids,
                        "tie": kind == "neutral",
                        "prompt_length": len(prompt),
                        "prompt_hash": group,
                    }
                )
        group += 1
    return pairs[:num_pairs]


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


def build_model(model_name: str, attn: str, tiny: bool, **overrides) -> torch.nn.Module:
    """A reward model of the named shape (tiny for `tiny`; `overrides` change any config value, e.g. the depth)."""
    config_class, kwargs = MODEL_CONFIGS[model_name]
    kwargs = {**kwargs, **(TINY_OVERRIDES if tiny else {}), **overrides}
    config = config_class(**kwargs, num_labels=1, pad_token_id=PAD_ID)
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


TRAINERS = ("trl", "crome_padded", "crome_padding_free")


def make_trainer(name: str, model, pairs: list[dict], settings: dict):
    """Stock TRL `RewardTrainer`, or `CromeRewardTrainer` padded / padding-free / with prefix sharing
    (`"crome_prefix_sharing"`, which reads the pairs' `prompt_length`), on pre-tokenized `pairs`."""
    tokenizer = placeholder_tokenizer()
    if name == "trl":
        return RewardTrainer(
            model, args=RewardConfig(**settings), train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
        )
    config = CromeRewardConfig(
        **settings, padding_free=name == "crome_padding_free", prefix_sharing=name == "crome_prefix_sharing"
    )
    return CromeRewardTrainer(model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)


def trainer_settings(batch_size: int, max_length: int, attn: str) -> dict:
    return dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch_size,
        max_length=max_length,
        bf16=torch.cuda.is_available(),
        **activation_checkpointing_kwargs(True),  # shared by stock TRL's config and Crome's
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        # flex attention compiles a kernel per shape: few distinct row lengths keep it from recompiling every step
        pad_to_multiple_of=128 if attn == "flex_attention" else None,
    )


def measure_model(
    model_name: str,
    batch_size: int,
    max_length: int,
    steps: int,
    attn: str = "auto",
    tiny: bool = False,
    trainers: tuple[str, ...] = TRAINERS,
    make_pairs: Callable[[int, int, int], list[dict]] = synthetic_pairs,
) -> tuple[dict, dict[str, dict[str, float]]]:
    """`(info, results)`: the same `steps` batches of `make_pairs(pairs, max_length, vocab_size)` timed with each of
    `trainers` (see `make_trainer`); `results[trainer]` holds `pairs_s`, `real_tok_s`, `computed_tok_s`, `padding`,
    `peak_gb`, `mfu` and `speedup` (pairs/s over the first trainer, stock TRL by default)."""
    attn = pick_attention(model_name, attn, tiny)
    model = build_model(model_name, attn, tiny)
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    pairs = make_pairs(batch_size * steps, max_length, model.config.vocab_size)
    batches = [pairs[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    settings = trainer_settings(batch_size, max_length, attn)
    info = {"model": model_name, "attn": attn, "non_embedding": non_embedding, "device": str(model.device)}
    timings = {}
    for name in trainers:
        trainer = make_trainer(name, model, pairs, settings)
        timings[name] = timed_steps(trainer, batches)
        trainer.optimizer = None  # free the optimizer states before the next trainer
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    results = {}
    for name, timing in timings.items():
        real_per_s = timing["real_tokens"] / timing["seconds"]
        results[name] = {
            "pairs_s": timing["pairs"] / timing["seconds"],
            "real_tok_s": real_per_s,
            "computed_tok_s": timing["computed_tokens"] / timing["seconds"],
            "padding": 1 - timing["real_tokens"] / timing["computed_tokens"],
            "peak_gb": timing["peak_gb"],
            "mfu": 6 * non_embedding * real_per_s / H100_BF16_DENSE_FLOPS,
            "speedup": timings[trainers[0]]["seconds"] / timing["seconds"],  # same pairs: the ratio of pairs/s
        }
    return info, results


def run_model(model_name: str, args: argparse.Namespace) -> None:
    info, results = measure_model(model_name, args.batch_size, args.max_length, args.steps, args.attn, args.tiny)
    print(
        f"\n{model_name}: {info['non_embedding'] / 1e9:.2f}B non-embedding parameters, attention {info['attn']}, "
        f"{args.batch_size} pairs/step, max_length {args.max_length}, {args.steps} timed steps, device "
        f"{info['device']}",
        flush=True,
    )
    print(
        f"{'trainer':<20} {'real tok/s':>11} {'computed tok/s':>15} {'padding':>8} {'peak GB':>8} {'MFU':>6} "
        f"{'vs TRL':>7}"
    )
    for name, result in results.items():
        print(
            f"{name:<20} {result['real_tok_s']:11.0f} {result['computed_tok_s']:15.0f} {result['padding']:8.1%} "
            f"{result['peak_gb']:8.1f} {result['mfu']:6.1%} {result['speedup']:6.2f}x"
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
