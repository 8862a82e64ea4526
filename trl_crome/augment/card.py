"""The dataset card of an augmented data set, and its upload to the Hugging Face Hub.

The card says where the data comes from and how it was made: the source data, the oracle and its model, the preset
and every setting, the counts per kind, neutral type and reject reason, the verdicts, tokens and cost, the template
versions and the provenance columns. It is built from the run's [`~trl_crome.augment.AugmentationSummary`] and
configuration only: no URL, key, token or local path of the run goes into it. The upload is `datasets`' own
`Dataset.push_to_hub` (Parquet shards, and the card's `dataset_info` / `configs` metadata), after the card itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from .. import __version__

if TYPE_CHECKING:
    from datasets import Dataset

    from .augmenter import CromeAugmenterConfig
    from .summary import AugmentationSummary

PAPER_URL = "https://arxiv.org/abs/2506.16507"
CITATION = """@inproceedings{srivastava2026crome,
  title     = {Robust Reward Modeling via Causal Rubrics},
  author    = {Srivastava, Pragya and Singh, Harman and Madhavan, Rahul and others},
  booktitle = {International Conference on Learning Representations},
  year      = {2026},
  eprint    = {2506.16507},
  archivePrefix = {arXiv}
}"""
# The output columns, as docs/augmenter.md ("Output format") describes them.
COLUMNS = (
    ("prompt, chosen, rejected", "as in the source", "For a tie, chosen and rejected just hold the two answers."),
    ("tie", "bool", "True for neutral pairs (target 0.5)."),
    ("kind", "str", '"original", "causal" or "neutral".'),
    ("source_row", "int", "Index of the source row the pair comes from."),
    (
        "attribute",
        "str or null",
        "The causal attribute of a causal pair, or of the causal pair a neutral was made from.",
    ),
    ("direction", "str or null", '"degrade" or "upgrade", likewise.'),
    ("neutral_of", "str or null", 'For a neutral pair: "original" or "causal", the kind of pair it was made from.'),
    ("neutral_type", "str or null", 'For a neutral pair: "iqn", "aligned" or "paraphrase".'),
)
# Settings that say where a run kept its files or how it was driven, not what it wrote: not in the card.
LOCAL_FIELDS = ("output_dir", "cache_dir", "show_progress", "push_to_hub", "hub_private_repo")


def dataset_card(
    summary: AugmentationSummary, config: CromeAugmenterConfig, source_name: str | None, backend: str
) -> DatasetCard:
    """The card of an augmented data set.

    Args:
        summary ([`~trl_crome.augment.AugmentationSummary`]):
            The run's summary: every number in the card is one of its numbers.
        config ([`~trl_crome.CromeAugmenterConfig`]):
            The run's settings (the preset applied).
        source_name (`str` or `None`):
            The source data set: a Hub name, or a local file (only its name is shown).
        backend (`str`):
            The oracle's class, e.g. `"GeminiOracle"`.
    """
    source = _source(source_name)
    total = sum(summary.pairs.values())
    metadata = DatasetCardData(
        pretty_name=f"Crome augmentation of {source}",
        tags=["trl", "trl-crome", "crome", "reward-modeling", "preference", "synthetic"],
        size_categories=[_size_category(total)],
        source_datasets=[source_name] if _is_hub_name(source_name) else None,
    )
    lines = [
        f"# Crome augmentation of {source}",
        "",
        f"Preference pairs for causally robust reward models ([Crome]({PAPER_URL})): the original pairs of {source}, "
        f"causal pairs (counterfactual rewrites along one attribute) and neutral tie pairs, written by the oracle "
        f"`{summary.oracle}` with trl-crome {__version__} (`CromeAugmenter`, preset `{summary.preset}`). Train on it "
        "with `trl_crome.CromeRewardTrainer`.",
        "",
    ]
    if summary.stopped is not None:
        lines += [
            f"**Partial**: the run stopped at its cost cap (${summary.stopped['max_cost']:,.4f}) in step "
            f"`{summary.stopped['step']}`: rows 0 to {summary.rows_done - 1:,} of {summary.input_rows:,}.",
            "",
        ]
    lines += ["## Source data", ""]
    lines += _table(
        ("", "value"),
        [
            ("source data set", source),
            ("rows read", _n(summary.input_rows)),
            ("rows augmented", _n(summary.rows_done)),
        ],
    )
    lines += ["## Oracle", ""]
    lines += _table(("", "value"), [("backend", backend), ("model", f"`{summary.oracle}`")])
    lines += ["## Preset and settings", ""]
    lines += _table(("setting", "value"), _settings(config))
    lines += ["## Counts", "", "Pairs per kind:", ""]
    lines += _table(("kind", "pairs"), [*((k, _n(v)) for k, v in summary.pairs.items()), ("total", _n(total))])
    if summary.neutrals:
        lines += ["Neutral pairs per type:", ""]
        lines += _table(("type", "pairs"), [(k, _n(v)) for k, v in summary.neutrals.items()])
    lines += ["Rewrites rejected by the checks, per reason (before verification):", ""]
    lines += _table(("reason", "rewrites"), [(k, _n(v)) for k, v in summary.rejects.items()] or [("none", "0")])
    if summary.verification:
        verification = summary.verification
        rows = [("pass", _n(verification["passed"]))]
        rows += [
            (f"fail ({direction}, {attribute})", _n(n))
            for direction, failed in verification["failed"].items()
            for attribute, n in failed.items()
        ]
        rows += [(f"unverified ({reason})", _n(n)) for reason, n in verification["unverified"].items()]
        lines += ["Oracle verification of the rewrites that passed the checks:", ""]
        lines += _table(("verdict", "rewrites"), rows)
    other = (
        [("rows incomplete (transient oracle failures)", _n(summary.rows_incomplete))]
        if summary.rows_incomplete
        else []
    )
    other += [(f"attribute fallbacks ({reason})", _n(n)) for reason, n in summary.rubric_fallbacks.items()]
    other += [
        (f"attributes without causal elements ({reason})", _n(n)) for reason, n in summary.element_failures.items()
    ]
    other += [("importance scores rescaled", _n(summary.rescaled_scores))] if summary.rescaled_scores else []
    other += [("neutrals missing (too few prompts)", _n(summary.neutrals_missing))] if summary.neutrals_missing else []
    other += [(f"filtered out by the baseline ({kind})", _n(n)) for kind, n in summary.filtered_out.items()]
    if other:
        lines += ["Other counts:", ""]
        lines += _table(("", "count"), other)
    lines += [
        "## Tokens and cost",
        "",
        "Per step: the calls the last run sent (retries included), the answers it read from the cache, and the tokens "
        "of all of them (cached answers counted as they were paid). Costs are estimates at the oracle's prices.",
        "",
    ]
    steps = [
        (
            step,
            _n(totals["calls"]),
            _n(totals["cache_hits"]),
            _n(totals["input_tokens"] + totals["cached_input_tokens"]),
            _n(totals["output_tokens"] + totals["cached_output_tokens"]),
        )
        for step, totals in summary.steps.items()
    ]
    lines += _table(("step", "calls", "cache hits", "input tokens", "output tokens"), steps)
    lines += _table(
        ("", "value"),
        [
            ("calls (last run)", _n(summary.calls)),
            ("cache hits", _n(summary.cache_hits)),
            ("input tokens (last run)", _n(summary.input_tokens)),
            ("output tokens (last run)", _n(summary.output_tokens)),
            ("cost of the last run (USD)", f"{summary.cost_usd:,.4f}"),
            ("cost of the cached answers when paid (USD)", f"{summary.cached_cost_usd:,.4f}"),
            ("total cost of the answers (USD)", f"{summary.spent_usd:,.4f}"),
        ],
    )
    lines += ["## Prompt templates", "", "The packaged templates (name@version) that wrote the answers, per step:", ""]
    lines += _table(
        ("step", "templates"),
        [(step, ", ".join(f"`{t}`" for t in names)) for step, names in summary.templates.items()],
    )
    lines += ["## Columns", "", "Every pair says where it comes from (provenance columns):", ""]
    lines += _table(("column", "type", "meaning"), COLUMNS)
    lines += [
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'data = load_dataset("<this repository>", split="train")',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return DatasetCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines))


def push_to_hub(
    dataset: Dataset, card: DatasetCard, repo_id: str, private: bool | None = None, token: str | None = None
) -> str:
    """Upload `dataset` and its `card` to the Hub data set `repo_id` (created when missing); returns its URL.

    The card goes first; `Dataset.push_to_hub` then adds the Parquet shards and merges its `dataset_info` and
    `configs` metadata into the card. `token` defaults to the Hugging Face login or `HF_TOKEN`.
    """
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=str(card).encode(),
        path_in_repo="README.md",
        repo_id=url.repo_id,
        repo_type="dataset",
        commit_message="Dataset card (trl-crome)",
    )
    dataset.push_to_hub(url.repo_id, private=private, token=token, commit_message="Crome augmented data (trl-crome)")
    return str(url)


def _settings(config: CromeAugmenterConfig) -> list[tuple[str, str]]:
    rows = []
    for name, value in dataclasses.asdict(config).items():
        if name in LOCAL_FIELDS:
            continue
        if isinstance(value, dict):  # the fallback attributes: their names
            value = ", ".join(value)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, str) and Path(value).exists():  # a local tokenizer: its name, not where it lives
            value = Path(value).name
        rows.append((name, f"`{value}`" if value is not None else "-"))
    return rows


def _table(header: tuple[str, ...], rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _n(value: int) -> str:
    return f"{value:,}"


def _source(name: str | None) -> str:
    if not name:
        return "a preference data set"
    return f"`{Path(name).name}` (a local file)" if Path(name).exists() else f"`{name}`"


def _is_hub_name(name: str | None) -> bool:
    return bool(name) and not Path(name).exists() and name.count("/") <= 1


def _size_category(pairs: int) -> str:
    for limit, category in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if pairs < limit:
            return category
    return "1M<n<10M" if pairs < 10_000_000 else "10M<n<100M"
