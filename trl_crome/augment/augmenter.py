"""`CromeAugmenter`: the Crome data pipeline, its steps in order (rubrics, counterfactuals, validation, neutrals,
filtering). Each step lives in its own module; this one only wires them and keeps the books."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset

from ..data import DEFAULT_KINDS, KIND_CAUSAL, KIND_NEUTRAL, KIND_ORIGINAL
from ..models import default_cache_dir
from ..oracles.base import Oracle
from ..oracles.cache import CachedOracle
from .counterfactuals import REWRITE_TEMPLATES, CounterfactualValidator, causal_pairs, rewrite_tasks
from .filtering import as_baseline, filter_pairs
from .neutrals import neutral_pairs
from .pairs import CromePair, SourceRow, Turns, pairs_to_dataset, prompt_key, read_source_rows, turn_features
from .rubrics import DEFAULT_FALLBACK_ATTRIBUTES, CausalAttribute, resolve_rubrics, rubric_request
from .summary import AugmentationSummary, ask_oracle, counts

if TYPE_CHECKING:
    from .filtering import Baseline

logger = logging.getLogger(__name__)

_KIND_RANK = {kind: rank for rank, kind in enumerate(DEFAULT_KINDS)}


@dataclass
class CromeAugmenterConfig:
    r"""
    Configuration of the [`CromeAugmenter`]: which steps run, how large they are, and where the resume state lives.

    Parameters:
        > Causal rubric identification

        identify_rubrics (`bool`, *optional*, defaults to `True`):
            Ask the oracle for the causal attributes of each unique prompt. When `False`, or when a call fails, the
            prompt uses a seeded choice from `fallback_attributes`.
        max_attributes (`int`, *optional*, defaults to `2`):
            Most attributes kept per prompt.
        fallback_attributes (`dict[str, str]`):
            Attribute name to one-sentence description, used when there is no usable rubric. Defaults to
            correctness, relevance, completeness, safety and reasoning.
        rubric_max_output_tokens (`int`, *optional*, defaults to `512`):
            Output token limit of a rubric call.

        > Causal augmentations

        causal_augmentation (`bool`, *optional*, defaults to `True`):
            Whether to write counterfactual answers.
        directions (`list[str]`, *optional*, defaults to `["degrade", "upgrade"]`):
            `"degrade"` rewrites the chosen answer to be worse (pair: chosen > degraded), `"upgrade"` rewrites the
            rejected answer to be better (pair: upgraded > rejected).
        attributes_per_example (`int`, *optional*, defaults to `2`):
            Attributes rewritten per example, the prompt's first ones (the oracle lists the most important first).
        rewrite_max_output_tokens (`int`, *optional*, defaults to `2048`):
            Output token limit of a rewrite call; a longer answer is rejected as `"truncated"`.
        accept_plain_text_rewrites (`bool`, *optional*, defaults to `False`):
            Take a rewrite answer that is not the requested JSON as the rewritten text itself, instead of rejecting
            it as `"malformed"`. For small local oracles that rarely write valid JSON; validation still applies.
        temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature of the oracle calls.

        > Validation of counterfactuals

        min_length_ratio (`float`, *optional*, defaults to `0.5`):
            Smallest accepted length of a rewrite relative to its source.
        max_length_ratio (`float`, *optional*, defaults to `2.0`):
            Largest accepted length of a rewrite relative to its source.
        length_tokenizer (`str`, *optional*):
            Name or path of a tokenizer: lengths are then counted in its tokens instead of characters.
        check_format (`bool`, *optional*, defaults to `True`):
            Reject rewrites that add or drop markdown markers (code blocks, headings, lists, bold, tables) or change
            their count beyond the length bounds.

        > Neutral augmentations (Irrelevant Query Neutrals)

        neutral_augmentation (`bool`, *optional*, defaults to `True`):
            Whether to make tie pairs by attaching each pair's answers to another example's prompt.
        neutrals_per_original (`int`, *optional*, defaults to `1`):
            Tie pairs made from each original pair.
        neutrals_per_causal (`int`, *optional*, defaults to `1`):
            Tie pairs made from each causal pair.
        seed (`int`, *optional*, defaults to `42`):
            Seed of the neutral prompts and of the fallback attributes.

        > Filtering with a baseline reward model

        filter_augmented (`bool`, *optional*, defaults to `True`):
            Keep only the augmented pairs the baseline is wrong or unsure about. Needs a `baseline`.
        filter_tau (`float`, *optional*, defaults to `0.2`):
            A pair is kept when `|sigmoid(r_chosen - r_rejected) - target| >= filter_tau` (target 1, or 0.5 for ties).
        filter_batch_size (`int`, *optional*, defaults to `16`):
            Batch size of the baseline model.
        filter_max_length (`int`, *optional*, defaults to `1024`):
            Longest sequence scored by the baseline model (longer ones keep their last tokens).

        > Run

        output_dir (`str`, *optional*):
            Folder of the run's resume state: the oracle cache goes to `output_dir/oracle_cache` unless `cache_dir`
            is set.
        cache_dir (`str`, *optional*):
            Oracle cache folder. Defaults to `output_dir/oracle_cache`, else `$TRL_CROME_CACHE/oracle_cache`
            (`~/.cache/trl_crome/oracle_cache`). Rerunning with the same cache resumes an interrupted run without
            paying again for any answered call.
        max_rows (`int`, *optional*):
            Only augment the first `max_rows` rows.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar per stage.
    """

    identify_rubrics: bool = field(
        default=True,
        metadata={"help": "Ask the oracle for the causal attributes of each unique prompt (else use the fallback)."},
    )
    max_attributes: int = field(default=2, metadata={"help": "Most attributes kept per prompt."})
    fallback_attributes: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_FALLBACK_ATTRIBUTES),
        metadata={"help": "Attribute name to description, used when a prompt has no usable rubric."},
    )
    rubric_max_output_tokens: int = field(default=512, metadata={"help": "Output token limit of a rubric call."})
    causal_augmentation: bool = field(default=True, metadata={"help": "Whether to write counterfactual answers."})
    directions: list[str] = field(
        default_factory=lambda: list(REWRITE_TEMPLATES),
        metadata={"help": "Rewrite directions: 'degrade' (the chosen answer) and/or 'upgrade' (the rejected one)."},
    )
    attributes_per_example: int = field(default=2, metadata={"help": "Attributes rewritten per example."})
    rewrite_max_output_tokens: int = field(default=2048, metadata={"help": "Output token limit of a rewrite call."})
    accept_plain_text_rewrites: bool = field(
        default=False,
        metadata={
            "help": "Take a rewrite answer that is not the requested JSON as the rewritten text itself (for small "
            "local oracles that rarely write valid JSON); the validation still applies."
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the oracle calls."})
    min_length_ratio: float = field(
        default=0.5, metadata={"help": "Smallest accepted length of a rewrite relative to its source."}
    )
    max_length_ratio: float = field(
        default=2.0, metadata={"help": "Largest accepted length of a rewrite relative to its source."}
    )
    length_tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer to count lengths in tokens instead of characters."}
    )
    check_format: bool = field(
        default=True, metadata={"help": "Reject rewrites that add, drop or multiply markdown markers."}
    )
    neutral_augmentation: bool = field(
        default=True, metadata={"help": "Whether to make tie pairs from other examples' prompts (IQN)."}
    )
    neutrals_per_original: int = field(default=1, metadata={"help": "Tie pairs made from each original pair."})
    neutrals_per_causal: int = field(default=1, metadata={"help": "Tie pairs made from each causal pair."})
    seed: int = field(default=42, metadata={"help": "Seed of the neutral prompts and of the fallback attributes."})
    filter_augmented: bool = field(
        default=True, metadata={"help": "Keep only augmented pairs the baseline is wrong or unsure about."}
    )
    filter_tau: float = field(
        default=0.2, metadata={"help": "Keep a pair when |sigmoid(r_chosen - r_rejected) - target| >= tau."}
    )
    filter_batch_size: int = field(default=16, metadata={"help": "Batch size of the baseline model."})
    filter_max_length: int = field(default=1024, metadata={"help": "Longest sequence scored by the baseline model."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder of the run's resume state."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Oracle cache folder (default: output_dir/oracle_cache)."}
    )
    max_rows: int | None = field(default=None, metadata={"help": "Only augment the first max_rows rows."})
    show_progress: bool = field(default=True, metadata={"help": "Show a progress bar per stage."})

    def __post_init__(self):
        unknown = [d for d in self.directions if d not in REWRITE_TEMPLATES]
        if unknown or not self.directions:
            raise ValueError(f"directions must be a non-empty subset of {list(REWRITE_TEMPLATES)}: {self.directions}")
        if self.max_attributes < 1 or not 1 <= self.attributes_per_example <= self.max_attributes:
            raise ValueError(
                f"Need 1 <= attributes_per_example ({self.attributes_per_example}) <= max_attributes "
                f"({self.max_attributes})."
            )
        if not self.fallback_attributes:
            raise ValueError("fallback_attributes must name at least one attribute.")
        if not 0 < self.min_length_ratio <= 1 <= self.max_length_ratio:
            raise ValueError(
                f"Need 0 < min_length_ratio ({self.min_length_ratio}) <= 1 <= max_length_ratio "
                f"({self.max_length_ratio})."
            )
        if self.neutrals_per_original < 0 or self.neutrals_per_causal < 0:
            raise ValueError("neutrals_per_original and neutrals_per_causal must be >= 0.")
        if not 0 <= self.filter_tau <= 1:
            raise ValueError(f"filter_tau must be in [0, 1], got {self.filter_tau}.")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}.")

    def resolved_cache_dir(self) -> Path:
        """The oracle cache folder this configuration uses."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        if self.output_dir is not None:
            return Path(self.output_dir) / "oracle_cache"
        return default_cache_dir() / "oracle_cache"


class CromeAugmenter:
    """Turns a preference dataset into Crome training data: original, causal and neutral pairs.

    All oracle calls go through a [`~trl_crome.oracles.CachedOracle`], so an interrupted run (crash, `kill -9`,
    Ctrl-C) resumes with the same command, pays for no answered call twice, and returns exactly what an uninterrupted
    run returns. A failed call or a rejected rewrite only skips that rewrite; it is counted in [`summary`].

    Args:
        oracle ([`~trl_crome.oracles.Oracle`]):
            The LLM that writes rubrics and counterfactuals; wrapped in a `CachedOracle` on
            `config.resolved_cache_dir()` unless it already is one.
        config ([`CromeAugmenterConfig`], *optional*):
            The pipeline's settings; defaults to `CromeAugmenterConfig()`.
        baseline (`str`, `os.PathLike`, `(model, tokenizer)` or callable, *optional*):
            Reward model trained on the original data, for the filter: a path or Hub name of a sequence
            classification model, a `(model, tokenizer)` pair, or a callable `(prompts, answers_a, answers_b) ->
            margins` giving `r(prompt, a) - r(prompt, b)` per pair. Without it, nothing is filtered.

    Example:

    ```python
    >>> from datasets import load_dataset
    >>> from trl_crome import CromeAugmenter, CromeAugmenterConfig, GeminiOracle

    >>> data = load_dataset("trl-lib/ultrafeedback_binarized", split="train")
    >>> augmenter = CromeAugmenter(GeminiOracle(), CromeAugmenterConfig(output_dir="crome-data", max_rows=1000))
    >>> crome_data = augmenter(data)
    >>> print(augmenter.summary)
    ```
    """

    def __init__(self, oracle: Oracle, config: CromeAugmenterConfig | None = None, baseline: Baseline | None = None):
        self.config = config = config if config is not None else CromeAugmenterConfig()
        self.oracle = oracle if isinstance(oracle, CachedOracle) else CachedOracle(oracle, config.resolved_cache_dir())
        self.validator = CounterfactualValidator(
            config.min_length_ratio, config.max_length_ratio, config.check_format, _length_function(config)
        )
        self.baseline = None
        if config.filter_augmented and baseline is not None:
            self.baseline = as_baseline(
                baseline, config.filter_batch_size, config.filter_max_length, show_progress=config.show_progress
            )
        elif config.filter_augmented and (config.causal_augmentation or config.neutral_augmentation):
            logger.warning("No baseline reward model given: augmented pairs are kept without filtering.")
        self.summary: AugmentationSummary | None = None

    def __call__(self, dataset: Dataset) -> Dataset:
        """Augment `dataset` (TRL preference format) and return the Crome pairs, in a deterministic order: per source
        row, the original pair, its causal pairs, then the neutral pairs made from them."""
        config, started = self.config, time.perf_counter()
        summary = self.summary = AugmentationSummary(oracle=self.oracle.model)
        if config.max_rows is not None and config.max_rows < len(dataset):
            dataset = dataset.select(range(config.max_rows))
        rows = read_source_rows(dataset)
        summary.input_rows = len(rows)
        prompts = {prompt_key(row.prompt): row.prompt for row in rows}  # unique prompts, first appearance first

        pairs = [row.as_original_pair() for row in rows]
        if config.causal_augmentation:
            pairs += self._causal_pairs(rows, self._rubrics(prompts, summary), summary)
        if config.neutral_augmentation:
            neutrals, summary.neutrals_missing = neutral_pairs(
                pairs, prompts, config.neutrals_per_original, config.neutrals_per_causal, config.seed
            )
            pairs += neutrals
        pairs.sort(key=lambda pair: (pair.source_row, _KIND_RANK[pair.kind]))  # stable: keeps each kind's order
        if self.baseline is not None:
            pairs, dropped = filter_pairs(pairs, self.baseline, config.filter_tau)
            summary.filtered_out = {kind: dropped[kind] for kind in (KIND_CAUSAL, KIND_NEUTRAL)}

        kinds = Counter(pair.kind for pair in pairs)
        summary.pairs = {kind: kinds[kind] for kind in (KIND_ORIGINAL, KIND_CAUSAL, KIND_NEUTRAL)}
        summary.seconds = time.perf_counter() - started
        logger.info("Crome augmentation done:\n%s", summary.to_table())
        return pairs_to_dataset(pairs, turn_features(dataset))

    def _rubrics(self, prompts: dict[str, Turns], summary: AugmentationSummary) -> dict[str, list[CausalAttribute]]:
        config, responses = self.config, None
        if config.identify_rubrics:
            keys = list(prompts)
            max_tokens = config.rubric_max_output_tokens
            requests = [rubric_request(prompts[key], config.max_attributes, max_tokens) for key in keys]
            answers = ask_oracle(self.oracle, requests, summary, "Crome rubrics", "prompt", config.show_progress)
            responses = dict(zip(keys, answers))
        rubrics, fallbacks = resolve_rubrics(
            prompts, responses, config.max_attributes, config.fallback_attributes, config.seed
        )
        summary.rubric_fallbacks = counts(fallbacks)
        return rubrics

    def _causal_pairs(
        self, rows: list[SourceRow], rubrics: dict[str, list[CausalAttribute]], summary: AugmentationSummary
    ) -> list[CromePair]:
        config = self.config
        attributes = [rubrics[prompt_key(row.prompt)][: config.attributes_per_example] for row in rows]
        # Degrade first whatever the order given, so that the output order never depends on how it was spelled.
        directions = [d for d in REWRITE_TEMPLATES if d in config.directions]
        tasks = rewrite_tasks(rows, attributes, directions)
        requests = [task.request(config.rewrite_max_output_tokens, config.temperature) for task in tasks]
        responses = ask_oracle(
            self.oracle, requests, summary, "Crome counterfactuals", "rewrite", config.show_progress
        )
        pairs, rejects = causal_pairs(tasks, responses, self.validator, self.config.accept_plain_text_rewrites)
        summary.rejects = counts(rejects)
        return pairs


def _length_function(config: CromeAugmenterConfig):
    if config.length_tokenizer is None:
        return len
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.length_tokenizer)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


__all__ = ["AugmentationSummary", "CromeAugmenter", "CromeAugmenterConfig"]
