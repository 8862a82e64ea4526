"""The Crome parts of a trainer's model card, shared by the Bradley-Terry and PairPM trainers: the base model named
without machine paths, a quick start that scores with the saved model, and the Crome section."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from .config import CromeRewardConfig

# TRL's template links the base model to the Hub, which renders `[None](https://huggingface.co/None)` for a model
# loaded from a local folder; its quick start is a `pipeline` call that does not score a (prompt, answer).
UNNAMED_BASE_MODEL = "[None](https://huggingface.co/None)"
QUICK_START = re.compile(r"## Quick start\n.*?\n```\n", re.DOTALL)
EXAMPLE_PROMPT = "What is the capital of France?"
EXAMPLE_ANSWERS = ("The capital of France is Paris.", "The capital of France is Lyon.")


def public_name(name_or_path: str | os.PathLike | None) -> str | None:
    """How a model card names a model or dataset: a Hub id as it is, a local file or folder (or a path that no longer
    exists) by its own name, never the machine path; `None` when there is no name."""
    if not name_or_path:
        return None
    name_or_path = str(name_or_path)
    local = os.path.exists(name_or_path) or os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))
    return Path(name_or_path).name if local else name_or_path


class CromeModelCardMixin:
    """Adds to TRL's model card a Crome section: the loss settings, the training pairs per kind
    (`self.train_kind_counts`) and the extra sections in `self.model_card_sections` (title -> markdown, e.g. the
    augmentation settings and evaluation results a recipe adds before saving). Mixed in before the TRL trainer."""

    model_card_sections: dict[str, str]
    train_kind_counts: dict[str, int]
    # Whether the training rows were chat messages (the scorer must format a pair the same way); `None`: unknown.
    train_conversational: bool | None = None

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
        """TRL's model card with the base model named (a local folder by its name, never its path), a quick start that
        scores with this model, and the Crome section (see the class docstring)."""
        # The Hub id once pushed (`push_to_hub` writes the card again with it), else the folder the card is in.
        model_id = self.hub_model_id or Path(self.args.output_dir).resolve().name
        model_name = model_name or model_id.split("/")[-1]
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        with open(path, encoding="utf-8") as f:
            card = f.read()
        name_or_path = self.model.config._name_or_path
        base = public_name(name_or_path)
        if base != name_or_path:  # a local folder: TRL wrote `[None](...)`, or the path when it no longer exists
            base_text = f"`{base}` (a local model folder)" if base else "a model built in memory (no folder or Hub id)"
            for written in (UNNAMED_BASE_MODEL, f"[{name_or_path}](https://huggingface.co/{name_or_path})"):
                card = card.replace(written, base_text, 1)
            card = card.replace(f"base_model: {name_or_path}\n", "", 1)
        card = QUICK_START.sub(lambda _: "## Quick start\n\n" + self._quick_start(model_id), card, count=1)
        card = card.replace("## Citations", self._crome_card_section() + "\n## Citations", 1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(_tidy(card))

    def _quick_start(self, model_id: str) -> str:
        """Markdown that scores a prompt and two answers with the saved reward model (the PairPM trainer overrides)."""
        chat = "" if self.train_conversational is None else f", chat_template={self.train_conversational}"
        return textwrap.dedent(f"""\
            Score answers with the reward model (`pip install trl-crome`; the scorer builds each sequence the way the
            model was trained on it, and loads LoRA adapter folders as well as full models):

            ```python
            from trl_crome import RewardScorer

            scorer = RewardScorer("{model_id}"{chat}){self._model_id_comment()}
            prompt = "{EXAMPLE_PROMPT}"
            rewards = scorer.score([prompt, prompt], ["{EXAMPLE_ANSWERS[0]}", "{EXAMPLE_ANSWERS[1]}"])
            print(rewards)  # one reward per (prompt, answer); sigmoid(r1 - r2) = P(answer 1 is preferred)
            ```
            """)

    def _model_id_comment(self) -> str:
        return "" if self.hub_model_id else "  # the path of this folder, or its Hub id once pushed"

    def _crome_card_section(self) -> str:
        lines = [
            "## Crome training",
            "",
            "Trained with Crome's composite loss: `-log sigmoid(d)` on preference pairs and "
            "`lambda * -(log sigmoid(d) + log sigmoid(-d)) / 2` on neutral (tie) pairs, "
            f"lambda = {self.tie_loss_weight}.",
            "",
        ]
        if self.train_kind_counts:  # unknown for a streamed (iterable) training set
            lines += ["| kind | training pairs |", "|---|---|"]
            lines += [f"| {kind} | {count} |" for kind, count in self.train_kind_counts.items()] + [""]
        for title, body in self.model_card_sections.items():
            lines += [f"### {title}", "", body.strip(), ""]
        return "\n".join(lines)


def _heading_level(line: str) -> int:
    match = re.match(r"(#{1,6}) ", line)
    return len(match.group(1)) if match else 0


def _tidy(card: str) -> str:
    """No trailing spaces, no runs of blank lines (TRL's template leaves one per unused tracker badge), and no heading
    without a body (one followed directly by a heading of the same or a higher level)."""
    lines = [line.rstrip() for line in card.splitlines()]
    kept: list[str] = []
    for index, line in enumerate(lines):
        level = _heading_level(line)
        if level:
            following = next((other for other in lines[index + 1 :] if other), "")
            if 0 < _heading_level(following) <= level:
                continue
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n") + "\n"
