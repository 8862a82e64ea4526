"""`CromeAugmenter`: the Crome data pipeline, its steps in order (attributes, causal elements, counterfactuals, checks
and verification, neutrals, filtering), a chunk of rows at a time, each finished chunk written to disk. Each step lives
in its own module; this one only wires them, drives the chunks, keeps the books and stops at `max_cost`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, Features
from huggingface_hub import DatasetCard
from tqdm.auto import tqdm

from .. import __version__
from ..data import DEFAULT_KINDS, KIND_CAUSAL, KIND_NEUTRAL, KIND_ORIGINAL
from ..models import default_cache_dir
from ..oracles.base import Oracle, OracleRequest, OracleResponse, StopCheck
from ..oracles.cache import CachedOracle
from .attributes import attributes_request, elements_request, parse_attributes, parse_elements
from .card import dataset_card, push_to_hub
from .chunks import ChunkReport, ChunkStore
from .counterfactuals import REWRITE_TEMPLATES, CounterfactualValidator, checked_rewrites, rewrite_tasks
from .estimate import CostEstimate, PlanningOracle, default_thinking_tokens, price_tiers
from .filtering import as_baseline, filter_pairs
from .neutrals import (
    ALIGNED,
    IQN,
    NEUTRAL_TYPES,
    PARAPHRASE,
    NeutralRewriteTask,
    neutral_pairs,
    sampled_neutral_pairs,
)
from .pairs import CromePair, SourceRow, Turns, prompt_key
from .presets import LITE, PAPER, PRESETS, apply_preset
from .rubrics import (
    DEFAULT_FALLBACK_ATTRIBUTES,
    CausalAttribute,
    fallback_attributes,
    resolve_rubrics,
    rubric_request,
)
from .source import PromptPool, SourceData, prompt_digest, rows_digest
from .summary import AugmentationSummary, ask_oracle
from .verification import verified_pairs, verify_request

if TYPE_CHECKING:
    from .filtering import Baseline

logger = logging.getLogger(__name__)

_KIND_RANK = {kind: rank for rank, kind in enumerate(DEFAULT_KINDS)}

# Pipeline steps, as the summary and the estimate name them.
STEP_RUBRICS, STEP_ATTRIBUTES, STEP_ELEMENTS = "rubrics", "attributes", "causal_elements"
STEP_REWRITES, STEP_VERIFY = "rewrites", "verification"
STEP_ALIGNED, STEP_PARAPHRASE = "aligned_neutrals", "paraphrase_neutrals"

DEFAULT_CHUNK_SIZE = 256
BATCH_CHUNKS_IN_FLIGHT = 4  # one per dependent step: attributes, causal elements, rewrites, verification
CHUNKS_DIR = "chunks"  # in `output_dir`: the finished chunks
# Fields that change how a run goes, never what it writes: a finished chunk is reused whatever their values.
RUN_ONLY_FIELDS = (
    "output_dir",
    "cache_dir",
    "chunk_size",
    "chunks_in_flight",
    "max_cost",
    "show_progress",
    "filter_batch_size",
    "push_to_hub",
    "hub_private_repo",
)


@dataclass
class CromeAugmenterConfig:
    r"""
    Configuration of the [`CromeAugmenter`]: which steps run, how large they are, and where the resume state lives.

    `preset` fills every field documented as "preset" that is left at `None`: `"paper"` (default) runs the pipeline
    of the Crome paper's appendix (per-example scored attributes, causal elements, every attribute rewritten both ways,
    an oracle verification of every rewrite, about 1x IQN neutrals); `"lite"` runs the cheaper pipeline this package
    shipped first, with its templates and cache keys unchanged. A field set explicitly always wins over the preset.
    Presets are applied once, when the configuration is built.

    Parameters:
        preset (`str`, *optional*, defaults to `"paper"`):
            `"paper"` or `"lite"`; see `trl_crome/augment/presets.py` and `docs/augmenter.md`.

        > Attributes (step 1)

        identify_rubrics (`bool`, *optional*, defaults to `True`):
            Ask the oracle for the attributes: per example, from the prompt and both answers, with importance scores
            (paper), or per unique prompt from the prompt alone (lite). When `False`, or when an answer is unusable,
            the example uses a seeded choice from `fallback_attributes`.
        max_attributes (`int`, *optional*, preset: 5 paper, 2 lite):
            Attributes asked for and kept per example (paper, cut by importance) or per prompt (lite).
        fallback_attributes (`dict[str, str]`):
            Attribute name to one-sentence description, used when there is no usable answer. Defaults to
            correctness, relevance, completeness, safety and reasoning.
        rubric_max_output_tokens (`int`, *optional*, preset: 1024 paper, 512 lite):
            Output token limit of an attribute call.

        > Causal elements (step 2, paper templates only)

        causal_elements (`bool`, *optional*, preset: `True` paper, `False` lite):
            Ask, per attribute, for the concrete elements of a response that raise or lower it; they go into the
            rewrite and verification prompts.
        elements_per_attribute (`int`, *optional*, defaults to `5`):
            Causal elements asked for per attribute.
        elements_max_output_tokens (`int`, *optional*, defaults to `1024`):
            Output token limit of a causal-elements call.

        > Causal augmentations (step 3)

        causal_augmentation (`bool`, *optional*, defaults to `True`):
            Whether to write counterfactual answers.
        directions (`list[str]`, *optional*, defaults to `["degrade", "upgrade"]`):
            `"degrade"` rewrites the chosen answer to be worse (pair: chosen > degraded), `"upgrade"` rewrites the
            rejected answer to be better (pair: upgraded > rejected).
        attributes_per_example (`int`, *optional*, preset: 5 paper, 2 lite):
            Attributes rewritten per example, the most important first.
        rewrite_max_output_tokens (`int`, *optional*, preset: 4096 paper, 2048 lite):
            Output token limit of a rewrite call (analysis included); a longer answer is rejected as `"truncated"`.
        accept_plain_text_rewrites (`bool`, *optional*, defaults to `False`):
            Take a rewrite answer that is not the requested JSON as the rewritten text itself, instead of rejecting
            it as `"malformed"`. For small local oracles that rarely write valid JSON; the checks still apply.
        temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature of the oracle calls.

        > Checks and verification of rewrites (step 4)

        verify_rewrites (`bool`, *optional*, preset: `True` paper, `False` lite):
            One more oracle call per rewrite that passed the checks: Pass / Fail; Fails are dropped and counted per
            direction and attribute.
        verify_max_output_tokens (`int`, *optional*, defaults to `1024`):
            Output token limit of a verification call.
        runaway_length_ratio (`float`, *optional*, defaults to `10.0`):
            Always checked, with `empty`, `identical` and `truncated`: a rewrite longer than this many times its source
            (characters; sources under 200 characters count as 200) is rejected as `"runaway_length"`.
        check_length (`bool`, *optional*, preset: `False` paper, `True` lite):
            Reject rewrites whose length ratio to the source is outside `[min_length_ratio, max_length_ratio]`.
        min_length_ratio (`float`, *optional*, defaults to `0.5`):
            Smallest accepted length of a rewrite relative to its source, with `check_length`.
        max_length_ratio (`float`, *optional*, defaults to `2.0`):
            Largest accepted length of a rewrite relative to its source, with `check_length`.
        length_tokenizer (`str`, *optional*):
            Name or path of a tokenizer: `check_length` then counts tokens instead of characters.
        check_format (`bool`, *optional*, preset: `False` paper, `True` lite):
            Reject rewrites that add or drop markdown markers (code blocks, headings, lists, bold, tables) or change
            their count beyond the length bounds.

        > Neutral augmentations (step 5)

        neutral_augmentation (`bool`, *optional*, defaults to `True`):
            Whether to make tie pairs at all.
        neutral_types (`list[str]`, *optional*, defaults to `["iqn"]`):
            Which: `"iqn"` (Irrelevant Query Neutrals, no oracle call), `"aligned"` (causally-aligned neutrals: one
            oracle call per row rewrites the rejected answer to the chosen one's causal profile) and `"paraphrase"`
            (one oracle call per row paraphrases the chosen answer). Each pair records its type in `neutral_type`.
        neutrals_per_original (`int`, *optional*, preset: 0 paper, 1 lite):
            IQN tie pairs made from each original pair.
        neutrals_per_causal (`int`, *optional*, preset: 0 paper, 1 lite):
            IQN tie pairs made from each causal pair.
        neutrals_per_row (`float`, *optional*, preset: 1.0 paper, 0.0 lite):
            IQN tie pairs per source row, each drawn from one of the row's original and causal pairs (a fraction is
            drawn with that probability): 1.0 makes the neutral data about 1x the original data.
        seed (`int`, *optional*, defaults to `42`):
            Seed of the neutral draws and of the fallback attributes.

        > Filtering with a baseline reward model (step 6)

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
            Folder of the run's resume state: the finished chunks (`output_dir/chunks`) and, unless `cache_dir` is
            set, the oracle cache (`output_dir/oracle_cache`). Without it, chunks go to the oracle cache folder, in
            `chunks/<run fingerprint>`.
        cache_dir (`str`, *optional*):
            Oracle cache folder. Defaults to `output_dir/oracle_cache`, else `$TRL_CROME_CACHE/oracle_cache`
            (`~/.cache/trl_crome/oracle_cache`). Rerunning with the same cache resumes an interrupted run without
            paying again for any answered call.
        max_rows (`int`, *optional*):
            Only augment the first `max_rows` rows.
        chunk_size (`int`, *optional*):
            Rows that go through all oracle steps together, then are written to disk as one chunk; a rerun reuses
            every finished chunk. The output does not depend on it. Defaults to 256; with the Gemini Batch API, to
            `batch_size * batch_max_jobs / calls per row` (at least 256), so that a round of jobs fills the jobs in
            flight. Memory grows with `chunk_size * chunks_in_flight`, not with the data set.
        chunks_in_flight (`int`, *optional*):
            Chunks whose stages overlap: a new chunk starts each round, so a round holds the next stage of every
            chunk in flight (attributes of the newest, verification of the oldest). Defaults to 1 (chunk after
            chunk); 4 with the Gemini Batch API, where every round of calls is a round of batch jobs.
        max_cost (`float`, *optional*):
            USD cap on the run's oracle answers: what this run pays plus what its cache hits (and reused chunks) cost
            when they were paid. When reached, no new call is sent, the calls in flight finish (and are cached), the
            finished chunks are kept and returned, and `summary.stopped` says where it stopped. A rerun with the same
            cap stops at the same place without paying; a rerun with a higher cap goes on without paying twice.
        push_to_hub (`str`, *optional*):
            A Hub data set repository (`"user/name"`): when the run completes, its output is uploaded there with a
            dataset card (see [`CromeAugmenter.push_to_hub`]). The token comes from the Hugging Face login or
            `HF_TOKEN`.
        hub_private_repo (`bool`, *optional*):
            Create that repository private; `None` keeps the Hub's default.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show progress bars: rows done, and the calls of each round.
    """

    preset: str = field(
        default=PAPER,
        metadata={"help": "'paper' (the paper's pipeline, default) or 'lite' (cheaper).", "choices": tuple(PRESETS)},
    )
    identify_rubrics: bool = field(
        default=True,
        metadata={"help": "Ask the oracle for each example's attributes (else use the fallback attributes)."},
    )
    max_attributes: int | None = field(
        default=None, metadata={"help": "Attributes asked for and kept per example (preset: paper 5, lite 2)."}
    )
    fallback_attributes: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_FALLBACK_ATTRIBUTES),
        metadata={"help": "Attribute name to description, used when an example has no usable attributes."},
    )
    rubric_max_output_tokens: int | None = field(
        default=None, metadata={"help": "Output token limit of an attribute call (preset: paper 1024, lite 512)."}
    )
    causal_elements: bool | None = field(
        default=None, metadata={"help": "Ask for each attribute's causal elements (preset: paper yes, lite no)."}
    )
    elements_per_attribute: int = field(default=5, metadata={"help": "Causal elements asked for per attribute."})
    elements_max_output_tokens: int = field(
        default=1024, metadata={"help": "Output token limit of a causal-elements call."}
    )
    causal_augmentation: bool = field(default=True, metadata={"help": "Whether to write counterfactual answers."})
    directions: list[str] = field(
        default_factory=lambda: list(REWRITE_TEMPLATES),
        metadata={"help": "Rewrite directions: 'degrade' (the chosen answer) and/or 'upgrade' (the rejected one)."},
    )
    attributes_per_example: int | None = field(
        default=None, metadata={"help": "Attributes rewritten per example (preset: paper 5, lite 2)."}
    )
    rewrite_max_output_tokens: int | None = field(
        default=None, metadata={"help": "Output token limit of a rewrite call (preset: paper 4096, lite 2048)."}
    )
    accept_plain_text_rewrites: bool = field(
        default=False,
        metadata={
            "help": "Take a rewrite answer that is not the requested JSON as the rewritten text itself (for small "
            "local oracles that rarely write valid JSON); the checks still apply."
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the oracle calls."})
    verify_rewrites: bool | None = field(
        default=None, metadata={"help": "Verify every rewrite with a Pass/Fail oracle call (preset: paper yes)."}
    )
    verify_max_output_tokens: int = field(
        default=1024, metadata={"help": "Output token limit of a verification call."}
    )
    runaway_length_ratio: float = field(
        default=10.0, metadata={"help": "Reject a rewrite longer than this many times its source (always on)."}
    )
    check_length: bool | None = field(
        default=None, metadata={"help": "Reject rewrites outside the length ratio bounds (preset: lite yes)."}
    )
    min_length_ratio: float = field(
        default=0.5, metadata={"help": "Smallest accepted length of a rewrite relative to its source."}
    )
    max_length_ratio: float = field(
        default=2.0, metadata={"help": "Largest accepted length of a rewrite relative to its source."}
    )
    length_tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer to count lengths in tokens instead of characters."}
    )
    check_format: bool | None = field(
        default=None, metadata={"help": "Reject rewrites that add, drop or multiply markdown markers (preset: lite)."}
    )
    neutral_augmentation: bool = field(default=True, metadata={"help": "Whether to make neutral (tie) pairs."})
    neutral_types: list[str] = field(
        default_factory=lambda: [IQN],
        metadata={"help": "Neutral types: 'iqn', 'aligned' (causally-aligned) and/or 'paraphrase'."},
    )
    neutrals_per_original: int | None = field(
        default=None, metadata={"help": "IQN pairs made from each original pair (preset: paper 0, lite 1)."}
    )
    neutrals_per_causal: int | None = field(
        default=None, metadata={"help": "IQN pairs made from each causal pair (preset: paper 0, lite 1)."}
    )
    neutrals_per_row: float | None = field(
        default=None,
        metadata={"help": "IQN pairs per row, drawn from its original and causal pairs (preset: paper 1, lite 0)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the neutral draws and of the fallback attributes."})
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
    chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Rows that go through all oracle steps together and are written as one chunk (default: 256; with "
            "the Gemini Batch API, enough to fill the jobs in flight)."
        },
    )
    chunks_in_flight: int | None = field(
        default=None,
        metadata={"help": "Chunks whose stages overlap, one stage apart (default: 1; 4 with the Gemini Batch API)."},
    )
    max_cost: float | None = field(
        default=None, metadata={"help": "USD cap on the run's oracle answers (cached ones at what they cost)."}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub data set repository (user/name) to upload the output to, with its card."}
    )
    hub_private_repo: bool | None = field(
        default=None, metadata={"help": "Create the Hub repository private (default: the Hub's default)."}
    )
    show_progress: bool = field(default=True, metadata={"help": "Show progress bars (rows, and each round's calls)."})

    def __post_init__(self):
        apply_preset(self, self.preset)
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
        if self.causal_elements and self.preset == LITE:
            raise ValueError("causal_elements needs the paper preset: the lite templates have no place for them.")
        if self.elements_per_attribute < 1:
            raise ValueError(f"elements_per_attribute must be >= 1, got {self.elements_per_attribute}.")
        if not 0 < self.min_length_ratio <= 1 <= self.max_length_ratio:
            raise ValueError(
                f"Need 0 < min_length_ratio ({self.min_length_ratio}) <= 1 <= max_length_ratio "
                f"({self.max_length_ratio})."
            )
        if self.runaway_length_ratio <= 1:
            raise ValueError(f"runaway_length_ratio must be > 1, got {self.runaway_length_ratio}.")
        unknown = [t for t in self.neutral_types if t not in NEUTRAL_TYPES]
        if unknown:
            raise ValueError(f"neutral_types must be a subset of {list(NEUTRAL_TYPES)}: {self.neutral_types}")
        if self.neutrals_per_original < 0 or self.neutrals_per_causal < 0 or self.neutrals_per_row < 0:
            raise ValueError("neutrals_per_original, neutrals_per_causal and neutrals_per_row must be >= 0.")
        if not 0 <= self.filter_tau <= 1:
            raise ValueError(f"filter_tau must be in [0, 1], got {self.filter_tau}.")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}.")
        if self.chunks_in_flight is not None and self.chunks_in_flight < 1:
            raise ValueError(f"chunks_in_flight must be >= 1, got {self.chunks_in_flight}.")
        if self.max_cost is not None and self.max_cost < 0:
            raise ValueError(f"max_cost must be >= 0 (USD), got {self.max_cost}.")

    def resolved_cache_dir(self) -> Path:
        """The oracle cache folder this configuration uses."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        if self.output_dir is not None:
            return Path(self.output_dir) / "oracle_cache"
        return default_cache_dir() / "oracle_cache"


@dataclass
class _Run:
    """What one pass over the rows shares between chunks."""

    oracle: Oracle
    summary: AugmentationSummary
    pool: PromptPool  # the distinct prompts of the data: the IQN pool
    features: Features  # the output's types of prompt, chosen and rejected
    should_stop: StopCheck | None = None
    # lite: the rubric of a prompt, by digest, with its last row: kept while a chunk not started yet has the prompt
    rubrics: dict[int, tuple[int, list[CausalAttribute]]] = field(default_factory=dict)


@dataclass
class _Chunk:
    """A chunk of rows in flight: its steps (a generator that yields each stage's calls and is sent their answers),
    the calls of its current stage, and what it produced so far."""

    start: int
    stop: int
    digest: str
    report: ChunkReport
    steps: Generator[list[tuple[str, OracleRequest]], list[OracleResponse], list[CromePair]] | None = None
    calls: list[tuple[str, OracleRequest]] = field(default_factory=list)
    pairs: list[CromePair] = field(default_factory=list)


@dataclass
class _Output:
    """The finished chunks of the last run, in order."""

    store: ChunkStore
    records: list[dict[str, Any]]
    features: Features
    source_name: str | None


class _Sample:
    """The rows at `indices` of a source, read like a source (`estimate` on a sample)."""

    def __init__(self, source: SourceData, indices: list[int]):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def rows(self, start: int, stop: int) -> list[SourceRow]:
        return self.source.rows_at(self.indices[start:stop])


class CromeAugmenter:
    """Turns a preference dataset into Crome training data: original, causal and neutral pairs.

    Rows go through the oracle steps a chunk at a time (`config.chunk_size`): attributes (and paraphrase neutrals),
    causal elements (and causally-aligned neutrals), rewrites, verifications; then the chunk's neutral pairs, and the
    chunk is written to disk (`output_dir/chunks`). With `config.chunks_in_flight` > 1 the stages of consecutive
    chunks overlap: each round of oracle calls holds the next stage of every chunk in flight (with the Batch API, one
    round of jobs instead of one per stage and chunk). The output does not depend on either setting.

    Rows are read from the Arrow data set a chunk at a time, and the pool of prompts that IQN neutrals draw from
    holds a digest per distinct prompt, not its text: memory does not grow with the data set. All oracle calls go
    through a [`~trl_crome.oracles.CachedOracle`] and finished chunks stay on disk, so an interrupted run (crash,
    `kill -9`, Ctrl-C, `max_cost`) resumes with the same command, reuses every finished chunk without recomputing
    it, pays for no answered call twice, and returns exactly what an uninterrupted run returns. A failed call or a
    rejected rewrite only skips that rewrite; it is counted in [`summary`]. [`estimate`] shows the calls, tokens and
    cost of a run before anything is paid; `config.max_cost` caps it; `config.push_to_hub` shares the result with a
    dataset card.

    Args:
        oracle ([`~trl_crome.oracles.Oracle`]):
            The LLM that writes attributes and rewrites; wrapped in a `CachedOracle` on
            `config.resolved_cache_dir()` unless it already is one.
        config ([`CromeAugmenterConfig`], *optional*):
            The pipeline's settings; defaults to `CromeAugmenterConfig()` (the paper preset).
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
    >>> print(augmenter.estimate(data).to_table())  # calls, tokens and cost per step; nothing is paid
    >>> crome_data = augmenter(data)
    >>> print(augmenter.summary)
    ```
    """

    def __init__(self, oracle: Oracle, config: CromeAugmenterConfig | None = None, baseline: Baseline | None = None):
        self.config = config = config if config is not None else CromeAugmenterConfig()
        self.oracle = oracle if isinstance(oracle, CachedOracle) else CachedOracle(oracle, config.resolved_cache_dir())
        self.validator = CounterfactualValidator(
            config.min_length_ratio,
            config.max_length_ratio,
            config.check_format,
            _length_function(config),
            check_length=config.check_length,
            runaway_length_ratio=config.runaway_length_ratio,
        )
        self.baseline = None
        if config.filter_augmented and baseline is not None:
            self.baseline = as_baseline(
                baseline, config.filter_batch_size, config.filter_max_length, show_progress=config.show_progress
            )
        elif config.filter_augmented and (config.causal_augmentation or config.neutral_augmentation):
            logger.warning("No baseline reward model given: augmented pairs are kept without filtering.")
        self._baseline_name = _baseline_name(baseline) if self.baseline is not None else None
        self.summary: AugmentationSummary | None = None
        self._output: _Output | None = None  # the last run's finished chunks

    # -- chunking --------------------------------------------------------------------------------------------------
    def chunking(self) -> tuple[int, int]:
        """`(chunk_size, chunks_in_flight)` of a run, the defaults resolved for this oracle.

        Online: 256 rows, one chunk in flight. With the Gemini Batch API (an oracle with `batch=True`): 4 chunks in
        flight (one per dependent step), each of `batch_size * batch_max_jobs / calls per row` rows (at least 256), so
        that one round of jobs holds about as many requests as the jobs in flight can take.
        """
        config = self.config
        backend = self.oracle.oracle if isinstance(self.oracle, CachedOracle) else self.oracle
        batch = getattr(backend, "batch", False)
        depth = config.chunks_in_flight or (BATCH_CHUNKS_IN_FLIGHT if batch else 1)
        size = config.chunk_size
        if size is None:
            size = DEFAULT_CHUNK_SIZE
            if batch:
                capacity = backend.batch_size * backend.batch_max_jobs
                size = max(DEFAULT_CHUNK_SIZE, capacity // max(1, calls_per_row(config)))
        return size, depth

    def _fingerprint(self, source: SourceData, pool: PromptPool) -> str:
        """What a finished chunk's pairs depend on besides its own rows: settings, oracle model, baseline, the input's
        format and the pool of prompts (hashed)."""
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in RUN_ONLY_FIELDS}
        payload = {
            "version": __version__,
            "oracle": self.oracle.model,
            "settings": settings,
            "baseline": self._baseline_name,
            "features": source.features.to_dict(),
            "rows": len(source),
            "pool": pool.fingerprint(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _chunk_folder(self, fingerprint: str) -> Path:
        if self.config.output_dir is not None:
            return Path(self.config.output_dir) / CHUNKS_DIR
        # With the answers they were made from: a caller who chose the cache folder chose where the run's state goes.
        return self.oracle.cache.cache_dir / CHUNKS_DIR / fingerprint[:16]

    # -- a run -----------------------------------------------------------------------------------------------------
    def __call__(self, dataset: Dataset, dataset_name: str | None = None) -> Dataset:
        """Augment `dataset` (TRL preference format) and return the Crome pairs, in a deterministic order: per source
        row, the original pair, its causal pairs, then its neutral pairs. When `max_cost` stops the run, only the
        finished chunks' rows are returned and `summary.stopped` says where it stopped.

        The returned data set is memory-mapped from the chunks' files in the run's state folder. `dataset_name` (a Hub
        name such as `"trl-lib/ultrafeedback_binarized"`, or a local file) names the source in the dataset card; it is
        not guessed from `dataset.info`, which holds only a builder name (`"json"`) or a Hub name without its owner.
        """
        config, started = self.config, time.perf_counter()
        summary = self.summary = AugmentationSummary(
            oracle=self.oracle.model, preset=config.preset, max_cost=config.max_cost
        )
        source = SourceData(dataset, config.max_rows)
        pool = source.scan()  # every row checked before anything is paid
        summary.input_rows = len(source)
        fingerprint = self._fingerprint(source, pool)
        store = ChunkStore(self._chunk_folder(fingerprint), fingerprint)
        should_stop = None
        if config.max_cost is not None:
            should_stop = lambda: summary.spent_usd >= config.max_cost  # noqa: E731
        run = _Run(self.oracle, summary, pool, source.features, should_stop)
        records = self._run_chunks(source, run, store, config.show_progress)
        for record in records:
            summary.add_counts(record["report"], record["stop"] - record["start"])
        kinds = [KIND_CAUSAL, KIND_NEUTRAL]
        summary.finish(
            kinds=(KIND_ORIGINAL, *kinds),
            neutral_types=NEUTRAL_TYPES,
            verified=bool(config.verify_rewrites and config.causal_augmentation),
            filtered=kinds if self.baseline is not None else (),
        )
        summary.seconds = time.perf_counter() - started
        logger.info("Crome augmentation done:\n%s", summary.to_table())
        if summary.rows_incomplete:
            logger.warning(summary.incomplete_message)
        self._output = _Output(store, records, source.features, dataset_name)
        output = store.dataset(records, source.features)
        if config.push_to_hub is not None:
            if summary.stopped is None and not summary.rows_incomplete:
                self.push_to_hub(config.push_to_hub, private=config.hub_private_repo)
            else:
                why = "stopped at max_cost before the end" if summary.stopped else "has incomplete rows"
                logger.warning("Not pushed to %s: the run %s.", config.push_to_hub, why)
        return output

    def _run_chunks(
        self, source: SourceData | _Sample, run: _Run, store: ChunkStore | None, show: bool
    ) -> list[dict[str, Any]]:
        """Drive the chunks through their stages, `chunks_in_flight` at a time, one round of oracle calls per stage.

        A new chunk starts at most once per round, so the chunks in flight stay one stage apart and a round holds
        every step's calls. A chunk an earlier run finished (same fingerprint, same rows, no transient failure) is
        reused from `store` without a call. Returns the records of the chunks that make the output: all of them, or,
        when `max_cost` stopped the run, those before the first unfinished one (the others stay on disk for a rerun).
        """
        size, depth = self.chunking()
        total, summary = len(source), run.summary
        finished: dict[int, dict[str, Any]] = {}
        flights: list[_Chunk] = []
        position, stopped_step = 0, None
        bar = tqdm(total=total, desc="Crome rows", unit="row", disable=not show)
        while True:
            started = False
            while position < total and (not flights or (len(flights) < depth and not started)):
                record = store.get(position) if store is not None else None
                rows = source.rows(position, record["stop"] if record else min(position + size, total))
                digest = rows_digest(rows)
                if record is not None and record["rows_digest"] == digest and not record["report"]["transient"]:
                    summary.add_reused(record["report"], len(rows))
                    finished[position], position = record, record["stop"]
                    bar.update(len(rows))
                    continue
                chunk = _Chunk(position, position + len(rows), digest, ChunkReport())
                chunk.steps = self._chunk_steps(rows, run, chunk.report)
                position, started = chunk.stop, True
                if self._advance(chunk, None):
                    flights.append(chunk)
                else:
                    finished[chunk.start] = self._finish(chunk, run, store)
                    bar.update(chunk.stop - chunk.start)
            if not flights:
                break
            calls = [call for chunk in flights for call in chunk.calls]
            responses = self._ask(run, calls, show)
            offset, moving = 0, []
            for chunk in flights:
                part = responses[offset : offset + len(chunk.calls)]
                offset += len(chunk.calls)
                if any(response is None for response in part):
                    continue  # held back by max_cost: the chunk is dropped (its answers are in the cache)
                chunk.report.add_answers(run.oracle, chunk.calls, part)
                if self._advance(chunk, part):
                    moving.append(chunk)
                else:
                    finished[chunk.start] = self._finish(chunk, run, store)
                    bar.update(chunk.stop - chunk.start)
            held = next((index for index, response in enumerate(responses) if response is None), None)
            if held is not None:
                stopped_step = calls[held][0]
                break
            flights = moving
        bar.close()
        records, position = [], 0
        while position in finished:
            records.append(finished[position])
            position = finished[position]["stop"]
        if stopped_step is not None:
            config = self.config
            summary.stopped = {
                "reason": "max_cost",
                "max_cost": config.max_cost,
                "spent_usd": summary.spent_usd,
                "step": stopped_step,
                "next_row": position,
            }
            logger.warning(
                "Stopped at max_cost $%.4f (spent $%.4f) in step %s: %d of %d rows written. Rerun with a higher "
                "max_cost to go on; answered calls are cached and finished chunks kept.",
                config.max_cost,
                summary.spent_usd,
                stopped_step,
                position,
                total,
            )
        return records

    @staticmethod
    def _advance(chunk: _Chunk, answers: list[OracleResponse] | None) -> bool:
        """Send a stage's answers into the chunk's steps; `False` when the chunk is done (its pairs in `pairs`)."""
        try:
            calls = chunk.steps.send(answers)
            while not calls:  # a stage with nothing to ask
                calls = chunk.steps.send([])
        except StopIteration as done:
            chunk.pairs = done.value
            return False
        chunk.calls = calls
        return True

    def _finish(self, chunk: _Chunk, run: _Run, store: ChunkStore | None) -> dict[str, Any]:
        """Filter a chunk's pairs with the baseline, and write it (with its record) when there is a store."""
        pairs, dropped = chunk.pairs, None
        if self.baseline is not None:
            pairs, dropped = filter_pairs(pairs, self.baseline, self.config.filter_tau)
        report = chunk.report.to_dict(pairs, dropped)
        if store is None:
            return {"start": chunk.start, "stop": chunk.stop, "report": report}
        return store.save(chunk.start, chunk.stop, chunk.digest, pairs, run.features, report)

    # -- the output ------------------------------------------------------------------------------------------------
    def _last_output(self) -> _Output:
        if self._output is None:
            raise RuntimeError("No output yet: call the augmenter on a data set first.")
        return self._output

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the last run's pairs as JSON lines, one chunk at a time and atomically: the bytes
        `augmenter(data).to_json(path, lines=True, force_ascii=False)` writes, without holding the output in memory."""
        output = self._last_output()
        output.store.write_jsonl(output.records, path)

    def dataset_card(self) -> DatasetCard:
        """The dataset card of the last run's output: source data, oracle, settings, counts, tokens and cost, template
        versions and the provenance columns (see `trl_crome/augment/card.py`). It holds no secret."""
        output = self._last_output()
        return dataset_card(self.summary, self.config, output.source_name, type(self.oracle.oracle).__name__)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
        """Upload the last run's pairs to the Hub data set `repo_id` with [`dataset_card`], through `datasets`'
        `Dataset.push_to_hub`. The token comes from `token` or the Hugging Face login (never from the card).
        Returns the repository's URL."""
        output = self._last_output()
        dataset = output.store.dataset(output.records, output.features)
        return push_to_hub(dataset, self.dataset_card(), repo_id, private=private, token=token)

    # -- cost before paying ----------------------------------------------------------------------------------------
    def estimate(
        self,
        dataset: Dataset,
        sample_rows: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        thinking_tokens: int | None = None,
        project_rows: int | None = None,
    ) -> CostEstimate:
        """What a run on `dataset` would call and cost, per step, without paying for anything.

        The real pipeline runs on the rows with a planning oracle in place of the oracle: an answer already in the
        cache is used as it is (so the prompts that depend on it are rendered exactly, and it counts as already
        paid); any other request is counted as a call to pay, its input tokens counted on the real rendered prompt,
        and it gets a typical successful answer (see `trl_crome/augment/estimate.py`) so that the next steps'
        prompts can be rendered. No request reaches the oracle. The planned calls are the calls a run makes when
        every call succeeds.

        Args:
            dataset (`Dataset`):
                The data the run would augment (`config.max_rows` applies).
            sample_rows (`int`, *optional*):
                Estimate on a seeded random sample of this many rows and project to all rows (calls and tokens scale
                with the number of rows). `None`: every row.
            token_counter (`Callable[[str], int]`, *optional*):
                Tokens of a text; defaults to a tokenizer of the local oracle when it has one, else 4 characters per
                token (Google's rule of thumb for Gemini).
            thinking_tokens (`int`, *optional*):
                Thinking tokens per call, billed as output; defaults to the oracle's `thinking_budget` when set, an
                assumption for models that think by default (see `estimate.py`), else 0.
            project_rows (`int`, *optional*):
                Project to this many rows instead of the rows of `dataset` (e.g. `dataset` is a sample of the data
                you will augment).
        """
        config = self.config
        source = SourceData(dataset, config.max_rows)
        pool = source.scan()
        sample: SourceData | _Sample = source
        if sample_rows is not None and sample_rows < len(source):
            sample = _Sample(source, sorted(random.Random(config.seed).sample(range(len(source)), sample_rows)))
        planner = PlanningOracle(
            self.oracle,
            token_counter=token_counter,
            attributes=config.max_attributes,
            elements=config.elements_per_attribute,
        )
        summary = AugmentationSummary(oracle=self.oracle.model, preset=config.preset)
        self._run_chunks(sample, _Run(planner, summary, pool, source.features), store=None, show=False)
        return CostEstimate.from_summary(
            summary,
            rows=len(sample),
            total_rows=project_rows or len(source),
            prices=price_tiers(self.oracle),
            thinking_tokens=default_thinking_tokens(self.oracle) if thinking_tokens is None else thinking_tokens,
            token_note=planner.token_note,
        )

    # -- one chunk of rows through every oracle step --------------------------------------------------------------
    def _ask(self, run: _Run, calls: list[tuple[str, OracleRequest]], show: bool) -> list[OracleResponse | None]:
        """Answer one round's `(step, request)` calls; `None` for each request `max_cost` held back."""
        if run.should_stop is not None and run.should_stop():
            return [None] * len(calls)
        steps = [step for step, _ in calls]
        desc = "Crome " + " + ".join(dict.fromkeys(step.replace("_", " ") for step in steps))
        return ask_oracle(
            run.oracle,
            [request for _, request in calls],
            run.summary,
            desc,
            "call",
            show,
            steps=steps,
            should_stop=run.should_stop,
        )

    def _chunk_steps(
        self, rows: list[SourceRow], run: _Run, report: ChunkReport
    ) -> Generator[list[tuple[str, OracleRequest]], list[OracleResponse], list[CromePair]]:
        """The stages of one chunk: yields each stage's `(step, request)` calls, is sent their answers, and returns
        the chunk's pairs in output order. What the stages decide is counted in `report`."""
        config = self.config
        paper = config.preset == PAPER
        types = set(config.neutral_types) if config.neutral_augmentation else set()
        tokens, temperature = config.rewrite_max_output_tokens, config.temperature

        # Stage 1: attributes (per example, or per new prompt for lite) and paraphrase neutrals.
        calls: list[tuple[str, OracleRequest]] = []
        need_attributes = config.causal_augmentation or ALIGNED in types
        known, new_prompts = {}, {}  # lite: the chunk's rubrics an earlier chunk resolved; the prompts still to ask
        if need_attributes and not paper:
            for digest in [d for d, (last, _) in run.rubrics.items() if last < rows[0].index]:
                del run.rubrics[digest]  # no chunk still to start has this prompt
            for row in rows:
                digest = prompt_digest(row.prompt)
                if digest in run.rubrics:
                    known[digest] = run.rubrics[digest][1]
                else:
                    new_prompts.setdefault(prompt_key(row.prompt), row.prompt)
        if need_attributes and config.identify_rubrics:
            max_tokens = config.rubric_max_output_tokens
            if paper:
                calls += [
                    (STEP_ATTRIBUTES, attributes_request(row, config.max_attributes, max_tokens, temperature))
                    for row in rows
                ]
            else:
                calls += [
                    (STEP_RUBRICS, rubric_request(prompt, config.max_attributes, max_tokens))
                    for prompt in new_prompts.values()
                ]
        paraphrases = [NeutralRewriteTask(row, PARAPHRASE) for row in rows] if PARAPHRASE in types else []
        calls += [(STEP_PARAPHRASE, task.request(tokens, temperature)) for task in paraphrases]
        answers = yield calls
        split = len(answers) - len(paraphrases)
        attribute_answers, paraphrase_answers = answers[:split], answers[split:]
        attributes = []
        if need_attributes:
            attributes = self._attributes(rows, attribute_answers, known, new_prompts, run, report)

        # Stage 2: causal elements of each attribute, and causally-aligned neutrals.
        calls = []
        want_elements = paper and config.causal_augmentation and config.causal_elements
        if want_elements:
            calls += [
                (STEP_ELEMENTS, elements_request(row, attribute, config.elements_per_attribute,
                                                 config.elements_max_output_tokens, temperature))
                for row, row_attributes in zip(rows, attributes)
                for attribute in row_attributes
            ]  # fmt: skip
        aligned = []
        if ALIGNED in types:
            # A row without attributes had its attribute call fail transiently: asked when the chunk is recomputed.
            aligned = [NeutralRewriteTask(row, ALIGNED, tuple(found)) for row, found in zip(rows, attributes) if found]
        calls += [(STEP_ALIGNED, task.request(tokens, temperature)) for task in aligned]
        answers = yield calls
        split = len(answers) - len(aligned)
        element_answers, aligned_answers = iter(answers[:split]), answers[split:]
        elements = None  # lite templates
        if paper:  # paper templates: per row, per attribute, its elements (none when the step is off or failed)
            elements = [[() for _ in row_attributes] for row_attributes in attributes]
            if want_elements:
                for r, row_attributes in enumerate(attributes):
                    answered = [(attribute, next(element_answers)) for attribute in row_attributes]
                    # Elements that failed transiently are asked again when the chunk is recomputed: their attribute's
                    # rewrites are not paid meanwhile.
                    answered = [(attribute, answer) for attribute, answer in answered if not answer.transient]
                    attributes[r], elements[r] = [attribute for attribute, _ in answered], []
                    for _, answer in answered:
                        found, reason = parse_elements(answer, config.elements_per_attribute)
                        elements[r].append(found)
                        if reason is not None:
                            report.counters["elements"][reason] += 1

        # Stage 3: counterfactual rewrites; then the sanity checks (and the lite gates).
        causal = []
        if config.causal_augmentation:
            directions = [d for d in REWRITE_TEMPLATES if d in config.directions]  # degrade first, however spelled
            tasks = rewrite_tasks(rows, attributes, directions, elements)
            responses = yield [(STEP_REWRITES, task.request(tokens, temperature)) for task in tasks]
            texts, rejects = checked_rewrites(
                [task.source for task in tasks], responses, self.validator, config.accept_plain_text_rewrites
            )
            report.counters["rejects"].update(rejects)
            accepted = [(task, text) for task, text in zip(tasks, texts) if text is not None]
            # Stage 4: an oracle verification of every rewrite that passed the checks.
            if config.verify_rewrites:
                max_tokens = config.verify_max_output_tokens
                verdicts = yield [
                    (STEP_VERIFY, verify_request(task, text, max_tokens, temperature)) for task, text in accepted
                ]
                causal = verified_pairs(
                    [task for task, _ in accepted], [text for _, text in accepted], verdicts, report.verification
                )
            else:
                causal = [task.pair(text) for task, text in accepted]

        # Neutral pairs, then the chunk in output order.
        pairs = [row.as_original_pair() for row in rows] + causal
        neutrals = []
        if IQN in types:
            per_pair, missing = neutral_pairs(
                pairs, run.pool, config.neutrals_per_original, config.neutrals_per_causal, config.seed
            )
            per_row, missing_per_row = sampled_neutral_pairs(pairs, run.pool, config.neutrals_per_row, config.seed)
            neutrals += per_pair + per_row
            report.counters["neutrals"]["missing"] += missing + missing_per_row
        for tasks, responses in ((aligned, aligned_answers), (paraphrases, paraphrase_answers)):
            texts, rejects = checked_rewrites(
                [task.source for task in tasks], responses, self.validator, config.accept_plain_text_rewrites
            )
            report.counters["rejects"].update(rejects)
            neutrals += [task.pair(text) for task, text in zip(tasks, texts) if text is not None]
        pairs += neutrals
        pairs.sort(key=lambda pair: (pair.source_row, _KIND_RANK[pair.kind]))  # stable: keeps each kind's order
        return pairs

    def _attributes(
        self,
        rows: list[SourceRow],
        answers: list[OracleResponse],
        known: dict[int, list[CausalAttribute]],
        new_prompts: dict[str, Turns],
        run: _Run,
        report: ChunkReport,
    ) -> list[list[CausalAttribute]]:
        """Each row's attributes to rewrite, most important first: from the oracle's answers or the fallback.

        Lite: `known` holds the rubrics (by prompt digest) an earlier chunk resolved, `answers` answer `new_prompts`.
        """
        config = self.config
        if config.preset != PAPER:
            rubrics = self._lite_rubrics(rows, answers, new_prompts, run, report)
            return [
                (known.get(digest) or rubrics[digest])[: config.attributes_per_example]
                for digest in (prompt_digest(row.prompt) for row in rows)
            ]
        attributes = []
        for index, row in enumerate(rows):
            found, reason = [], None
            if config.identify_rubrics:
                if answers[index].transient:
                    attributes.append([])  # asked again when the chunk is recomputed: no fallback work paid meanwhile
                    continue
                found, reason, rescaled = parse_attributes(answers[index], config.max_attributes)
                report.counters["scores"]["rescaled"] += rescaled
            if not found:
                if reason is not None:
                    report.counters["fallbacks"][reason] += 1
                found = fallback_attributes(
                    prompt_key(row.prompt), config.fallback_attributes, config.max_attributes, config.seed
                )
            attributes.append(found[: config.attributes_per_example])
        return attributes

    def _lite_rubrics(
        self,
        rows: list[SourceRow],
        answers: list[OracleResponse],
        new_prompts: dict[str, Turns],
        run: _Run,
        report: ChunkReport,
    ) -> dict[int, list[CausalAttribute]]:
        """Lite: the rubrics of `new_prompts` by digest; those a later chunk has again are kept in `run.rubrics`.

        A prompt is asked in the first chunk that has it; a later chunk asks it again (from the cache) only when that
        chunk was reused from an earlier run, and then does not count its fallback a second time.
        """
        config, pool = self.config, run.pool
        responses = dict(zip(new_prompts, answers)) if config.identify_rubrics else None
        rubrics: dict[int, list[CausalAttribute]] = {}
        if responses is not None:  # asked again when the chunk is recomputed: no fallback work paid meanwhile
            deferred = {key for key, response in responses.items() if response.transient}
            rubrics = {prompt_digest(new_prompts[key]): [] for key in deferred}
            new_prompts = {key: prompt for key, prompt in new_prompts.items() if key not in deferred}
        positions = {key: pool.position(prompt_digest(prompt)) for key, prompt in new_prompts.items()}
        first_here = {key for key, position in positions.items() if pool.first_rows[position] >= rows[0].index}
        for counted in (True, False):
            prompts = {key: prompt for key, prompt in new_prompts.items() if (key in first_here) == counted}
            resolved, fallbacks = resolve_rubrics(
                prompts, responses, config.max_attributes, config.fallback_attributes, config.seed
            )
            if counted:
                report.counters["fallbacks"].update(fallbacks)
            for key, attributes in resolved.items():
                last = int(pool.last_rows[positions[key]])
                rubrics[int(pool.digests[positions[key]])] = attributes
                if last > rows[-1].index:
                    run.rubrics[int(pool.digests[positions[key]])] = (last, attributes)
        return rubrics


def _length_function(config: CromeAugmenterConfig):
    if config.length_tokenizer is None:
        return len
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.length_tokenizer)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def calls_per_row(config: CromeAugmenterConfig) -> int:
    """Oracle calls per row when every call succeeds (lite: counting one rubric per row, as with unique prompts)."""
    types = set(config.neutral_types) if config.neutral_augmentation else set()
    attributes = config.attributes_per_example if config.causal_augmentation else 0
    rewrites = attributes * len(config.directions)
    calls = int(config.identify_rubrics and (config.causal_augmentation or ALIGNED in types))
    calls += attributes if config.preset == PAPER and config.causal_elements else 0
    calls += rewrites * (2 if config.verify_rewrites else 1)
    return calls + (ALIGNED in types) + (PARAPHRASE in types)


def _baseline_name(baseline: Baseline) -> str:
    """What identifies a baseline in a run's fingerprint: its path or Hub name, its model's name, or its callable."""
    if isinstance(baseline, str | os.PathLike):
        return str(baseline)
    if isinstance(baseline, tuple):
        return str(getattr(baseline[0].config, "_name_or_path", type(baseline[0]).__name__))
    return f"{getattr(baseline, '__module__', '')}.{getattr(baseline, '__qualname__', type(baseline).__qualname__)}"


__all__ = ["AugmentationSummary", "CromeAugmenter", "CromeAugmenterConfig", "calls_per_row"]
