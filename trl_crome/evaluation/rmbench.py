"""RM-Bench with the official scoring of THU-KEG/RM-Bench (`scripts/utils.py`, `compute_accuracy`).

Each row holds three chosen and three rejected answers to one prompt, in the style order [concise, detailed plain,
detailed markdown]. Per domain (chat, math, code, safety; `safety-refuse` and `safety-response` rows count as
safety), the 3x3 matrix `M[i][j]` is the share of rows where the chosen answer in style `i` beats the rejected one in
style `j` (strictly: an exact tie is a loss). **hard** = the mean of the 3 cells above the diagonal (the chosen answer
is plainer than the rejected one, so a style-biased model prefers the rejected), **normal** = the diagonal's mean,
**easy** = the mean of the 3 cells below it. Domain score = mean of hard, normal and easy; the overall score and the
overall hard / normal / easy are unweighted means over the four domains.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .benchmark_files import (
    check_row,
    describe,
    is_string_list,
    load_benchmark_rows,
    read_rows,
    row_error,
    subsample,
)
from .pair_scoring import prefer_pairs, score_answers, score_rows
from .reports import grouped_bar_chart, heatmaps, markdown_table, percent, write_reports

RMBENCH_HUB_ID = "THU-KEG/RM-Bench"
RMBENCH_SPLIT = "train"
DATASET_NAME = "RM-Bench"
STYLES = ("concise", "detailed plain", "detailed markdown")
DOMAINS = ("chat", "math", "code", "safety")
# The `domain` values of the data and the domain each is scored in (the official code groups by prefix).
DOMAIN_OF = {
    "chat": "chat",
    "math": "math",
    "code": "code",
    "safety": "safety",
    "safety-refuse": "safety",
    "safety-response": "safety",
}
REQUIRED_FIELDS = ("id", "prompt", "chosen", "rejected", "domain")
ACCURACIES = ("hard", "normal", "easy")


def domain_from_file_name(path: str | os.PathLike) -> str | None:
    """The domain of an official per-domain file (`chat_filtered.json`, `safety-refuse_filtered.json`, ...), or
    `None` when the file name does not start with one."""
    stem = Path(path).stem.lower()
    for domain in sorted(DOMAIN_OF, key=len, reverse=True):  # "safety-refuse" before "safety"
        if stem == domain or stem.startswith((f"{domain}_", f"{domain}-", f"{domain}.")):
            return domain
    return None


def load_rmbench(
    source: str | os.PathLike | Sequence[str | os.PathLike] | None = None, domain: str | None = None
) -> list[dict[str, Any]]:
    """Load and validate RM-Bench rows.

    Args:
        source (`str`, `os.PathLike`, a list of them, or `None`):
            `None` or `"hub"` loads `THU-KEG/RM-Bench` (split "train", every domain); otherwise one or more local
            JSON / JSONL / parquet files in its schema (`id`, `prompt`, `chosen` and `rejected` as lists of 3,
            `domain`), e.g. the official `total_dataset.json` or the per-domain files.
        domain (`str`, *optional*):
            Domain of rows without a `domain` field (the per-domain files have none). Unset, it is read from the file
            name (`chat_filtered.json` -> chat, `safety-refuse_filtered.json` -> safety-refuse).

    Raises:
        [`~trl_crome.CromeDataError`]: naming the first bad row and field (see [`validate_rmbench_rows`]).
    """
    if source is None or str(source) == "hub":
        rows = _with_domain(load_benchmark_rows(None, RMBENCH_HUB_ID, RMBENCH_SPLIT, DATASET_NAME), domain)
    else:
        rows = []
        for path in [source] if isinstance(source, (str, os.PathLike)) else source:
            rows += _with_domain(read_rows(path, DATASET_NAME), domain or domain_from_file_name(path))
    validate_rmbench_rows(rows)
    return rows


def _with_domain(rows: list[dict[str, Any]], domain: str | None) -> list[dict[str, Any]]:
    """`rows`, with `domain` filled in where a row has none."""
    if domain is None:
        return rows
    return [
        row if not isinstance(row, dict) or row.get("domain") is not None else {**row, "domain": domain}
        for row in rows
    ]


def validate_rmbench_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Check every row before anything is scored; raise [`~trl_crome.CromeDataError`] (a `ValueError` with `row` and
    `field`) at the first missing field (`id`, `prompt`, `chosen`, `rejected`, `domain`), prompt that is not a
    string, `chosen` / `rejected` that is not a list of exactly 3 strings, or unknown domain."""
    hints = {"domain": " (pass domain=... or --domain, or name the file after its domain)"}
    for index, row in enumerate(rows):
        check_row(DATASET_NAME, index, row, REQUIRED_FIELDS, hints)
        error = partial(row_error, DATASET_NAME, index)
        for name in ("chosen", "rejected"):
            if not is_string_list(row[name], length=len(STYLES)):
                raise error(name, f"must be a list of 3 strings ({', '.join(STYLES)}), got {describe(row[name])}")
        if row["domain"] not in DOMAIN_OF:
            raise error("domain", f"unknown domain {row['domain']!r}; expected one of {', '.join(DOMAIN_OF)}")


def subsample_rmbench(rows: Sequence[dict[str, Any]], per_domain: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most `per_domain` rows of each scored domain, drawn with `random.Random(seed)`; rows keep their order."""
    return subsample(rows, per_domain, seed, group=lambda row: DOMAIN_OF[row["domain"]])


# ---------------------------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------------------------


def win_matrix(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> list[list[int]]:
    """`W[i][j] = 1` when the chosen answer in style `i` scores strictly higher than the rejected one in style `j`."""
    return [[int(c > r) for r in rejected_scores] for c in chosen_scores]


def style_accuracies(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """`hard` (mean above the diagonal), `normal` (the diagonal) and `easy` (below it) of a 3x3 accuracy matrix."""
    n = len(matrix)
    upper = [matrix[i][j] for i in range(n) for j in range(n) if i < j]
    lower = [matrix[i][j] for i in range(n) for j in range(n) if i > j]
    return {
        "hard": sum(upper) / len(upper),
        "normal": sum(matrix[i][i] for i in range(n)) / n,
        "easy": sum(lower) / len(lower),
    }


@dataclass
class RMBenchResult:
    """Scores of one RM-Bench run (in [0, 1]).

    `matrices[domain][i][j]`: share of the domain's rows where chosen style `i` beats rejected style `j` (styles in
    `STYLES` order). `domains[domain]`: its `hard`, `normal`, `easy` and `score`. `overall`: the same four averaged
    over the domains present (all four in a full run; with `missing_domains` the means are over those present and not
    comparable to the leaderboard). `rows` holds per row its `id`, `domain`, `wins` (the 3x3 0/1 matrix) and the raw
    `scores_chosen` / `scores_rejected`, or for a preference model `preferences[i][j]` = P(chosen i better than
    rejected j).
    """

    matrices: dict[str, list[list[float]]]
    domains: dict[str, dict[str, float]]
    overall: dict[str, float]
    domain_counts: dict[str, int]
    missing_domains: list[str]
    num_rows: int
    model_type: str  # "reward" or "preference"
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def hard_easy_gap(self) -> float:
        """Overall easy minus hard accuracy, in [-1, 1]: how much the answers' style sways the model."""
        return self.overall["easy"] - self.overall["hard"]

    def to_dict(self, include_rows: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["hard_easy_gap"] = self.hard_easy_gap
        if not include_rows:
            data.pop("rows")
        return data

    def to_markdown(self, matrices: bool = True) -> str:
        """Per-domain and overall hard / normal / easy / score, then (with `matrices`) each domain's 3x3 matrix, in
        percent."""
        header = ["Domain", "Rows", "Hard (%)", "Normal (%)", "Easy (%)", "Score (%)"]
        rows = [
            [domain, str(self.domain_counts[domain]), *(percent(scores[k]) for k in (*ACCURACIES, "score"))]
            for domain, scores in self.domains.items()
        ]
        rows.append(
            ["**Overall**", str(self.num_rows), *(f"**{percent(self.overall[k])}**" for k in (*ACCURACIES, "score"))]
        )
        text = f"## RM-Bench ({self.num_rows} rows, {self.model_type} model)\n\n" + markdown_table(header, rows)
        text += f"\nHard-easy gap (easy minus hard): {100 * self.hard_easy_gap:+.2f} points\n"
        if self.missing_domains:
            text += (
                f"\nPartial run: no rows for {', '.join(self.missing_domains)}; the overall scores are means over the "
                "domains present and are not comparable to the leaderboard.\n"
            )
        for domain, matrix in self.matrices.items() if matrices else ():
            text += f"\n### {domain}: chosen style (row) beats rejected style (column), % of rows\n\n"
            lines = [[style, *(percent(value) for value in line)] for style, line in zip(STYLES, matrix)]
            text += markdown_table(["chosen \\ rejected", *STYLES], lines)
        return text

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write `rmbench.json`, `rmbench.md`, `rmbench_rows.jsonl`, `rmbench_matrices.png` (a 3x3 heatmap per domain)
        and `rmbench_accuracy.png` (hard / normal / easy bars per domain and overall)."""
        output = write_reports(output_dir, "rmbench", self.to_dict(), self.to_markdown(), self.rows)
        matrices = {domain: [[100 * v for v in line] for line in matrix] for domain, matrix in self.matrices.items()}
        labels = [style.replace(" ", "\n") for style in STYLES]
        heatmaps(
            matrices,
            labels,
            labels,
            output / "rmbench_matrices.png",
            title="RM-Bench: chosen style (row) beats rejected style (column), %",
            xlabel="rejected",
            ylabel="chosen",
        )
        groups = [*self.domains, "overall"]
        series = {
            name: [100 * scores[name] for scores in self.domains.values()] + [100 * self.overall[name]]
            for name in ACCURACIES
        }
        grouped_bar_chart(groups, series, output / "rmbench_accuracy.png", title="RM-Bench", ylabel="Accuracy (%)")
        return output


def aggregate_rmbench(
    rows: Sequence[dict[str, Any]], wins: Sequence[Sequence[Sequence[int]]], model_type: str = "reward"
) -> RMBenchResult:
    """Aggregate per-row 3x3 win matrices into the domain matrices and the official scores."""
    sums: dict[str, list[list[float]]] = {}
    counts: dict[str, int] = defaultdict(int)
    records = []
    for row, matrix in zip(rows, wins):
        domain = DOMAIN_OF[row["domain"]]
        total = sums.setdefault(domain, [[0.0] * len(STYLES) for _ in STYLES])
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                total[i][j] += value
        counts[domain] += 1
        records.append({"id": row["id"], "domain": row["domain"], "wins": [list(line) for line in matrix]})
    present = [domain for domain in DOMAINS if domain in sums]
    matrices = {d: [[value / counts[d] for value in line] for line in sums[d]] for d in present}
    domains = {}
    for domain in present:
        accuracies = style_accuracies(matrices[domain])
        domains[domain] = {**accuracies, "score": sum(accuracies.values()) / len(accuracies)}
    overall = {
        name: sum(scores[name] for scores in domains.values()) / len(domains) if domains else float("nan")
        for name in (*ACCURACIES, "score")
    }
    return RMBenchResult(
        matrices=matrices,
        domains=domains,
        overall=overall,
        domain_counts={domain: counts[domain] for domain in present},
        missing_domains=[domain for domain in DOMAINS if domain not in sums],
        num_rows=len(rows),
        model_type=model_type,
        rows=records,
    )


# ---------------------------------------------------------------------------------------------------------------
# Scoring with a reward model or a preference model
# ---------------------------------------------------------------------------------------------------------------


def _pointwise(scorer: Any, rows: Sequence[dict[str, Any]]) -> tuple[list, list[dict[str, Any]]]:
    """Each distinct (prompt, answer) scored once; each row's win matrix and scores."""
    prompts = [row["prompt"] for row in rows for _ in range(2 * len(STYLES))]
    answers = [answer for row in rows for answer in row["chosen"] + row["rejected"]]
    rewards = score_answers(scorer, prompts, answers)
    wins, values = [], []
    for index in range(len(rows)):
        scores = rewards[2 * len(STYLES) * index : 2 * len(STYLES) * (index + 1)]
        chosen, rejected = scores[: len(STYLES)], scores[len(STYLES) :]
        wins.append(win_matrix(chosen, rejected))
        values.append({"scores_chosen": chosen, "scores_rejected": rejected})
    return wins, values


def _pairwise(scorer: Any, rows: Sequence[dict[str, Any]]) -> tuple[list, list[dict[str, Any]]]:
    """The 9 comparisons of each row (chosen i vs rejected j), each distinct one asked once; win matrices and
    preferences."""
    cells = [(i, j) for i in range(len(STYLES)) for j in range(len(STYLES))]
    prompts = [row["prompt"] for row in rows for _ in cells]
    answers_a = [row["chosen"][i] for row in rows for i, _ in cells]
    answers_b = [row["rejected"][j] for row in rows for _, j in cells]
    preferences = prefer_pairs(scorer, prompts, answers_a, answers_b)
    wins, values = [], []
    for index in range(len(rows)):
        flat = preferences[len(cells) * index : len(cells) * (index + 1)]
        matrix = [flat[len(STYLES) * i : len(STYLES) * (i + 1)] for i in range(len(STYLES))]
        wins.append([[int(p > 0.5) for p in line] for line in matrix])
        values.append({"preferences": matrix})
    return wins, values


def evaluate_rmbench(
    scorer_or_model: Any,
    data: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[dict[str, Any]] | None = None,
    domain: str | None = None,
    per_domain: int | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    **scorer_kwargs: Any,
) -> RMBenchResult:
    """Evaluate a reward model or a pairwise preference model on RM-Bench with the official scoring.

    Every row is validated before anything is scored. A reward model scores each distinct (prompt, answer) once (6 per
    row, in one call to the scorer, which batches them length-sorted or packed); `M[i][j]` counts the rows where
    `r(chosen_i) > r(rejected_j)` (module docstring). A preference model (`prefer(prompts, a, b)`; a
    [`~trl_crome.evaluation.pairpm.PairPMScorer`] averages both presentation orders) makes the 9 comparisons of the
    matrix directly: `M[i][j]` counts the rows where P(chosen_i better than rejected_j) > 0.5 (an exact 0.5 is a loss,
    as an exact reward tie is). The aggregation is the same. The difference: a reward model's 9 cells come from 6
    independent scores, so they are consistent with one ranking; a preference model judges each cell on its own (18
    forward passes per row for a PairPMScorer instead of 6).

    Args:
        scorer_or_model:
            A [`RewardScorer`], anything with `score_pairs(prompts, chosen, rejected)` or `prefer(prompts, a, b)`, a
            PairPM folder (with `pairpm.json`), or what [`RewardScorer`] accepts (a path, a model, a callable).
        data:
            One or more RM-Bench files (JSON / JSONL / parquet), rows, or `None` / `"hub"` for `THU-KEG/RM-Bench`.
        domain (`str`, *optional*):
            Domain of rows without a `domain` field; unset, taken from the file name (see [`load_rmbench`]).
        per_domain (`int`, *optional*):
            Score at most this many rows per domain (seeded sample).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the subsample.
        output_dir (`str` or `os.PathLike`, *optional*):
            When set, the JSON, markdown, per-row JSONL, heatmap and bar-chart PNGs are written there.
        **scorer_kwargs:
            Passed to the scorer built from a path or model (e.g. `tokenizer`, `batch_size`).

    Returns:
        [`RMBenchResult`]
    """
    if data is None or isinstance(data, (str, os.PathLike)) or all(isinstance(d, (str, os.PathLike)) for d in data):
        rows = load_rmbench(data, domain)
    else:
        rows = _with_domain(list(data), domain)
        validate_rmbench_rows(rows)
    if per_domain is not None:
        rows = subsample_rmbench(rows, per_domain, seed)
    if not rows:
        raise ValueError("no RM-Bench rows to evaluate")
    model_type, wins, values = score_rows(scorer_or_model, rows, _pointwise, _pairwise, **scorer_kwargs)
    result = aggregate_rmbench(rows, wins, model_type)
    for record, row_values in zip(result.rows, values):
        record.update(row_values)
    if output_dir is not None:
        result.save(output_dir)
    return result
