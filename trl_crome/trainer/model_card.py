"""The Crome section of a trainer's model card, shared by the Bradley-Terry and PairPM trainers."""

from __future__ import annotations

import os
import textwrap

from .config import CromeRewardConfig


class CromeModelCardMixin:
    """Adds to TRL's model card a Crome section: the loss settings, the training pairs per kind
    (`self.train_kind_counts`) and the extra sections in `self.model_card_sections` (title -> markdown, e.g. the
    augmentation settings and evaluation results a recipe adds before saving). Mixed in before the TRL trainer."""

    model_card_sections: dict[str, str]
    train_kind_counts: dict[str, int]

    _paper = {
        "title": "Robust Reward Modeling via Causal Rubrics",
        "id": "2506.16507",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{srivastava2026crome,
                title        = {{Robust Reward Modeling via Causal Rubrics}},
                author       = {Pragya Srivastava and Harman Singh and Rahul Madhavan and others},
                year         = 2026,
                booktitle    = {The Fourteenth International Conference on Learning Representations, {ICLR} 2026},
                eprint       = {arXiv:2506.16507},
            }"""),
    }

    @property
    def tie_loss_weight(self) -> float:
        # A plain `RewardConfig` keeps working (drop-in): it trains with the default lambda.
        return getattr(self.args, "tie_loss_weight", CromeRewardConfig.tie_loss_weight)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        """TRL's model card, plus the Crome section (see the class docstring)."""
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        with open(path, encoding="utf-8") as f:
            card = f.read()
        card = card.replace("## Citations", self._crome_card_section() + "\n## Citations", 1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)

    def _crome_card_section(self) -> str:
        lines = [
            "## Crome training",
            "",
            "Trained with Crome's composite loss: `-log sigmoid(d)` on preference pairs and "
            "`lambda * -(log sigmoid(d) + log sigmoid(-d)) / 2` on neutral (tie) pairs, "
            f"lambda = {self.tie_loss_weight}.",
            "",
            "| kind | training pairs |",
            "|---|---|",
            *(f"| {kind} | {count} |" for kind, count in self.train_kind_counts.items()),
            "",
        ]
        for title, body in self.model_card_sections.items():
            lines += [f"### {title}", "", body.strip(), ""]
        return "\n".join(lines)
