"""PairPM vs. Bradley-Terry on the same data and budget: RewardBench tables and training cost.

Trains SmolLM2-135M-Instruct (`trl_crome.models.smollm2_path()`) twice with LoRA on the same UltraFeedback pairs
(`../shared/data/ultrafeedback/train.jsonl`): once as a Bradley-Terry reward model ([`CromeRewardTrainer`], sequence
classification head) and once as a PairPM ([`CromePairPMTrainer`], both orders). Both are then scored on the same
per-subset sample of RewardBench (`../shared/data/rewardbench/filtered.jsonl`) with the official section weighting,
and the script prints both tables and the cost ratio PairPM / BT measured in this run. With `--zero-shot` it also
scores the untrained SmolLM2 as a PairPM (the template alone). `--template` picks the PairPM input template of both
(default: the package's, `pairpm@2`, RRM's neutral format; `pairpm@1` adds an instruction about what to judge).

The training pairs are the first `--train-pairs` rows whose prompt and both answers together are at most
`--max-chars` characters, so that no training input is truncated; RewardBench inputs longer than the max lengths
are truncated (BT keeps the last tokens, PairPM the end of the prompt and the start of each answer).

The defaults fit a shared 2-core CPU (SmolLM2-135M runs at a few hundred tokens/s there, far less under load); on
a GPU use e.g. `--train-pairs 200 --max-chars 1200 --per-subset 20 --bt-max-length 1024 --pairpm-max-length 2048`.
Run from the repository root with the package installed (or `PYTHONPATH=.`):

    python benchmarks/pairpm_vs_bt.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_crome.evaluation.pairpm import PairPMScorer
from trl_crome.evaluation.rewardbench import evaluate_rewardbench, load_rewardbench, subsample_per_subset
from trl_crome.evaluation.scoring import RewardScorer
from trl_crome.models import smollm2_path
from trl_crome.pairpm import DEFAULT_TEMPLATE_VERSION, PAIRPM_TEMPLATES
from trl_crome.trainer import CromeRewardConfig, CromeRewardTrainer
from trl_crome.trainer.pairpm_config import CromePairPMConfig
from trl_crome.trainer.pairpm_trainer import CromePairPMTrainer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_train_pairs(path: Path, count: int, max_chars: int) -> Dataset:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if len(row["prompt"]) + len(row["chosen"]) + len(row["rejected"]) <= max_chars:
                rows.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
            if len(rows) == count:
                break
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} pairs of {path} fit in --max-chars {max_chars}")
    return Dataset.from_list(rows)


def common_args(output_dir: str, args: argparse.Namespace) -> dict:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=max(1, args.batch_size // args.micro_batch_size),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=5,
        report_to=[],
        bf16=False,
        activation_checkpointing=True,  # activations of a 30-layer model do not fit beside other jobs otherwise
        save_strategy="no",
        seed=args.seed,
        disable_tqdm=False,
    )


def train_bt(model_path: Path, data: Dataset, args: argparse.Namespace, output_dir: str):
    config = CromeRewardConfig(**common_args(output_dir, args), max_length=args.bt_max_length)
    lora = LoraConfig(task_type="SEQ_CLS", r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=LORA_TARGETS)
    trainer = CromeRewardTrainer(str(model_path), args=config, train_dataset=data, peft_config=lora)
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


def train_pairpm(model_path: Path, data: Dataset, args: argparse.Namespace, output_dir: str):
    config = CromePairPMConfig(
        **common_args(output_dir, args), max_length=args.pairpm_max_length, template_version=args.template
    )
    lora = LoraConfig(task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=LORA_TARGETS)
    trainer = CromePairPMTrainer(str(model_path), args=config, train_dataset=data, peft_config=lora)
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


def timed_rewardbench(scorer, rows):
    start = time.perf_counter()
    result = evaluate_rewardbench(scorer, rows)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(SHARED / "ultrafeedback" / "train.jsonl"))
    parser.add_argument("--rewardbench", default=str(SHARED / "rewardbench" / "filtered.jsonl"))
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--max-chars", type=int, default=800, help="Longest prompt + both answers kept for training.")
    parser.add_argument("--per-subset", type=int, default=2, help="RewardBench pairs per subset (23 subsets).")
    parser.add_argument("--bt-max-length", type=int, default=384)
    parser.add_argument("--pairpm-max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8, help="Pairs per optimizer step.")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="Pairs per forward pass.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--zero-shot", action="store_true", help="Also score the untrained SmolLM2 as a PairPM.")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE_VERSION, choices=sorted(PAIRPM_TEMPLATES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="Write each model's RewardBench report there.")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model_path = smollm2_path()
    data = load_train_pairs(Path(args.train_data), args.train_pairs, args.max_chars)
    rows = subsample_per_subset(load_rewardbench(args.rewardbench), args.per_subset, seed=args.seed)
    print(f"{len(data)} training pairs, {len(rows)} RewardBench pairs, {torch.get_num_threads()} CPU threads")

    results, costs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.zero_shot:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            base = AutoModelForCausalLM.from_pretrained(model_path)
            scorer = PairPMScorer(base, tokenizer, max_length=args.pairpm_max_length, template=args.template)
            results["PairPM, untrained (zero-shot)"], _ = timed_rewardbench(scorer, rows)

        bt, bt_train = train_bt(model_path, data, args, f"{tmp}/bt")
        bt_scorer = RewardScorer(bt.model, bt.processing_class, max_length=args.bt_max_length, chat_template=False)
        results["Bradley-Terry"], bt_eval = timed_rewardbench(bt_scorer, rows)
        costs["Bradley-Terry"] = (bt_train, bt_eval)
        del bt, bt_scorer

        pairpm, pairpm_train = train_pairpm(model_path, data, args, f"{tmp}/pairpm")
        # Scored in its trained format: the same template and truncation.
        pairpm_scorer = PairPMScorer(
            pairpm.model, pairpm.processing_class, max_length=args.pairpm_max_length, template=args.template
        )
        results["PairPM"], pairpm_eval = timed_rewardbench(pairpm_scorer, rows)
        costs["PairPM"] = (pairpm_train, pairpm_eval)

    sections = list(next(iter(results.values())).section_scores)
    print("\n## RewardBench accuracy (%), SmolLM2-135M-Instruct + LoRA, same pairs and budget\n")
    print("| model | " + " | ".join(sections) + " | Overall | length-bias gap |")
    print("|---|" + "---|" * (len(sections) + 2))
    for name, result in results.items():
        cells = [f"{100 * result.section_scores[s]:.1f}" for s in sections]
        gap = "n/a" if result.length_bias_gap is None else f"{100 * result.length_bias_gap:+.1f}"
        print(f"| {name} | " + " | ".join(cells) + f" | **{100 * result.overall:.1f}** | {gap} |")
    print("\n## Cost (seconds, this run)\n")
    print("| model | train | RewardBench scoring |")
    print("|---|---|---|")
    for name, (train_s, eval_s) in costs.items():
        print(f"| {name} | {train_s:.0f} | {eval_s:.0f} |")
    ratio_train = costs["PairPM"][0] / costs["Bradley-Terry"][0]
    ratio_eval = costs["PairPM"][1] / costs["Bradley-Terry"][1]
    print(f"\nPairPM / BT cost ratio: training {ratio_train:.2f}x, scoring {ratio_eval:.2f}x")
    if args.output_dir:
        for name, result in results.items():
            result.save(Path(args.output_dir) / name.split(",")[0].replace(" ", "_").lower())


if __name__ == "__main__":
    main()
