"""Markdown tables and PNG charts for evaluation reports (matplotlib with the file-only Agg backend)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every NaN float replaced by `None` (JSON has no NaN; "not measured" reads as null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def percent(value: float) -> str:
    """A score in [0, 1] as a percentage with two decimals, `n/a` for NaN."""
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def write_reports(
    output_dir: str | os.PathLike, name: str, data: dict[str, Any], markdown: str, rows: Sequence[dict[str, Any]]
) -> Path:
    """Write `<name>.json` (NaN as null), `<name>.md` and `<name>_rows.jsonl` into `output_dir` (created)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(json_safe(data), indent=2) + "\n")
    (output / f"{name}.md").write_text(markdown)
    with open(output / f"{name}_rows.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(json_safe(row)) + "\n")
    return output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # write files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    labels: Sequence[str], values: Sequence[float], path: str | os.PathLike, title: str, ylabel: str
) -> None:
    """A labelled vertical bar chart saved to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 4))
    bars = ax.bar(range(len(labels)), values, color="#4C72B0")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 6 else 0, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grouped_bar_chart(
    groups: Sequence[str], series: dict[str, Sequence[float]], path: str | os.PathLike, title: str, ylabel: str
) -> None:
    """One cluster of bars per group, one bar per series in it (with a legend), saved to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 4))
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        positions = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(positions, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmaps(
    matrices: dict[str, Sequence[Sequence[float]]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    ylabel: str,
    vmax: float = 100.0,
) -> None:
    """One annotated heatmap per named matrix, side by side on a shared 0..`vmax` colour scale, saved to `path`."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(2.9 * len(matrices) + 1.6, 3.4), squeeze=False, sharey=True)
    image = None
    for k, (ax, (name, matrix)) in enumerate(zip(axes[0], matrices.items())):
        image = ax.imshow(matrix, vmin=0.0, vmax=vmax, cmap="viridis")
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="w" if value < vmax / 2 else "k")
        ax.set_xticks(range(len(column_labels)), column_labels, fontsize=8)
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if k == 0:
            ax.set_ylabel(ylabel)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def line_chart(
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    ylabel: str,
    log2_x: bool = True,
) -> None:
    """One line per series over `x` (log2 axis by default, for N = 1, 2, 4, 8 ...), saved to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, values in series.items():
        ax.plot(x, values, marker="o", label=name)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(x), [str(v) for v in x])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
