"""Training throughput of stock TRL `RewardTrainer` vs `CromeRewardTrainer` (padded, padding-free, prefix sharing).

The real SmolLM2-135M-Instruct as the reward model and pairs built from the real UltraFeedback rows of ../shared/data,
the same pairs and the same steps for every trainer. Each (trainer, repeat) runs in its own process, one after the
other, so that its peak memory is its own; repeats rotate the order (interleaved runs spread the load of other
processes on the machine over the trainers). A step is timed from collation to the optimizer step, with each
trainer's own collator and `training_step`, after an untimed warm-up step on the first batch.

Data (`--groups`):
- `crome` (default): Crome-shaped groups in the proportions of the paper's pipeline (`crome_shape.py`). Per
  UltraFeedback row, under its
  prompt: the original pair; each of the 10 causal pairs (5 attributes x degrade the chosen answer / upgrade the
  rejected one) and one Irrelevant Query Neutral (the original pair of another row, a tie) are kept with probability
  2.5 / 11, so that the final set is 3.5x the original, as the paper's is after verification and filtering (raw: 10x
  causal + 1x neutrals). A rewrite replaces a random 10-30% span of the answer's words by 0.5-1.5x as many words of
  another UltraFeedback answer (real text, lengths near the original's, as the paper's isolated rewrites). Prompts
  come in a seeded random order, each prompt's pairs one after the other: the order `group_by_prompt=True` gives.
- `raw`: the same with every causal pair and the neutral kept (12 pairs per prompt: before verification/filtering).
- `pairs`: the original pairs only, in a seeded random order (one pair per prompt: nothing to share but nothing lost).

    python benchmarks/train_throughput.py                      # CPU: fp32, 8 pairs per step, max_length 512
    python benchmarks/train_throughput.py --steps 3 --repeats 2 --groups raw

Prints pairs/s, real and computed tokens, peak memory (RSS on CPU, `torch.cuda.max_memory_allocated` on a GPU) and
the ratios to stock TRL and to padding-free Crome. Goals: padded Crome costs at most 1.03x stock TRL per pair;
padding-free Crome reaches at least 1.5x stock TRL's pairs/s; prefix sharing at least 1.3x padding-free Crome's
pairs/s with no more memory. `crome_prefix_no_dedup` is prefix sharing with identical sequences computed each time,
to show what sharing the prompt alone gives.
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

from crome_shape import KEEP, crome_group  # beside this script

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ultrafeedback" / "train.jsonl"
TRAINERS = ("trl", "crome_padded", "crome_padding_free", "crome_prefix_sharing", "crome_prefix_no_dedup")
# trainer -> (what, sign, goal, baseline)
GOALS = {
    "crome_padded": ("time per pair", "<=", 1.03, "trl"),
    "crome_padding_free": ("pairs/s", ">=", 1.5, "trl"),
    "crome_prefix_sharing": ("pairs/s", ">=", 1.3, "crome_padding_free"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UltraFeedback pairs (JSONL)")
    parser.add_argument("--groups", choices=("crome", "raw", "pairs"), default="crome", help="see the docstring")
    parser.add_argument("--format", choices=("plain", "chat"), default="plain", help="plain strings or chat messages")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (per device)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per trainer, in rotating order")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--child", choices=TRAINERS, help=argparse.SUPPRESS)
    return parser.parse_args()


def crome_pairs(rows: list[dict], groups: str, rng: random.Random) -> list[list[dict]]:
    """Per row, the pairs under its prompt (see the module docstring), as `prompt` / `chosen` / `rejected` texts."""

    def donor() -> list[str]:  # the words of another row's chosen answer
        return rows[rng.randrange(len(rows))]["chosen"].split(" ")

    result = []
    for index, row in enumerate(rows):

        def other_pair(index: int = index) -> tuple[list[str], list[str]]:  # any other row's answers
            other = rows[(index + 1 + rng.randrange(len(rows) - 1)) % len(rows)]
            return other["chosen"].split(" "), other["rejected"].split(" ")

        words = row["chosen"].split(" "), row["rejected"].split(" ")
        pairs = crome_group(*words, donor, other_pair, rng, KEEP[groups])
        result.append(
            [
                dict(prompt=row["prompt"], chosen=" ".join(a), rejected=" ".join(b), tie=kind == "neutral", kind=kind)
                for a, b, kind in pairs
            ]
        )
    return result


def load_pairs(args: argparse.Namespace, count: int, tokenizer) -> list[dict]:
    """The first `count` pairs, prompt groups in a seeded random order, whose two sequences fit in `max_length`."""
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(0)
    rng.shuffle(rows)
    pairs = []
    for group in crome_pairs(rows, args.groups, rng):
        for pair in group:
            if args.format == "chat":
                pair["prompt"] = [{"role": "user", "content": pair["prompt"]}]
                for key in ("chosen", "rejected"):
                    pair[key] = [{"role": "assistant", "content": pair[key]}]
                lengths = [
                    len(tokenizer.apply_chat_template(pair["prompt"] + pair[key], tokenize=True))
                    for key in ("chosen", "rejected")
                ]
            else:
                texts = [pair["prompt"] + pair[key] + tokenizer.eos_token for key in ("chosen", "rejected")]
                lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
            if max(lengths) <= args.max_length:
                pairs.append(pair)
            if len(pairs) == count:
                return pairs
    raise SystemExit(f"only {len(pairs)} pairs of {args.data} fit in {args.max_length} tokens, {count} needed")


def run_one(args: argparse.Namespace) -> dict:
    """One trainer: warm-up, then `args.steps` timed steps. Runs in a child process."""
    import torch
    from datasets import Dataset
    from gpu_throughput import timed_steps  # beside this script
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from trl_crome import CromeRewardConfig, CromeRewardTrainer
    from trl_crome.models import smollm2_path
    from trl_crome.trainer.config import activation_checkpointing_kwargs

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    num_pairs = args.batch_size * args.steps
    pairs = load_pairs(args, num_pairs, tokenizer)
    dataset = Dataset.from_list(pairs)
    torch.manual_seed(0)  # the score head is newly initialized: the same for every trainer
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    on_gpu = torch.cuda.is_available()
    settings = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        bf16=False,
        **activation_checkpointing_kwargs(False),  # shared by stock TRL's config and Crome's
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    if args.child == "trl":
        config = RewardConfig(**settings)
        trainer = RewardTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    else:
        config = CromeRewardConfig(
            **settings,
            padding_free=args.child == "crome_padding_free",
            prefix_sharing=args.child.startswith("crome_prefix"),
        )
        trainer = CromeRewardTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
        if args.child == "crome_prefix_no_dedup":
            trainer.data_collator.deduplicate = False
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    if len(examples) < num_pairs:
        raise SystemExit(f"TRL's preprocessing kept {len(examples)} pairs, {num_pairs} needed")
    batches = [examples[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.steps)]
    result = timed_steps(trainer, batches)
    if not on_gpu:
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    prompts = {json.dumps(pair["prompt"]) for pair in pairs}
    shared = sum(1 for example in examples if example.get("prompt_length", 0) > 0)
    return {
        "trainer": args.child,
        "device": "cuda" if on_gpu else "cpu",
        "prompts": len(prompts),
        "shared_pairs": shared,
        **result,
    }


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
    trainers = tuple(name for name in TRAINERS if name in args.trainers)
    results: dict[str, list[dict]] = {name: [] for name in trainers}
    for repeat in range(args.repeats):
        shift = repeat % len(trainers)
        for name in trainers[shift:] + trainers[:shift]:
            command = [sys.executable, __file__, "--child", name, "--data", str(args.data), "--groups", args.groups]
            command += ["--format", args.format, "--batch-size", str(args.batch_size)]
            command += ["--max-length", str(args.max_length), "--steps", str(args.steps)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(f"  repeat {repeat}: {name:<24} {result['seconds']:.1f} s for {args.steps} steps", flush=True)

    first = next(iter(results.values()))[0]
    memory = "peak RSS" if first["device"] == "cpu" else "peak CUDA alloc"
    pairs_total = args.batch_size * args.steps
    shared = results.get("crome_prefix_sharing", [{}])[0].get("shared_pairs", "n/a")
    print(
        f"\nSmolLM2-135M reward model, UltraFeedback ({args.groups} groups, {args.format} format: {pairs_total} pairs "
        f"over {first['prompts']} prompts, {shared} with a verified prompt), {first['device']}, fp32, "
        f"{args.batch_size} pairs/step, max_length {args.max_length}, {args.steps} timed steps x {args.repeats} "
        "repeats (interleaved)"
    )
    print(
        f"{'trainer':<24} {'pairs/s':>8} {'pairs/cpu-s':>11} {'real tok':>9} {'computed':>9} {'comp/real':>9} "
        f"{memory:>16} {'vs TRL':>7} {'vs TRL (cpu)':>12} {'vs p-free':>9}"
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
    for name, runs in results.items():
        real = sum(run["real_tokens"] for run in runs)
        computed = sum(run["computed_tokens"] for run in runs)
        row = summary[name]
        ratios = [  # "-" where the baseline was not part of this run
            f"{row[clock] / summary[base][clock]:.2f}x" if base in summary else "-"
            for base, clock in (("trl", "wall"), ("trl", "cpu"), ("crome_padding_free", "wall"))
        ]
        print(
            f"{name:<24} {row['wall']:8.4f} {row['cpu']:11.4f} {real:9d} {computed:9d} {computed / real:9.2f} "
            f"{row['peak_gb']:13.2f} GB {ratios[0]:>7} {ratios[1]:>12} {ratios[2]:>9}"
        )
    # On a shared CPU, process time (what this process computed) is steadier than wall time (what it waited for).
    print()
    for name, (what, sign, goal, base) in GOALS.items():
        if name not in summary or base not in summary:
            continue
        for clock in ("wall", "cpu"):
            speedup = summary[name][clock] / summary[base][clock]
            ratio = speedup if what == "pairs/s" else 1 / speedup
            met = ratio <= goal if sign == "<=" else ratio >= goal
            print(
                f"{name}: {what} vs {base} ({clock} clock) = {ratio:.3f}x (goal {sign} {goal}x): "
                f"{'met' if met else 'NOT met'}"
            )
    if "crome_prefix_sharing" in summary and "crome_padding_free" in summary:
        more = summary["crome_prefix_sharing"]["peak_gb"] - summary["crome_padding_free"]["peak_gb"]
        print(f"crome_prefix_sharing: peak memory vs crome_padding_free = {more:+.2f} GB (goal: no more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
