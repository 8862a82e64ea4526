"""Configuration of [`CromePairPMTrainer`]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl.trainer.base_config import _BaseConfig

from ..pairpm import DEFAULT_TEMPLATE_VERSION, PAIRPM_TEMPLATES
from .config import ActivationCheckpointingArguments


@dataclass
class CromePairPMConfig(ActivationCheckpointingArguments, _BaseConfig):
    r"""
    Configuration class for the [`CromePairPMTrainer`].

    This class includes only the parameters that are specific to PairPM training. For the full list of training
    arguments, see [`~transformers.TrainingArguments`]. Defaults shared by all TRL trainers (`logging_steps=10`,
    activation checkpointing on, `bf16=True` unless `fp16`) apply here too; activation checkpointing is set with
    `activation_checkpointing` with every supported transformers version, as in [`CromeRewardConfig`].

    Parameters:
        > Parameters that control the model

        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for [`~transformers.AutoModelForCausalLM.from_pretrained`], used when the `model`
            argument of the [`CromePairPMTrainer`] is a string.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Whether to disable dropout in the model.

        > Parameters that control the data preprocessing

        template_version (`str`, *optional*, defaults to `"pairpm@2"`):
            Version of the PairPM input template (see [`~trl_crome.pairpm.PAIRPM_TEMPLATES`]); saved with the model
            in `pairpm.json` so that inference uses the same one. `"pairpm@2"` is RRM's neutral format, as in the
            paper: `[CONTEXT] {prompt} [RESPONSE A] {answer_a} [RESPONSE B] {answer_b}`, no instruction. `"pairpm@1"`
            (the default before) adds an instruction to judge correctness, relevance, helpfulness, completeness and
            safety and not length, formatting or style.
        use_chat_template (`bool`, *optional*):
            Whether to wrap the filled template in the tokenizer's chat template. `None` does so when the tokenizer
            has one.
        max_length (`int` or `None`, *optional*, defaults to `2048`):
            Longest input (template, prompt and both answers). Longer pairs are truncated, never dropped: the
            prompt loses its start first, then both answers lose their ends evenly. `None` keeps every input whole.
        dataset_num_proc (`int`, *optional*):
            Number of processes to use for processing the dataset.
        pad_to_multiple_of (`int`, *optional*):
            If set, batches are padded to a multiple of this value.

        > Parameters that control the training

        both_orders (`bool`, *optional*, defaults to `True`):
            Train every pair in both orders (chosen shown as A, then as B) in the same forward pass, so that the
            position of an answer carries no signal. `False` shows each pair once, the chosen answer first on even
            dataset rows and second on odd rows (half the compute).
        tie_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight lambda of the tie (neutral pair) term of the composite loss, as in [`CromeRewardConfig`].
        learning_rate (`float`, *optional*, defaults to `2e-5`):
            Initial learning rate for AdamW (the whole causal LM is fine-tuned unless a `peft_config` is given).
    """

    _VALID_DICT_FIELDS = _BaseConfig._VALID_DICT_FIELDS + ["model_init_kwargs"]

    learning_rate: float = field(
        default=2e-5,
        metadata={"help": "The initial learning rate for AdamW."},
    )

    # Parameters that control the model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained`, used when the `model` argument of "
            "the `CromePairPMTrainer` is a string."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Whether to disable dropout in the model."},
    )

    # Parameters that control the data preprocessing
    template_version: str = field(
        default=DEFAULT_TEMPLATE_VERSION,
        metadata={
            "help": "Version of the PairPM input template, saved with the model in `pairpm.json`: 'pairpm@2' (RRM's "
            "neutral format, as in the paper) or 'pairpm@1' (with an instruction about what to judge).",
            "choices": sorted(PAIRPM_TEMPLATES),
        },
    )
    use_chat_template: bool | None = field(
        default=None,
        metadata={
            "help": "Whether to wrap the filled template in the tokenizer's chat template. `None` does so when the "
            "tokenizer has one."
        },
    )
    max_length: int | None = field(
        default=2048,
        metadata={
            "help": "Longest input (template, prompt and both answers). Longer pairs are truncated, never dropped: "
            "the prompt loses its start first, then both answers lose their ends evenly."
        },
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={"help": "Number of processes to use for processing the dataset."},
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "If set, batches are padded to a multiple of this value."},
    )

    # Parameters that control the training
    both_orders: bool = field(
        default=True,
        metadata={
            "help": "Train every pair in both orders (chosen shown as A, then as B) in one forward pass, so that the "
            "position of an answer carries no signal."
        },
    )
    tie_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight lambda of the tie (neutral pair) term of the composite loss; `1.0` is the paper's."},
    )

    def __post_init__(self):
        self._resolve_activation_checkpointing()
        super().__post_init__()
        if self.tie_loss_weight < 0:
            raise ValueError(f"`tie_loss_weight` must be >= 0, got {self.tie_loss_weight}.")
        if self.template_version not in PAIRPM_TEMPLATES:
            raise ValueError(
                f"unknown `template_version` {self.template_version!r}; known versions: {sorted(PAIRPM_TEMPLATES)}"
            )
