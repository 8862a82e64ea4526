"""The recipe's sections of the model card: base model and data, augmentation settings and counts, evaluations."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..augment.presets import apply_preset
from ..trainer.model_card import public_name

if TYPE_CHECKING:
    from .pipeline import RecipeResult


def model_card_sections(script_args, model_args, augment_args, result: RecipeResult) -> dict[str, str]:
    """The recipe's model-card sections: data and base model, augmentation settings and counts, evaluation. Local
    files and folders are named without their machine path (see [`~trl_crome.trainer.model_card.public_name`])."""
    data_lines = [
        f"- Base model: `{public_name(model_args.model_name_or_path)}`",
        f"- Setting: `{script_args.setting}`",
        f"- Preference data: `{public_name(script_args.dataset_name)}`"
        + (f" (config `{script_args.dataset_config}`)" if script_args.dataset_config else ""),
    ]
    if script_args.augmented_dataset:
        data_lines.append(
            f"- Augmented data: `{public_name(script_args.augmented_dataset)}` (augmented before this run)"
        )
    sections = {"Base model and data": "\n".join(data_lines)}

    if result.augmentation is not None:
        summary = result.augmentation
        # The settings the augmenter ran with: the preset fills the fields the recipe left unset.
        augment = copy.copy(augment_args)
        apply_preset(augment, augment.preset)
        tau = augment.filter_tau if script_args.baseline_model and augment.filter_augmented else None
        lines = [
            f"- Oracle: `{script_args.oracle}` / `{public_name(script_args.oracle_model) or 'backend default'}`",
            f"- Preset: `{augment.preset}`",
            f"- Causal rewrites: directions {', '.join(augment.directions)}; "
            f"{augment.attributes_per_example} attribute(s) per example; rubrics from the oracle: "
            f"{augment.identify_rubrics}",
            f"- Neutral (IQN) pairs per row / per original / per causal pair: {augment.neutrals_per_row} / "
            f"{augment.neutrals_per_original} / {augment.neutrals_per_causal}",
            f"- Baseline filter: tau = {tau} (baseline `{public_name(script_args.baseline_model)}`)"
            if tau is not None
            else "- Baseline filter: off",
            f"- Input rows: {summary.input_rows}",
            "",
            "| kind | pairs | filtered out |",
            "|---|---|---|",
            *(f"| {kind} | {count} | {summary.filtered_out.get(kind, 0)} |" for kind, count in summary.pairs.items()),
        ]
        if summary.rejects:
            lines += ["", "Rejected rewrites: " + ", ".join(f"{k} {v}" for k, v in summary.rejects.items())]
        sections["Crome augmentation"] = "\n".join(lines)

    rewardbench = result.rewardbench
    if rewardbench is not None and rewardbench.section_scores:
        # The result's own markdown starts with a level-2 title; the card nests it under "Crome training".
        sections["Evaluation: RewardBench"] = rewardbench.to_markdown().split("\n", 2)[2]
    elif rewardbench is not None:  # no RewardBench subset (e.g. held-out pairs): no section weighting, no overall
        counts = rewardbench.subset_counts
        correct = round(sum(accuracy * counts[subset] for subset, accuracy in rewardbench.subset_accuracy.items()))
        sections["Evaluation: accuracy"] = (
            f"{100 * correct / rewardbench.num_pairs:.2f}% ({correct} of {rewardbench.num_pairs} pairs ranked "
            f"correctly; subsets: {', '.join(sorted(counts))})"
        )
    if result.robustness is not None:
        robustness = result.robustness
        changed = [info for info in robustness.per_transform.values() if info["changed"]]
        mean_drop = sum(info["drop"] for info in changed) / len(changed) if changed else float("nan")
        sections["Evaluation: robustness to meaning-preserving transformations"] = (
            f"Mean accuracy drop over {len(changed)} transformations: {100 * mean_drop:+.2f} points "
            f"(original accuracy {100 * robustness.original_accuracy:.2f}% on {robustness.num_pairs} pairs).\n\n"
            + robustness.to_markdown().split("\n", 2)[2]
        )
    if result.rewardbench2 is not None:
        sections["Evaluation: RewardBench 2"] = result.rewardbench2.to_markdown().split("\n", 2)[2]
    if result.rmbench is not None:  # the domain table; the 3x3 matrices are in eval/rmbench.md
        sections["Evaluation: RM-Bench"] = result.rmbench.to_markdown(matrices=False).split("\n", 2)[2]
    return sections
