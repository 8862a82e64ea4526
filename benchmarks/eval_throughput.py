"""Reward-inference throughput: length-sorted batches vs. the same batch size in file order.

Scores a seeded sample of real RewardBench pairs with the real SmolLM2-135M-Instruct as a reward model
(`AutoModelForSequenceClassification.from_pretrained(smollm2_path(), num_labels=1)`: a random score head, which does
not change the cost) and prints pairs/s, real vs. padded tokens and the speed-up of sorting (goal >= 1.5x).
Both runs score exactly the same sequences; the rewards are checked to agree.

    PYTHONPATH=. python benchmarks/eval_throughput.py --pairs 128 --batch-size 16

On a shared machine the wall-clock ratio is noisy; the process CPU time ratio is printed beside it.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from trl_crome.evaluation import RewardScorer, load_rewardbench
from trl_crome.models import smollm2_path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rewardbench" / "filtered.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="RewardBench JSONL file.")
    parser.add_argument("--pairs", type=int, default=128, help="Pairs sampled from the file (seeded).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024, help="Keep the last N tokens of longer sequences.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 on GPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = random.Random(args.seed).sample(load_rewardbench(args.data), args.pairs)
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype).to(args.device)
    prompts, chosen, rejected = ([r[k] for r in rows] for k in ("prompt", "chosen", "rejected"))
    print(
        f"{args.pairs} RewardBench pairs, SmolLM2-135M, batch size {args.batch_size}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )

    # Warm-up (kernels, allocator) on a few pairs, not timed.
    RewardScorer(model, tokenizer, batch_size=args.batch_size, show_progress=False).score_pairs(
        prompts[:4], chosen[:4], rejected[:4]
    )
    results = {}
    for sort_by_length in (False, True):
        scorer = RewardScorer(
            model, tokenizer, batch_size=args.batch_size, max_length=args.max_length, sort_by_length=sort_by_length
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        rewards = scorer.score_pairs(prompts, chosen, rejected)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        stats = scorer.stats
        results[sort_by_length] = (seconds, rewards, cpu_seconds)
        name = "length-sorted" if sort_by_length else "file order  "
        print(
            f"{name}: {args.pairs / seconds:8.2f} pairs/s  ({seconds:.1f} s wall, {cpu_seconds:.1f} s CPU)  "
            f"real tokens {stats.real_tokens}  "
            f"padded tokens {stats.padded_tokens}  padding {100 * stats.padding_fraction:.1f}%  "
            f"truncated {stats.truncated}"
        )
    unsorted_rewards = results[False][1][0] + results[False][1][1]
    sorted_rewards = results[True][1][0] + results[True][1][1]
    max_diff = max(abs(a - b) for a, b in zip(unsorted_rewards, sorted_rewards))
    print(
        f"speed-up of length-sorted batches: {results[False][0] / results[True][0]:.2f}x wall-clock, "
        f"{results[False][2] / results[True][2]:.2f}x process CPU time (goal >= 1.5x); "
        f"max |reward difference| {max_diff:.2e}"
    )


if __name__ == "__main__":
    main()
