"""Per-kind metrics shared by the Bradley-Terry and PairPM trainers."""

from __future__ import annotations

import torch


def per_kind_metrics(per_pair: torch.Tensor, kind_id: torch.Tensor, kind_names: list[str]) -> dict[str, float]:
    """`loss/<kind>` (mean per-pair loss) and `count/<kind>` (number of pairs) for every kind present."""
    metrics = {}
    for index in kind_id.unique().tolist():
        of_kind = kind_id == index
        metrics[f"loss/{kind_names[index]}"] = per_pair[of_kind].mean().item()
        metrics[f"count/{kind_names[index]}"] = of_kind.sum().item()
    return metrics
