"""Point 4 of the evidence experiment: vanilla vs RRM-style vs Crome on the 1,000 real UltraFeedback pairs.

The same reward model as the controlled task (SmolLM2-135M-Instruct, LoRA on its last layer, see
`last_layer_lora.py`) is trained on:

- **vanilla**: the UltraFeedback pairs;
- **RRM-style**: the pairs, plus per pair one tie of two answers under another example's prompt (RRM's off-topic
  tie) and one *non-contextual* preference (that prompt's own chosen answer beats one of the off-topic answers);
- **Crome**: the pairs, plus the real [`~trl_crome.CromeAugmenter`] output: Irrelevant Query Neutrals of every pair
  (the same ties as RRM's, made by the same code) and causal pairs written by the local `TransformersOracle`
  (SmolLM2-135M-Instruct) for the first `--oracle-pairs` pairs, with their own neutrals.

UltraFeedback has no attribute a program can check, so the programmatic oracle of the controlled task does not apply.
Every set gets the same budget (`epochs` x 1,000 pairs sampled, whatever the set's size) and is scored on a seeded
per-subset sample of RewardBench after every epoch, with the official section weights and the length-bias gap.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trl_crome.augment import CromeAugmenter, CromeAugmenterConfig
from trl_crome.evaluation.rewardbench import load_rewardbench, score_rewardbench, subsample_per_subset
from trl_crome.oracles.base import Oracle

from .last_layer_lora import LastLayerCache, LastLayerRewardModel, sequence_ids, train_reward_model

SECTIONS = ("Chat", "Chat Hard", "Safety", "Reasoning")
SETS = ("vanilla", "RRM-style", "Crome")


@dataclass
class RealDataConfig:
    data_dir: Path
    output_dir: Path
    max_prompt_tokens: int = 40
    max_answer_tokens: int = 80
    rewardbench_per_subset: int = 8
    oracle_pairs: int = 8
    oracle_max_new_tokens: int = 160
    epochs: int = 6
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    batch_size: int = 32
    learning_rate: float = 5e-4
    lora_rank: int = 16


class TextClipper:
    """Cuts texts to their first `n` tokens, so that a sequence keeps both its prompt and the start of its answer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str, n: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return text if len(ids) <= n else self.tokenizer.decode(ids[:n])


def load_pairs(path: Path, clip: TextClipper, config: RealDataConfig) -> tuple[list[dict], int]:
    """The UltraFeedback pairs, clipped; pairs with an empty answer or two identical answers are dropped (counted)."""
    rows, dropped = [], 0
    for line in path.read_text().splitlines():
        row = json.loads(line)
        pair = {
            "prompt": clip(row["prompt"], config.max_prompt_tokens),
            "chosen": clip(row["chosen"], config.max_answer_tokens),
            "rejected": clip(row["rejected"], config.max_answer_tokens),
        }
        if pair["chosen"] == pair["rejected"] or not (pair["chosen"].strip() and pair["rejected"].strip()):
            dropped += 1
        else:
            rows.append(pair)
    return rows, dropped


def augmenter_rows(pairs: list[dict], oracle, config: RealDataConfig, causal: bool, cache: str) -> tuple[list, dict]:
    augmenter_config = CromeAugmenterConfig(
        preset="lite",  # the local 135M oracle on CPU, as docs/evidence.md measured it
        max_attributes=1,
        attributes_per_example=1,
        causal_augmentation=causal,
        filter_augmented=False,
        accept_plain_text_rewrites=True,  # a 135M oracle rarely returns the JSON schema (see docs/evidence.md)
        cache_dir=str(config.output_dir / cache),
        show_progress=causal,
    )
    from datasets import Dataset

    augmenter = CromeAugmenter(oracle, augmenter_config)
    data = augmenter(Dataset.from_list(pairs))
    return [{k: row[k] for k in ("prompt", "chosen", "rejected", "tie", "kind", "neutral_of")} for row in data], (
        augmenter.summary
    )


def training_sets(pairs: list[dict], config: RealDataConfig, oracle: Oracle) -> tuple[dict[str, list[dict]], dict]:
    """The three sets; `oracle` writes the causal pairs of the first `config.oracle_pairs` pairs (0: none)."""
    original = [{**pair, "tie": False, "kind": "original"} for pair in pairs]
    neutral_rows, _ = augmenter_rows(pairs, oracle, config, causal=False, cache="iqn_cache")  # makes no oracle call
    neutrals = [row for row in neutral_rows if row["tie"]]
    chosen_of = {pair["prompt"]: pair["chosen"] for pair in pairs}
    rng = random.Random(0)
    non_contextual = [
        {
            "prompt": tie["prompt"],
            "chosen": chosen_of[tie["prompt"]],
            "rejected": rng.choice([tie["chosen"], tie["rejected"]]),
        }
        | {"tie": False, "kind": "non_contextual"}
        for tie in neutrals
    ]
    local_rows, summary = [], None
    if config.oracle_pairs:
        subset = pairs[: config.oracle_pairs]
        local_rows, summary = augmenter_rows(subset, oracle, config, causal=True, cache="oracle_cache")
    causal = [row for row in local_rows if row["kind"] == "causal"]
    causal_neutrals = [row for row in local_rows if row["neutral_of"] == "causal"]
    sets = {
        "vanilla": original,
        "RRM-style": original + neutrals + non_contextual,
        "Crome": original + neutrals + causal + causal_neutrals,
    }
    report = {
        "pairs": len(pairs),
        "set_sizes": {name: len(rows) for name, rows in sets.items()},
        "oracle_pairs": config.oracle_pairs,
        "causal_pairs": len(causal),
        "causal_examples": causal[:3],
        "oracle_summary": summary.to_dict() if summary else None,
    }
    return sets, report


def local_oracle(config: RealDataConfig) -> Oracle:
    """SmolLM2-135M-Instruct as the oracle; with `oracle_pairs=0`, a placeholder never called (IQN makes no call)."""
    if not config.oracle_pairs:
        from .closing_oracle import ClosingSentenceOracle

        return ClosingSentenceOracle()
    from trl_crome.oracles.local import TransformersOracle

    return TransformersOracle(max_new_tokens=config.oracle_max_new_tokens)


def run(config: RealDataConfig, model_path: Path) -> dict:
    """Build the sets, cache the frozen layers, train every set x seed, score RewardBench after every epoch."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    clip = TextClipper(tokenizer)
    pairs, dropped = load_pairs(config.data_dir / "ultrafeedback" / "train.jsonl", clip, config)
    started = time.perf_counter()
    sets, report = training_sets(pairs, config, local_oracle(config))
    timing = {"augment_s": time.perf_counter() - started}
    report["dropped_empty_or_identical"] = dropped
    bench_rows = subsample_per_subset(
        load_rewardbench(config.data_dir / "rewardbench" / "filtered.jsonl"), config.rewardbench_per_subset
    )
    bench = [
        {"prompt": clip(row["prompt"], config.max_prompt_tokens)}
        | {side: clip(row[side], config.max_answer_tokens) for side in ("chosen", "rejected")}
        for row in bench_rows
    ]
    report["rewardbench_pairs"] = len(bench)

    cache = LastLayerCache(config.output_dir / "layer_cache", model_path)
    train_ids = sequence_ids(tokenizer, [row for rows in sets.values() for row in rows])
    bench_ids = sequence_ids(tokenizer, bench)
    report["sequences"] = len(train_ids | bench_ids)
    report["tokens"] = sum(len(ids) for ids in (train_ids | bench_ids).values())
    started = time.perf_counter()
    cache.compute(train_ids | bench_ids, desc="SmolLM2 frozen layers (UltraFeedback + RewardBench)")
    timing["frozen_layers_s"] = time.perf_counter() - started
    started = time.perf_counter()

    train_table, bench_table = cache.table(list(train_ids)), cache.table(list(bench_ids))
    bench_chosen, bench_rejected = bench_table.pair_rows(bench)
    steps_per_epoch = -(-len(pairs) // config.batch_size)

    def evaluate(model: LastLayerRewardModel) -> dict:
        rewards = model.rewards(bench_table)
        result = score_rewardbench(bench_rows, {"margin": (rewards[bench_chosen] - rewards[bench_rejected]).tolist()})
        return {**result.section_scores, "overall": result.overall, "length_bias_gap": result.length_bias_gap}

    results, report["steps_per_run"] = {}, {}
    progress = tqdm(total=len(sets) * len(config.seeds), desc="UltraFeedback runs (set x seed)", unit="run")
    for name, rows in sets.items():
        chosen, rejected = train_table.pair_rows(rows)
        tie = torch.tensor([row["tie"] for row in rows])
        results[name] = []
        for seed in config.seeds:
            model = LastLayerRewardModel(cache.backbone, config.lora_rank, 2 * config.lora_rank, seed)
            history = [evaluate(model)]  # epoch 0: the untrained model

            def at_step(step: int, name=name, model=model, history=history) -> None:
                report["steps_per_run"][name] = step  # the budget actually spent, checked by the tests
                if step % steps_per_epoch == 0:
                    history.append(evaluate(model))

            train_reward_model(
                model,
                train_table,
                chosen,
                rejected,
                tie,
                steps_per_epoch * config.epochs,
                config.batch_size,
                config.learning_rate,
                seed=seed,
                on_step=at_step,
            )
            results[name].append(history)
            progress.update()
    progress.close()
    timing["training_s"] = time.perf_counter() - started
    return {"data": report, "results": results, "timing": timing}


def _cell(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * mean:.1f} ± {scale * spread:.1f}"


def final_table(results: dict[str, list[list[dict]]]) -> str:
    """RewardBench after the last epoch: sections, overall and length-bias gap, mean ± std over seeds."""
    columns = (*SECTIONS, "overall", "length_bias_gap")
    lines = ["| training set | " + " | ".join(columns).replace("length_bias_gap", "length-bias gap") + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    untrained = next(iter(results.values()))
    cells = [_cell([history[0][column] for history in untrained]) for column in columns]
    lines.append("| untrained (epoch 0, the same for every set) | " + " | ".join(cells) + " |")
    for name, per_seed in results.items():
        cells = [_cell([history[-1][column] for history in per_seed]) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def difference_table(results: dict[str, list[list[dict]]], base: str = "vanilla") -> str:
    """Each set minus `base` after the last epoch, paired by seed (same initialisation and sampling seed)."""
    columns = (*SECTIONS, "overall", "length_bias_gap")
    lines = [f"| minus {base} | " + " | ".join(columns).replace("length_bias_gap", "length-bias gap") + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, per_seed in results.items():
        if name == base:
            continue
        cells = [_cell([h[-1][c] - b[-1][c] for h, b in zip(per_seed, results[base], strict=True)]) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def epoch_table(results: dict[str, list[list[dict]]]) -> str:
    """Section accuracies (mean over seeds) after every epoch; epoch 0 is the untrained model."""
    lines = ["| training set | epoch | " + " | ".join(SECTIONS) + " | length-bias gap |", "|---" * 7 + "|"]
    for name, per_seed in results.items():
        for epoch in range(len(per_seed[0])):
            means = [statistics.mean(h[epoch][c] for h in per_seed) for c in (*SECTIONS, "length_bias_gap")]
            lines.append(f"| {name} | {epoch} | " + " | ".join(f"{100 * m:.1f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (*SECTIONS, "length_bias_gap")
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6), sharex=True)
    for ax, panel in zip(axes, panels, strict=True):
        for name, per_seed in results.items():
            epochs = range(len(per_seed[0]))
            values = [[100 * h[epoch][panel] for h in per_seed] for epoch in epochs]
            mean = [statistics.mean(v) for v in values]
            spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.plot(epochs, mean, marker="o", markersize=3, label=name)
            ax.fill_between(
                epochs, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)], alpha=0.15
            )
        ax.set_title(panel.replace("length_bias_gap", "length-bias gap (points)"))
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("RewardBench accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M (LoRA, last layer) on 1,000 UltraFeedback pairs: RewardBench sample after each epoch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
