"""`trl-crome eval`: RewardBench (v1 and 2), RM-Bench, robustness transformations and Best-of-N for any reward model
or PairPM folder.

```bash
trl-crome eval rewardbench --model out/crome-rm --data hub --output eval/
trl-crome eval rewardbench2 --model out/crome-pairpm --data hub --output eval/
trl-crome eval rmbench --model out/crome-rm --data chat_filtered.json math_filtered.json --output eval/
trl-crome eval robustness --model out/crome-rm --data rewardbench.jsonl --per-subset 20 --output eval/
trl-crome eval bon --model out/crome-rm --task gsm8k --data gsm8k/test.jsonl --limit 200 --output eval/
```
"""

from __future__ import annotations

import argparse
import json

BON_TASKS = ("gsm8k", "xstest", "coconot", "pools")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="Model folder or Hub id (PEFT adapter folders work): a reward model, or a PairPM (not for bon).",
    )
    parser.add_argument("--output", required=True, help="Folder for the JSON, markdown and PNG reports.")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per forward pass.")
    parser.add_argument("--max-length", type=int, default=None, help="Keep the last N tokens of longer sequences.")
    parser.add_argument(
        "--chat-template",
        choices=("auto", "on", "off"),
        default="auto",
        help="Token format: 'on' = the tokenizer's chat template, 'off' = prompt + answer + EOS (as trained).",
    )
    parser.add_argument("--dtype", default=None, help="Model dtype when loading, e.g. bfloat16.")
    parser.add_argument("--device", default=None, help="Device, e.g. cuda:0 (default: CUDA when available).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of subsamples and random edits.")


def _add_model_type(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-type",
        choices=("auto", "reward", "pairpm"),
        default="auto",
        help="'reward' scores each answer, 'pairpm' compares answer pairs (PairPMScorer, both orders); 'auto' picks "
        "'pairpm' for a folder holding pairpm.json.",
    )


def _add_rewardbench_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default="hub", help="RewardBench JSONL / parquet file, or 'hub' for allenai/reward-bench (filtered)."
    )
    parser.add_argument("--per-subset", type=int, default=None, help="Score at most N pairs per subset (seeded).")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="Evaluate a reward model: RewardBench (v1, 2), RM-Bench, robustness, Best-of-N."
    )
    tasks = parser.add_subparsers(dest="eval_command", required=True)

    rewardbench = tasks.add_parser("rewardbench", help="RewardBench with the official section weighting.")
    _add_model_arguments(rewardbench)
    _add_model_type(rewardbench)
    _add_rewardbench_data(rewardbench)
    rewardbench.set_defaults(func=run_rewardbench)

    rewardbench2 = tasks.add_parser("rewardbench2", help="RewardBench 2 with the official best-of-N and Ties scoring.")
    _add_model_arguments(rewardbench2)
    _add_model_type(rewardbench2)
    rewardbench2.add_argument(
        "--data", default="hub", help="RewardBench 2 JSONL / JSON / parquet file, or 'hub' for allenai/reward-bench-2."
    )
    rewardbench2.add_argument(
        "--per-subset", type=int, default=None, help="Score at most N prompts per subset (seeded; Ties: N prompts)."
    )
    rewardbench2.set_defaults(func=run_rewardbench2)

    rmbench = tasks.add_parser("rmbench", help="RM-Bench: style matrices, hard / normal / easy accuracy per domain.")
    _add_model_arguments(rmbench)
    _add_model_type(rmbench)
    rmbench.add_argument(
        "--data",
        nargs="+",
        default=["hub"],
        help="RM-Bench files (total_dataset.json, or per-domain files such as chat_filtered.json), or 'hub' for "
        "THU-KEG/RM-Bench.",
    )
    rmbench.add_argument(
        "--domain", default=None, help="Domain of rows without a 'domain' field (default: from the file name)."
    )
    rmbench.add_argument("--per-domain", type=int, default=None, help="Score at most N rows per domain (seeded).")
    rmbench.set_defaults(func=run_rmbench)

    robustness = tasks.add_parser("robustness", help="Accuracy under meaning-preserving transformations.")
    _add_model_arguments(robustness)
    _add_model_type(robustness)
    _add_rewardbench_data(robustness)
    robustness.add_argument(
        "--transforms",
        default=None,
        help="Comma-separated names (default: every local one; list: `trl-crome eval transforms`).",
    )
    robustness.add_argument(
        "--oracle", choices=("gemini", "openai"), default=None, help="LLM for paraphrase / back_translation."
    )
    robustness.add_argument("--oracle-model", default=None, help="Oracle model name (backend default when unset).")
    robustness.add_argument("--oracle-base-url", default=None, help="Server URL of an OpenAI-compatible oracle.")
    robustness.add_argument("--oracle-cache-dir", default=None, help="On-disk cache of the oracle's answers.")
    robustness.set_defaults(func=run_robustness)

    listing = tasks.add_parser("transforms", help="List the robustness transformations with their definitions.")
    listing.set_defaults(func=run_list_transforms)

    bon = tasks.add_parser("bon", help="Best-of-N curves (safety: XSTest, CoCoNot; math: GSM8K).")
    _add_model_arguments(bon)
    bon.add_argument("--task", choices=BON_TASKS, required=True, help="Pool builder, or 'pools' for a JSONL file.")
    bon.add_argument("--data", required=True, help="The task's file (GSM8K test.jsonl, XSTest completions CSV, ...).")
    bon.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="Values of N.")
    bon.add_argument("--limit", type=int, default=None, help="Use the first N prompts (gsm8k, coconot).")
    bon.add_argument("--num-candidates", type=int, default=8, help="Pool size for gsm8k.")
    bon.add_argument(
        "--generate-with", default=None, help="gsm8k: sample the candidates from this causal LM instead of the gold."
    )
    bon.add_argument("--max-new-tokens", type=int, default=256, help="Sample length with --generate-with.")
    bon.set_defaults(func=run_best_of_n)


def _scorer(args: argparse.Namespace):
    """A `PairPMScorer` for `--model-type pairpm` (or `auto` and a folder with pairpm.json), else a `RewardScorer`."""
    from trl_crome.evaluation import RewardScorer
    from trl_crome.evaluation.pair_scoring import is_pairpm_folder

    chat_template = {"auto": None, "on": True, "off": False}[args.chat_template]
    model_type = getattr(args, "model_type", "reward")
    if model_type == "pairpm" or (model_type == "auto" and is_pairpm_folder(args.model)):
        from trl_crome.evaluation.pairpm import PairPMScorer

        return PairPMScorer(  # template, chat-template use and max_length default to the folder's pairpm.json
            args.model,
            batch_size=args.batch_size,
            max_length=args.max_length,
            use_chat_template=chat_template,
            device=args.device,
            torch_dtype=args.dtype,
        )
    return RewardScorer(
        args.model,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        chat_template=chat_template,
        torch_dtype=args.dtype,
    )


def _load_rows(args: argparse.Namespace) -> list[dict]:
    from trl_crome.evaluation.rewardbench import load_rewardbench, subsample_per_subset

    rows = load_rewardbench(args.data)
    return subsample_per_subset(rows, args.per_subset, args.seed) if args.per_subset else rows


def run_rewardbench(args: argparse.Namespace) -> int:
    from trl_crome.evaluation import evaluate_rewardbench

    result = evaluate_rewardbench(_scorer(args), _load_rows(args), output_dir=args.output)
    print(result.to_markdown())
    return 0


def run_rewardbench2(args: argparse.Namespace) -> int:
    from trl_crome.evaluation import evaluate_rewardbench2, load_rewardbench2

    rows = load_rewardbench2(args.data)  # validated before the model is loaded
    result = evaluate_rewardbench2(
        _scorer(args), rows, per_subset=args.per_subset, seed=args.seed, output_dir=args.output
    )
    print(result.to_markdown())
    return 0


def run_rmbench(args: argparse.Namespace) -> int:
    from trl_crome.evaluation import evaluate_rmbench, load_rmbench

    rows = load_rmbench(None if args.data == ["hub"] else args.data, domain=args.domain)
    result = evaluate_rmbench(_scorer(args), rows, per_domain=args.per_domain, seed=args.seed, output_dir=args.output)
    print(result.to_markdown())
    return 0


def _oracle(args: argparse.Namespace):
    if args.oracle == "gemini":
        from trl_crome.oracles.gemini import GeminiOracle

        return GeminiOracle(model=args.oracle_model) if args.oracle_model else GeminiOracle()
    if args.oracle == "openai":
        from trl_crome.oracles.openai_compat import OpenAICompatibleOracle

        if not args.oracle_model or not args.oracle_base_url:
            raise SystemExit("--oracle openai needs --oracle-model and --oracle-base-url")
        return OpenAICompatibleOracle(model=args.oracle_model, base_url=args.oracle_base_url)
    return None


def run_list_transforms(args: argparse.Namespace) -> int:
    from trl_crome.evaluation import list_transforms

    for transform in list_transforms():
        print(f"{transform.name:24} {transform.family:13} {'+'.join(transform.fields):16} {transform.definition}")
    return 0


def run_robustness(args: argparse.Namespace) -> int:
    from trl_crome.evaluation import evaluate_robustness

    names = args.transforms.split(",") if args.transforms else None
    result = evaluate_robustness(
        _scorer(args),
        _load_rows(args),
        transforms=names,
        seed=args.seed,
        oracle=_oracle(args),
        cache_dir=args.oracle_cache_dir,
        output_dir=args.output,
    )
    print(result.to_markdown())
    return 0


def run_best_of_n(args: argparse.Namespace) -> int:
    import torch

    from trl_crome.evaluation import (
        coconot_pools,
        evaluate_best_of_n,
        gsm8k_generated_pools,
        gsm8k_pools,
        load_pools,
        xstest_pools,
    )

    if args.task == "gsm8k" and args.generate_with:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        policy = AutoModelForCausalLM.from_pretrained(args.generate_with, dtype=args.dtype)
        policy.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        pools = gsm8k_generated_pools(
            args.data,
            policy,
            AutoTokenizer.from_pretrained(args.generate_with),
            num_candidates=args.num_candidates,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        del policy
    elif args.task == "gsm8k":
        pools = gsm8k_pools(args.data, num_candidates=args.num_candidates, limit=args.limit, seed=args.seed)
    elif args.task == "xstest":
        pools = xstest_pools(args.data)
    elif args.task == "coconot":
        pools = coconot_pools(args.data, limit=args.limit)
    else:
        pools = load_pools(args.data)
    result = evaluate_best_of_n(_scorer(args), pools, ns=args.n, output_dir=args.output)
    print(result.to_markdown())
    print(json.dumps(result.counts))
    return 0
