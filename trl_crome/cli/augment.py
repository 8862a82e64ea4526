"""`trl-crome augment`: turn a preference dataset into Crome training data with an oracle LLM.

`--preset paper` (default) runs the Crome paper's pipeline, `--preset lite` a cheaper one; the pipeline options
override single settings of the preset. `--dry-run` prints the calls, tokens and cost per step and pays for nothing;
`--max-cost` caps a run (exit status 3 when it stopped there: the finished rows are written, rerun with a higher cap
to go on). Rerunning the same command after a crash, `kill -9` or Ctrl-C resumes: every answered oracle call is cached
in the run's state folder and is not paid for again, and every finished chunk of rows is kept there and not recomputed.
The output is written with its summary and its dataset card; `--push-to-hub REPO` uploads both (exit status 4 when the
upload fails: the output is saved, rerun to retry). Exit status 5: oracle calls failed transiently after their retries
and the rows that needed them are incomplete (nothing is pushed); rerun to complete them. API keys are read from the
environment only (`GEMINI_API_KEY` / `GOOGLE_API_KEY`, `OPENAI_API_KEY`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

JSON_SUFFIXES = (".jsonl", ".json")
SUMMARY_NAME = "augmentation_summary.json"
CARD_NAME = "README.md"  # the dataset card, in an output folder
ESTIMATE_NAME = "augmentation_estimate.json"
STOPPED_AT_MAX_COST = 3  # exit status of a run that stopped at --max-cost
PUSH_FAILED = 4  # exit status of a run whose output is saved but could not be uploaded
INCOMPLETE = 5  # exit status of a run with rows left incomplete by transient oracle failures (rerun to complete)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "augment",
        help="Write Crome's causal and neutral pairs for a preference dataset with an oracle LLM.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        required=True,
        help="A local .jsonl / .json / .parquet / .csv file (optionally compressed), a folder saved with "
        "`save_to_disk`, or a Hugging Face Hub dataset name. Columns: prompt (optional), chosen, rejected.",
    )
    data.add_argument("--split", default="train", help="Split of a Hub dataset (default: train).")
    data.add_argument(
        "--output",
        required=True,
        help="A folder (written with `save_to_disk`) or a .jsonl / .json file (JSON lines). The summary is saved "
        "beside it; the resume state goes to the folder itself, or to <file>.state/ for a file.",
    )
    data.add_argument("--max-rows", type=int, help="Only augment the first N rows.")

    oracle = parser.add_argument_group("oracle")
    oracle.add_argument("--oracle", required=True, choices=("gemini", "openai", "transformers"))
    oracle.add_argument("--model", help="Model name, or a local path for transformers (default: the backend default).")
    oracle.add_argument("--base-url", help="Server URL: any OpenAI-compatible server, or a Gemini API endpoint.")
    oracle.add_argument("--batch", action="store_true", help="Use the Gemini Batch API (half price, slower).")
    oracle.add_argument("--max-concurrency", type=int, help="Oracle requests in flight at once.")
    oracle.add_argument(
        "--rpm", type=float, help="Pace online calls to this many per minute (your quota; set it ~5%% under)."
    )
    oracle.add_argument("--tpm", type=float, help="Pace online calls to this many input tokens per minute.")
    oracle.add_argument(
        "--outage-timeout",
        type=float,
        help="Stop the run when calls have failed for this many seconds in a row (default 120; 15 before any call "
        "has succeeded). Answers already paid for are kept.",
    )
    oracle.add_argument("--batch-size", type=int, help="Requests per Batch API job (default 1000).")
    oracle.add_argument("--batch-max-jobs", type=int, help="Batch API jobs in flight at once (default 50).")
    oracle.add_argument("--cache-dir", help="Oracle cache folder (default: <state folder>/oracle_cache).")
    oracle.add_argument(
        "--thinking-budget", type=int, help="Gemini thinking tokens per call (0: off; default: the model's own)."
    )

    steps = parser.add_argument_group("pipeline (unset options take the preset's value)")
    steps.add_argument(
        "--preset", choices=("paper", "lite"), help="'paper' (default): the Crome paper's pipeline; 'lite': cheaper."
    )
    steps.add_argument("--no-rubrics", action="store_true", help="Skip attribute calls; use the fallback attributes.")
    steps.add_argument("--max-attributes", type=int, help="Attributes asked for and kept (paper 5, lite 2).")
    steps.add_argument("--attributes-per-example", type=int, help="Attributes rewritten per row (paper 5, lite 2).")
    steps.add_argument(
        "--causal-elements", action=argparse.BooleanOptionalAction, help="Ask for causal elements (paper only)."
    )
    steps.add_argument("--elements-per-attribute", type=int, help="Causal elements per attribute (default 5).")
    steps.add_argument(
        "--directions", nargs="+", default=["degrade", "upgrade"], choices=("degrade", "upgrade"), metavar="DIR"
    )
    steps.add_argument("--verify", action=argparse.BooleanOptionalAction, help="Verify each rewrite (paper: yes).")
    steps.add_argument("--no-causal", action="store_true", help="Write no counterfactuals.")
    steps.add_argument("--no-neutrals", action="store_true", help="Make no neutral (tie) pairs.")
    steps.add_argument(
        "--neutral-types", nargs="+", choices=("iqn", "aligned", "paraphrase"), metavar="TYPE",
        help="Neutral types: iqn (default), aligned (causally-aligned), paraphrase.",
    )  # fmt: skip
    steps.add_argument("--neutrals-per-original", type=int, help="IQN pairs per original pair (paper 0, lite 1).")
    steps.add_argument("--neutrals-per-causal", type=int, help="IQN pairs per causal pair (paper 0, lite 1).")
    steps.add_argument("--neutrals-per-row", type=float, help="IQN pairs per row from its pairs (paper 1, lite 0).")
    steps.add_argument("--check-length", action=argparse.BooleanOptionalAction, help="Length gate (lite: yes).")
    steps.add_argument("--min-length-ratio", type=float, help="Length gate: shortest rewrite / source (0.5).")
    steps.add_argument("--max-length-ratio", type=float, help="Length gate: longest rewrite / source (2.0).")
    steps.add_argument("--check-format", action=argparse.BooleanOptionalAction, help="Markdown gate (lite: yes).")
    steps.add_argument("--length-tokenizer", help="Count lengths in tokens of this tokenizer instead of characters.")
    steps.add_argument("--baseline", help="Baseline reward model (path or Hub name) for the uncertainty filter.")
    steps.add_argument("--tau", type=float, default=0.2, help="Filter threshold (default 0.2).")
    steps.add_argument("--seed", type=int, default=42)
    steps.add_argument(
        "--chunk-size", type=int,
        help="Rows that go through all oracle steps together and are written as one chunk (256; with --batch, enough "
        "to fill the jobs in flight).",
    )  # fmt: skip
    steps.add_argument(
        "--chunks-in-flight", type=int, help="Chunks whose stages overlap, one stage apart (1; with --batch, 4)."
    )
    steps.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")

    cost = parser.add_argument_group("cost")
    cost.add_argument(
        "--dry-run", action="store_true",
        help="Print the calls, tokens and cost per step (standard and Batch prices) and stop: nothing is sent.",
    )  # fmt: skip
    cost.add_argument(
        "--estimate-rows", type=int, default=500,
        help="--dry-run estimates on a seeded sample of this many rows and projects to all (default 500).",
    )  # fmt: skip
    cost.add_argument("--thinking-tokens", type=int, help="--dry-run: thinking tokens per call to assume.")
    cost.add_argument(
        "--project-rows", type=int, help="--dry-run: project to this many rows (when --dataset is a sample of them)."
    )
    cost.add_argument(
        "--max-cost", type=float,
        help="Stop when the run's answers cost this many USD (cached ones at what they cost); exit status 3.",
    )  # fmt: skip
    hub = parser.add_argument_group("sharing")
    hub.add_argument(
        "--push-to-hub", metavar="REPO",
        help="Upload the output to this Hub data set repository (user/name) with its dataset card, when the run "
        "completes. The token comes from `hf auth login` or HF_TOKEN.",
    )  # fmt: skip
    hub.add_argument("--hub-private", action="store_true", help="Create the Hub repository private.")
    parser.set_defaults(func=run)


def output_paths(output: str) -> tuple[Path, Path, Path, Path]:
    """`(output, state folder, summary file, dataset card)` for a folder or a JSON lines file."""
    path = Path(output)
    if path.suffix in JSON_SUFFIXES:
        state, summary = path.with_name(path.name + ".state"), path.with_name(f"{path.stem}.summary.json")
        return path, state, summary, path.with_name(f"{path.stem}.README.md")
    return path, path, path / SUMMARY_NAME, path / CARD_NAME


def estimate_path(output: str) -> Path:
    """Where `--dry-run` writes its estimate: beside the summary."""
    path = Path(output)
    return path.with_name(f"{path.stem}.estimate.json") if path.suffix in JSON_SUFFIXES else path / ESTIMATE_NAME


def build_oracle(args: argparse.Namespace, state_dir: Path):
    from ..oracles import make_oracle

    kwargs = {}
    if args.max_concurrency is not None:
        kwargs["max_concurrency"] = args.max_concurrency
    online = {"requests_per_minute": args.rpm, "tokens_per_minute": args.tpm, "outage_timeout": args.outage_timeout}
    batch = {"batch_size": args.batch_size, "batch_max_jobs": args.batch_max_jobs}
    if args.oracle == "transformers" and any(v is not None for v in (*online.values(), *batch.values())):
        raise ValueError("--rpm, --tpm, --outage-timeout and --batch-* do not apply to --oracle transformers.")
    if not args.batch and any(v is not None for v in batch.values()):
        raise ValueError("--batch-size and --batch-max-jobs need --batch.")
    if args.batch and (args.rpm is not None or args.tpm is not None):
        raise ValueError("--rpm and --tpm pace online calls; with --batch, limit the jobs with --batch-max-jobs.")
    kwargs.update({k: v for k, v in {**online, **batch}.items() if v is not None})
    if args.oracle == "gemini":
        if args.base_url:
            kwargs["http_options"] = {"base_url": args.base_url}
        if args.batch:
            kwargs.update(batch=True, state_dir=str(state_dir / "batch_jobs"))
        if args.thinking_budget is not None:
            kwargs["thinking_budget"] = args.thinking_budget
        if args.dry_run and not any(os.environ.get(name) for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY")):
            kwargs["api_key"] = "dry-run"  # an estimate sends nothing: no key needed to see the cost
    elif args.batch:
        raise ValueError("--batch is only available with --oracle gemini.")
    elif args.thinking_budget is not None:
        raise ValueError("--thinking-budget is only available with --oracle gemini.")
    if args.oracle == "openai":
        if not (args.base_url and args.model):
            raise ValueError("--oracle openai needs --base-url and --model.")
        kwargs["base_url"] = args.base_url
    elif args.oracle == "transformers":
        if args.base_url:
            raise ValueError("--base-url does not apply to --oracle transformers (a local model).")
        kwargs.pop("max_concurrency", None)
    return make_oracle(args.oracle, args.model, **kwargs)


def save_output(augmenter, dataset, path: Path) -> None:
    """Write the output: JSON lines a chunk at a time and atomically (a killed run never leaves a half-written file),
    or a `save_to_disk` folder."""
    if path.suffix in JSON_SUFFIXES:
        augmenter.to_json(path)
    else:
        dataset.save_to_disk(str(path))


def config_options(args: argparse.Namespace) -> dict:
    """The [`~trl_crome.CromeAugmenterConfig`] fields given on the command line; the others keep the preset's."""
    options = {
        "preset": args.preset,
        "max_attributes": args.max_attributes,
        "attributes_per_example": args.attributes_per_example,
        "causal_elements": args.causal_elements,
        "elements_per_attribute": args.elements_per_attribute,
        "verify_rewrites": args.verify,
        "neutral_types": args.neutral_types,
        "neutrals_per_original": args.neutrals_per_original,
        "neutrals_per_causal": args.neutrals_per_causal,
        "neutrals_per_row": args.neutrals_per_row,
        "check_length": args.check_length,
        "min_length_ratio": args.min_length_ratio,
        "max_length_ratio": args.max_length_ratio,
        "check_format": args.check_format,
        "chunk_size": args.chunk_size,
        "chunks_in_flight": args.chunks_in_flight,
        "max_cost": args.max_cost,
    }
    return {name: value for name, value in options.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    from ..augment import CromeAugmenter, CromeAugmenterConfig
    from ..data import CromeDataError, load_preference_data
    from ..oracles import OracleFatalError

    output, state_dir, summary_path, card_path = output_paths(args.output)
    try:
        config = CromeAugmenterConfig(
            identify_rubrics=not args.no_rubrics,
            causal_augmentation=not args.no_causal,
            directions=args.directions,
            length_tokenizer=args.length_tokenizer,
            neutral_augmentation=not args.no_neutrals,
            seed=args.seed,
            filter_augmented=args.baseline is not None,
            filter_tau=args.tau,
            output_dir=str(state_dir),
            cache_dir=args.cache_dir,
            max_rows=args.max_rows,
            show_progress=not args.no_progress,
            **config_options(args),
        )
        oracle = build_oracle(args, state_dir)
        dataset = load_preference_data(args.dataset, split=args.split)
    except ValueError as error:  # bad settings, a missing API key, an unreadable input file
        print(f"trl-crome augment: error: {error}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            augmenter = CromeAugmenter(oracle, config)
            estimate = augmenter.estimate(
                dataset, args.estimate_rows, thinking_tokens=args.thinking_tokens, project_rows=args.project_rows
            )
            path = estimate_path(args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(estimate.to_dict(), indent=2) + "\n")
            print(estimate.to_table())
            print(f"Dry run: nothing was sent to the oracle. Estimate saved to {path}.")
            return 0
        augmenter = CromeAugmenter(oracle, config, baseline=args.baseline)
        dataset = augmenter(dataset, dataset_name=args.dataset)
    except (CromeDataError, OracleFatalError) as error:
        print(f"trl-crome augment: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. Answered oracle calls are kept in {config.resolved_cache_dir()}: rerun the same command "
            "to resume without paying for them again.",
            file=sys.stderr,
        )
        return 130
    save_output(augmenter, dataset, output)
    summary = augmenter.summary
    summary.save(summary_path)
    augmenter.dataset_card().save(card_path)
    print(summary.to_table())
    print(f"Saved {len(dataset):,} pairs to {output}, the summary to {summary_path}, the dataset card to {card_path}.")
    if summary.stopped is not None:
        print(
            f"Stopped at --max-cost {config.max_cost:g} USD (spent {summary.stopped['spent_usd']:.4f}, cached answers "
            f"included) in step {summary.stopped['step']}: {summary.rows_done:,} of {summary.input_rows:,} rows "
            "written. Rerun with a higher --max-cost to go on; answered calls are not paid again"
            + (" (nothing was pushed to the Hub)." if args.push_to_hub else "."),
            file=sys.stderr,
        )
        return STOPPED_AT_MAX_COST
    if summary.rows_incomplete:
        pushed = " Nothing was pushed to the Hub." if args.push_to_hub else ""
        print(summary.incomplete_message + pushed, file=sys.stderr)
        return INCOMPLETE
    if args.push_to_hub:
        try:
            url = augmenter.push_to_hub(args.push_to_hub, private=args.hub_private or None)
        except Exception as error:  # the Hub client's errors are many (HTTP, offline mode, auth): all end the same way
            print(
                f"trl-crome augment: error: the upload to {args.push_to_hub} failed ({type(error).__name__}: "
                f"{error}). The output is saved in {output}: rerun the same command to retry (nothing is recomputed).",
                file=sys.stderr,
            )
            return PUSH_FAILED
        print(f"Pushed the data set and its card to {url}.")
    return 0
