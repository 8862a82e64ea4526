"""Training throughput of stock TRL `RewardTrainer` vs `CromeRewardTrainer` (padded and padding-free).

The real SmolLM2-135M-Instruct as the reward model, the real UltraFeedback pairs of ../shared/data, the same pairs
and the same steps for the three trainers. Each (trainer, repeat) runs in its own process, one after the other, so
that its peak memory is its own; repeats rotate the order (interleaved runs spread the load of other processes on
the machine over the three trainers). A step is timed from collation to the optimizer step, with each trainer's own
collator and `training_step`, after an untimed warm-up step on the first batch.

    python benchmarks/train_throughput.py                      # CPU: fp32, 4 pairs per step, max_length 512
    python benchmarks/train_throughput.py --steps 3 --repeats 2

Prints pairs/s, real and computed (padded) tokens, peak memory (RSS on CPU, `torch.cuda.max_memory_allocated` on a
GPU) and the ratios to stock TRL. Goals: padded Crome costs at most 1.03x stock TRL per pair; padding-free Crome
reaches at least 1.5x stock TRL's pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ultrafeedback" / "train.jsonl"
TRAINERS = ("trl", "crome_padded", "crome_padding_free")
GOALS = {"crome_padded": ("time per pair", "<=", 1.03), "crome_padding_free": ("pairs/s", ">=", 1.5)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UltraFeedback pairs (JSONL)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (per device)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per trainer, in rotating order")
    parser.add_argument("--child", choices=TRAINERS, help=argparse.SUPPRESS)
    return parser.parse_args()


def load_pairs(path: Path, count: int, max_length: int, tokenizer) -> list[dict]:
    """The first `count` pairs (after a seeded shuffle) whose two sequences fit in `max_length` tokens."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    pairs = []
    for row in rows:
        texts = [row["prompt"] + row[key] + tokenizer.eos_token for key in ("chosen", "rejected")]
        if max(len(ids) for ids in tokenizer(texts)["input_ids"]) <= max_length:
            pairs.append({key: row[key] for key in ("prompt", "chosen", "rejected")})
        if len(pairs) == count:
            return pairs
    raise SystemExit(f"only {len(pairs)} pairs of {path} fit in {max_length} tokens, {count} needed")


def run_one(args: argparse.Namespace) -> dict:
    """One trainer: warm-up, then `args.steps` timed steps. Runs in a child process."""
    import torch
    from datasets import Dataset
    from gpu_throughput import timed_steps  # beside this script
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from trl_crome import CromeRewardConfig, CromeRewardTrainer
    from trl_crome.models import smollm2_path

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    num_pairs = args.batch_size * args.steps
    dataset = Dataset.from_list(load_pairs(args.data, num_pairs, args.max_length, tokenizer))
    torch.manual_seed(0)  # the score head is newly initialized: the same for every trainer
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    on_gpu = torch.cuda.is_available()
    settings = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    if args.child == "trl":
        config = RewardConfig(**settings)
        trainer = RewardTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    else:
        config = CromeRewardConfig(**settings, padding_free=args.child == "crome_padding_free")
        trainer = CromeRewardTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    if len(examples) < num_pairs:
        raise SystemExit(f"TRL's preprocessing kept {len(examples)} pairs, {num_pairs} needed")
    batches = [examples[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.steps)]
    result = timed_steps(trainer, batches)
    if not on_gpu:
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    return {"trainer": args.child, "device": "cuda" if on_gpu else "cpu", **result}


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run_one(args)), flush=True)
        return 0
    if not args.data.exists():
        print(f"SKIP: {args.data} is absent (the shared data folder is not beside this checkout)")
        return 0
    repo_root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, list[dict]] = {name: [] for name in TRAINERS}
    for repeat in range(args.repeats):
        order = TRAINERS[repeat % 3 :] + TRAINERS[: repeat % 3]
        for name in order:
            command = [sys.executable, __file__, "--child", name, "--data", str(args.data)]
            command += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
            command += ["--steps", str(args.steps)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(f"  repeat {repeat}: {name:<20} {result['seconds']:.1f} s for {args.steps} steps", flush=True)

    device = results["trl"][0]["device"]
    memory = "peak RSS" if device == "cpu" else "peak CUDA alloc"
    print(
        f"\nSmolLM2-135M reward model, UltraFeedback, {device}, fp32, {args.batch_size} pairs/step, "
        f"max_length {args.max_length}, {args.steps} timed steps x {args.repeats} repeats (interleaved)"
    )
    print(
        f"{'trainer':<20} {'pairs/s':>8} {'pairs/cpu-s':>11} {'real tok':>9} {'computed':>9} {'padding':>8} "
        f"{memory:>16} {'vs TRL':>7} {'vs TRL (cpu)':>12}"
    )
    summary = {}
    for name, runs in results.items():
        pairs = sum(run["pairs"] for run in runs)
        real = sum(run["real_tokens"] for run in runs)
        computed = sum(run["computed_tokens"] for run in runs)
        summary[name] = {
            "wall": pairs / sum(run["seconds"] for run in runs),
            "cpu": pairs / sum(run["cpu_seconds"] for run in runs),
            "peak_gb": max(run["peak_gb"] for run in runs),
        }
        trl = summary["trl"]
        print(
            f"{name:<20} {summary[name]['wall']:8.4f} {summary[name]['cpu']:11.4f} {real:9d} {computed:9d} "
            f"{1 - real / computed:8.1%} {summary[name]['peak_gb']:13.2f} GB "
            f"{summary[name]['wall'] / trl['wall']:6.2f}x {summary[name]['cpu'] / trl['cpu']:11.2f}x"
        )
    # On a shared CPU, process time (what this process computed) is steadier than wall time (what it waited for).
    print()
    for name, (what, sign, goal) in GOALS.items():
        for clock in ("wall", "cpu"):
            speedup = summary[name][clock] / summary["trl"][clock]
            ratio = speedup if what == "pairs/s" else 1 / speedup
            met = ratio <= goal if sign == "<=" else ratio >= goal
            print(
                f"{name}: {what} vs stock TRL ({clock} clock) = {ratio:.3f}x (goal {sign} {goal}x): "
                f"{'met' if met else 'NOT met'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
