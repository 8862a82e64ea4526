"""Inference with a pairwise preference model (PairPM): P(A better than B), averaged over both answer orders, and
Best-of-N selection by tournament.

[`PairPMScorer`] has `prefer(prompts, answers_a, answers_b)`, so [`evaluate_rewardbench`] and every other benchmark
of this package take it as they take a reward model (a pair is correct when P(chosen better) > 0.5).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..pairpm import (
    DEFAULT_TEMPLATE_VERSION,
    PAIRPM_CONFIG_NAME,
    PairPMFormatter,
    PairPMTemplate,
    TextOrMessages,
    pad_left,
    preference_logits,
)
from .best_of_n import best_of_n_index
from .pair_scoring import PreferenceModel
from .scoring import length_sorted_batches, load_model_and_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class PairPMStats:
    """Counts over the calls of a [`PairPMScorer`]: input sequences (two per pair in both orders), batches, and pairs
    truncated to `max_length`."""

    sequences: int = 0
    batches: int = 0
    truncated: int = 0


def load_pairpm(
    name_or_path: str | os.PathLike, torch_dtype: torch.dtype | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """Load a trained PairPM (a causal LM, or a PEFT adapter folder over one), its tokenizer, and the input format
    saved beside it in `pairpm.json` (empty when the folder has none, e.g. an untrained base model)."""
    from transformers.utils import cached_file

    kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
    model, tokenizer = load_model_and_tokenizer(name_or_path, "AutoModelForCausalLM", **kwargs)
    # A folder or a Hub repo: the input format travels with the pushed model.
    config_file = cached_file(name_or_path, PAIRPM_CONFIG_NAME, _raise_exceptions_for_missing_entries=False)
    pairpm = json.loads(Path(config_file).read_text(encoding="utf-8")) if config_file else {}
    return model, tokenizer, pairpm


class PairPMScorer:
    """Scores answer pairs with a PairPM, in length-sorted batches under `torch.inference_mode`.

    `prefer` returns P(A better than B) averaged over both orders,
    `p = (P(A > B | A shown first) + 1 - P(B > A | B shown first)) / 2`, so `prefer(x, a, b) = 1 - prefer(x, b, a)`
    exactly and the position of an answer cannot decide.

    Args:
        model (`str`, `os.PathLike` or [`~transformers.PreTrainedModel`]):
            A folder written by [`~trl_crome.trainer.CromePairPMTrainer`] (full model or PEFT adapter; its
            `pairpm.json` gives the template, chat-template use and `max_length`), a Hub id, or a loaded causal LM.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Needed for a model object; loaded from the folder for a path.
        batch_size (`int`, *optional*, defaults to `8`):
            Sequences per forward pass.
        max_length (`int`, *optional*):
            Truncate longer inputs as in training (prompt start first, then answer ends evenly). Defaults to the
            trained model's value from `pairpm.json`, else no truncation.
        template (`str` or [`~trl_crome.pairpm.PairPMTemplate`], *optional*):
            Defaults to the trained model's template (`template_version` in its `pairpm.json`). A folder without that
            entry (an untrained model, or a PairPM trained elsewhere) and a model object get the current default,
            `"pairpm@2"` (RRM's neutral format); a folder logs a warning then.
        use_chat_template (`bool`, *optional*):
            Defaults to the trained model's setting, else to whether the tokenizer has a chat template.
        device (`str` or `torch.device`, *optional*):
            Where to run; defaults to the model's device for a model object, CUDA when available for a path.
        torch_dtype (`torch.dtype` or `str`, *optional*):
            dtype when loading from a path (e.g. `"bfloat16"` on GPU).
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm bar over batches.
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        template: str | PairPMTemplate | None = None,
        use_chat_template: bool | None = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | str | None = None,
        show_progress: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        saved, path = {}, None
        if isinstance(model, (str, os.PathLike)):
            path = model
            model, loaded_tokenizer, saved = load_pairpm(model, torch_dtype=torch_dtype)
            tokenizer = tokenizer or loaded_tokenizer
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if tokenizer is None:
            raise ValueError("a tokenizer is needed to score with a model object")
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.device = next(self.model.parameters()).device
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        trained_template = saved.get("template_version")
        if template is None and trained_template is None and path is not None:
            logger.warning(
                f"{path} has no PairPM template entry ({PAIRPM_CONFIG_NAME}): scoring with the default template "
                f"{DEFAULT_TEMPLATE_VERSION!r}"
            )
        self.formatter = PairPMFormatter(
            tokenizer,
            template or trained_template or DEFAULT_TEMPLATE_VERSION,
            max_length if max_length is not None else saved.get("max_length"),
            use_chat_template if use_chat_template is not None else saved.get("use_chat_template"),
        )
        if trained_template is not None and self.formatter.template.version != trained_template:
            logger.warning(
                f"scoring with the PairPM template {self.formatter.template.version!r} a model trained with "
                f"{trained_template!r}"
            )
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.stats = PairPMStats()

    def prefer(
        self,
        prompts: Sequence[TextOrMessages],
        answers_a: Sequence[TextOrMessages],
        answers_b: Sequence[TextOrMessages],
        both_orders: bool = True,
    ) -> list[float]:
        """P(answer A better than answer B) for each row, in input order.

        Args:
            prompts, answers_a, answers_b (`Sequence[str]` or `Sequence[list[dict]]`):
                Texts or chat messages, as in training.
            both_orders (`bool`, *optional*, defaults to `True`):
                Average both orders (exactly antisymmetric). `False` reads one order only (A shown first): half the
                compute, but the result then carries the model's position bias.
        """
        encodings = self.formatter.encode(prompts, answers_a, answers_b)
        self.stats.truncated += sum(e.truncated for e in encodings)
        sequences = [e.ids_ab for e in encodings]
        if both_orders:
            sequences += [e.ids_ba for e in encodings]
        p_a = torch.sigmoid(self._delta(sequences))
        if not both_orders:
            return p_a.tolist()
        n = len(encodings)
        # In the swapped input, slot A holds answer B: P(B > A | B first) = p_a[n + i].
        return ((p_a[:n] + 1 - p_a[n:]) / 2).tolist()

    @torch.inference_mode()
    def _delta(self, sequences: list[list[int]]) -> torch.Tensor:
        """`logit("A") - logit("B")` of each sequence, in input order."""
        delta = torch.zeros(len(sequences))
        batches = length_sorted_batches([len(s) for s in sequences], self.batch_size)
        for batch in tqdm(batches, desc="PairPM", unit="batch", disable=not self.show_progress or len(batches) < 2):
            inputs = pad_left([sequences[i] for i in batch], self.pad_token_id)
            values = preference_logits(
                self.model, {k: v.to(self.device) for k, v in inputs.items()}, self.formatter.label_ids
            )
            delta[batch] = values.cpu()
            self.stats.batches += 1
            self.stats.sequences += len(batch)
        return delta


def _play(scorer: PreferenceModel, prompt, candidates, matches: list[tuple[int, int]]) -> list[float]:
    """P(first beats second) for each match, in one batched call."""
    firsts, seconds = [candidates[i] for i, _ in matches], [candidates[j] for _, j in matches]
    return scorer.prefer([prompt] * len(matches), firsts, seconds)


def round_robin_scores(
    scorer: PreferenceModel, prompt: TextOrMessages, candidates: Sequence[TextOrMessages]
) -> list[float]:
    """Each candidate's sum of P(it beats the other), over all N (N - 1) / 2 pairs scored in one batched call.

    The scores sum to N (N - 1) / 2 and can serve as per-candidate rewards wherever a reward model is expected.
    """
    matches = [(i, j) for i in range(len(candidates)) for j in range(i + 1, len(candidates))]
    wins = [0.0] * len(candidates)
    for (i, j), p_i in zip(matches, _play(scorer, prompt, candidates, matches) if matches else []):
        wins[i] += p_i
        wins[j] += 1 - p_i
    return wins


def select_best_of_n(
    scorer: PreferenceModel,
    prompt: TextOrMessages,
    candidates: Sequence[TextOrMessages],
    method: Literal["knockout", "round_robin"] = "knockout",
) -> int:
    """Index of the best of `candidates` for `prompt`, by a tournament of pairwise preferences.

    - `"knockout"` (default): candidates meet in pairs in list order (1 vs 2, 3 vs 4, ...), the winner of each match
      (P > 0.5; an exact 0.5 goes to the earlier candidate) goes to the next round, an odd one out passes unplayed.
      N - 1 comparisons in ceil(log2 N) batched calls; picks the best candidate whenever the preferences are
      transitive.
    - `"round_robin"`: every pair meets once (N (N - 1) / 2 comparisons, one batched call); each candidate scores the
      sum of its win probabilities and the highest score wins (the earliest on a tie). Costlier, but robust to
      non-transitive preferences and to an unlucky draw.

    Args:
        scorer:
            Anything with `prefer(prompts, answers_a, answers_b) -> list[float]`, e.g. a [`PairPMScorer`].
        prompt (`str` or `list[dict]`):
            The prompt the candidates answer.
        candidates (`Sequence[str]` or `Sequence[list[dict]]`):
            At least one candidate answer.
        method (`str`, *optional*, defaults to `"knockout"`):
            `"knockout"` or `"round_robin"`.

    Returns:
        `int`: the index of the selected candidate.
    """
    if not candidates:
        raise ValueError("select_best_of_n needs at least one candidate")
    if method == "knockout":
        alive = list(range(len(candidates)))
        while len(alive) > 1:
            matches = list(zip(alive[0::2], alive[1::2]))
            p = _play(scorer, prompt, candidates, matches)
            winners = [i if p_i >= 0.5 else j for (i, j), p_i in zip(matches, p)]
            alive = winners + alive[2 * len(matches) :]
        return alive[0]
    if method == "round_robin":
        return best_of_n_index(round_robin_scores(scorer, prompt, candidates))
    raise ValueError(f"unknown method {method!r}; use 'knockout' or 'round_robin'")
