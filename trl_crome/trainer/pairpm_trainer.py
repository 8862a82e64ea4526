"""[`CromePairPMTrainer`]: a tie-aware pairwise preference model (PairPM), trained in both answer orders."""

from __future__ import annotations

import json
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from peft import PeftConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.data.data_collator import DataCollatorMixin
from trl.data_utils import get_dataset_column_names, maybe_extract_prompt
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import (
    create_model_from_path,
    disable_dropout_in_model,
    get_config_model_id,
    global_then_local_main_first,
)

from ..data import (
    DEFAULT_KINDS,
    KIND_COLUMN,
    KIND_ORIGINAL,
    TIE_COLUMN,
    CromeDataError,
    default_kind,
    validate_preference_dataset,
)
from ..pairpm import PAIRPM_CONFIG_NAME, PairPMFormatter, pad_left, preference_logits
from .losses import composite_loss
from .metrics import per_kind_metrics
from .model_card import EXAMPLE_ANSWERS, EXAMPLE_PROMPT, CromeModelCardMixin
from .pair_labels import KIND_ID_COLUMN, add_kind_id, add_pair_labels
from .pairpm_config import CromePairPMConfig

logger = get_logger(__name__)

IDS_CHOSEN_FIRST = "ids_chosen_first"
IDS_REJECTED_FIRST = "ids_rejected_first"
CHOSEN_FIRST_COLUMN = "chosen_first"
TRUNCATED_COLUMN = "truncated"


def _encode_pairs(batch: dict[str, list], indices: list[int], formatter: PairPMFormatter) -> dict[str, list]:
    encodings = formatter.encode(batch["prompt"], batch["chosen"], batch["rejected"])
    return {
        IDS_CHOSEN_FIRST: [e.ids_ab for e in encodings],
        IDS_REJECTED_FIRST: [e.ids_ba for e in encodings],
        TRUNCATED_COLUMN: [e.truncated for e in encodings],
        # Used only when `both_orders=False`: balanced and deterministic, whatever the shuffling.
        CHOSEN_FIRST_COLUMN: [index % 2 == 0 for index in indices],
    }


@dataclass
class DataCollatorForPairPM(DataCollatorMixin):
    """
    Collates PairPM examples into one left-padded batch of sequences (see [`~trl_crome.pairpm.pad_left`]).

    With `both_orders=True` the batch holds every pair twice: first all pairs with the chosen answer in slot A, then
    all pairs with it in slot B. Besides `input_ids`, `attention_mask` and `position_ids` it returns, per sequence,
    `chosen_is_a` (bool) and `pair_index` (the example it comes from), and per pair `tie`, `kind_id`, `truncated`
    and, when the examples have one, `margin`.

    Args:
        pad_token_id (`int`):
            Token id used for padding.
        both_orders (`bool`, *optional*, defaults to `True`):
            Whether to emit both orders of each pair, or only the order given by its `"chosen_first"` flag.
        pad_to_multiple_of (`int`, *optional*):
            If set, the sequences are padded to a multiple of this value.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.
    """

    pad_token_id: int
    both_orders: bool = True
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        pair_index = list(range(len(examples)))
        if self.both_orders:
            chosen_is_a = [True] * len(examples) + [False] * len(examples)
            pair_index = pair_index * 2
        else:
            chosen_is_a = [bool(example[CHOSEN_FIRST_COLUMN]) for example in examples]
        sequences = [
            examples[i][IDS_CHOSEN_FIRST if first else IDS_REJECTED_FIRST] for i, first in zip(pair_index, chosen_is_a)
        ]
        output = pad_left(sequences, self.pad_token_id, self.pad_to_multiple_of)
        output["chosen_is_a"] = torch.tensor(chosen_is_a, dtype=torch.bool)
        output["pair_index"] = torch.tensor(pair_index, dtype=torch.long)
        output = add_pair_labels(output, examples)
        output[TRUNCATED_COLUMN] = torch.tensor([bool(e.get(TRUNCATED_COLUMN)) for e in examples], dtype=torch.bool)
        if "margin" in examples[0]:
            output["margin"] = torch.tensor([example["margin"] for example in examples], dtype=torch.float)
        return output


class CromePairPMTrainer(CromeModelCardMixin, _BaseTrainer):
    """
    Trainer for Crome pairwise preference models (PairPM, [Robust Reward Modeling via Causal
    Rubrics](https://huggingface.co/papers/2506.16507)).

    A causal LM reads a fixed, versioned input template holding the prompt, answer A and answer B (see
    [`~trl_crome.pairpm.PairPMFormatter`]) and P(A better than B) is read from the next-token logits of the labels
    "A" and "B", renormalised over the two: `sigmoid(d)` with `d = logit("A") - logit("B")`. The loss is Crome's
    composite loss on `d` oriented towards the chosen answer (binary cross-entropy against target 1, or 0.5 for a
    tie, weighted by `tie_loss_weight` on ties; see [`~trl_crome.trainer.losses.composite_loss`]). Each pair is
    trained in both orders in the same forward pass (`both_orders=True`), so position bias cancels; a pair's loss is
    the mean over its orders.

    The data format is [`CromeRewardTrainer`]'s: preference pairs (standard or conversational, explicit or implicit
    prompt) with optional `tie` and `kind` columns, validated row by row. Inputs longer than `max_length` are
    truncated, never dropped (the prompt's start first, then the answers' ends evenly) and counted.

    Logged metrics, computed from the pairs of every process: `accuracy` (preference pairs whose P(chosen better),
    averaged over both orders, is above 0.5), `tie_p_deviation` (mean |P - 0.5| over ties), `position_bias` (mean
    P("A") - 0.5 over all inputs), `truncated_pairs`, and `loss/<kind>`, `count/<kind>` per kind.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_crome.trainer.pairpm_config import CromePairPMConfig
    >>> from trl_crome.trainer.pairpm_trainer import CromePairPMTrainer

    >>> dataset = Dataset.from_list(
    ...     [
    ...         {"prompt": "2+2?", "chosen": "4", "rejected": "5", "tie": False, "kind": "original"},
    ...         {"prompt": "Capital of France?", "chosen": "4", "rejected": "5", "tie": True, "kind": "neutral"},
    ...     ]
    ... )
    >>> trainer = CromePairPMTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct", args=CromePairPMConfig("out"), train_dataset=dataset
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            A causal LM: a Hub id or a local folder (loaded with [`~transformers.AutoModelForCausalLM`] and
            `args.model_init_kwargs`, `float32` unless a `dtype` is given there), or a loaded model.
        args ([`CromePairPMConfig`], *optional*):
            Configuration for this trainer. If `None`, a default configuration is used.
        data_collator ([`~transformers.DataCollator`], *optional*):
            Defaults to [`DataCollatorForPairPM`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Preference pairs in the Crome format (see [`~trl_crome.data`]). An `IterableDataset` needs `max_steps`.
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict[str, Dataset]`, *optional*):
            Evaluation pairs, same format.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer; loaded from the model's name when `None`. Without a pad token, the EOS token pads.
        peft_config ([`~peft.PeftConfig`], *optional*):
            Train a PEFT adapter (e.g. `LoraConfig(task_type="CAUSAL_LM")`) instead of the whole model.
        **kwargs:
            Passed to [`~transformers.Trainer`] (`callbacks`, `optimizers`, `compute_metrics`, ...).
    """

    # `compute_loss` returns the mean over the micro-batch's pairs: `Trainer` divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    _tag_names = ["trl", "crome", "pairpm"]
    _name = "Crome PairPM"

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: CromePairPMConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: PeftConfig | None = None,
        **kwargs,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = CromePairPMConfig(f"{model_name.split('/')[-1]}-Crome-PairPM")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        if isinstance(train_dataset, IterableDataset):
            # Accelerate's dispatch mode concatenates batches across processes, which an IterableDataset breaks.
            args.accelerator_config.dispatch_batches = False

        # Model. Seeded first so that a PEFT adapter starts from the same weights on every run.
        set_seed(args.seed)
        if isinstance(model, str):
            model_init_kwargs = dict(args.model_init_kwargs or {})
            if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
                model_init_kwargs["device_map"] = None
            model = create_model_from_path(model, AutoModelForCausalLM, **model_init_kwargs)
        elif args.model_init_kwargs is not None:
            logger.warning("`model_init_kwargs` are ignored: the model is already instantiated.")
        if model.get_output_embeddings() is None:
            raise ValueError(
                f"{type(model).__name__} has no language-model head: PairPM reads the next-token logits of 'A' and "
                "'B', so it needs a causal LM (e.g. `AutoModelForCausalLM`), not a sequence-classification model."
            )
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(get_config_model_id(model.config))
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token

        if peft_config is not None:
            if not isinstance(peft_config, PeftConfig):
                raise TypeError(f"`peft_config` must be a `peft.PeftConfig`, got {type(peft_config).__name__}.")
            if peft_config.task_type not in (None, TaskType.CAUSAL_LM):
                raise ValueError(
                    f"`peft_config.task_type` is {peft_config.task_type!r}; PairPM trains a causal LM, use "
                    "task_type='CAUSAL_LM'."
                )
            if is_peft_model(model):
                raise ValueError("The model is already a `PeftModel`; pass its base model with `peft_config`.")
            model = get_peft_model(model, peft_config)
        # transformers does not enable input gradients for PEFT + checkpointing (transformers#42489), as in TRL.
        if is_peft_model(model) and args.gradient_checkpointing:
            model.enable_input_require_grads()
        if args.disable_dropout:
            disable_dropout_in_model(model)

        self.formatter = PairPMFormatter(
            processing_class, args.template_version, args.max_length, args.use_chat_template
        )
        # Grows while datasets are prepared, so it holds every kind of train and eval data.
        self.kind_names: list[str] = list(DEFAULT_KINDS)
        self.train_kind_counts: dict[str, int] = {}
        self.model_card_sections: dict[str, str] = {}  # see `CromeModelCardMixin`
        self._pair_stats: dict[str, list[torch.Tensor]] = defaultdict(list)

        if data_collator is None:
            data_collator = DataCollatorForPairPM(
                pad_token_id=processing_class.pad_token_id,
                both_orders=args.both_orders,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        train_dataset = self._prepare_dataset(train_dataset, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {key: self._prepare_dataset(data, args, key) for key, data in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval")

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # During evaluation, `Trainer` calls `compute_loss` only when it can return a loss and has no label names.
        self.can_return_loss = True
        self.label_names = []
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._total_train_tokens = 0
        self.model.add_model_tags(self._tag_names)

    def _prepare_dataset(
        self, dataset: Dataset | IterableDataset, args: CromePairPMConfig, dataset_name: str
    ) -> Dataset | IterableDataset:
        columns = get_dataset_column_names(dataset)
        if IDS_CHOSEN_FIRST in columns:  # already prepared
            return dataset
        dataset, kinds = validate_preference_dataset(dataset, dataset_name)
        if "chosen" not in columns:
            raise CromeDataError(
                "PairPM reads the text of the prompt and of both answers in one input; pre-tokenized 'chosen_ids' / "
                "'rejected_ids' cannot be used, pass the 'chosen' and 'rejected' text columns",
                dataset_name=dataset_name,
                row=None,
                field="chosen",
            )
        self.kind_names += [kind for kind in kinds if kind not in self.kind_names]
        map_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
        with global_then_local_main_first():
            dataset = dataset.map(maybe_extract_prompt, **map_kwargs)
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Formatting {dataset_name} dataset for PairPM"
            dataset = dataset.map(
                _encode_pairs,
                batched=True,
                with_indices=True,
                fn_kwargs={"formatter": self.formatter},
                remove_columns=["prompt", "chosen", "rejected"],
                **map_kwargs,
            )
            if KIND_COLUMN in columns:
                kind_ids = {name: index for index, name in enumerate(self.kind_names)}
                dataset = dataset.map(
                    add_kind_id, with_indices=True, fn_kwargs={"kind_ids": kind_ids, "dataset_name": dataset_name}
                )
        if isinstance(dataset, Dataset):
            truncated = sum(dataset[TRUNCATED_COLUMN])
            if truncated:
                logger.warning(
                    f"{truncated} of {len(dataset)} {dataset_name} pairs are longer than max_length="
                    f"{args.max_length} and were truncated (prompt start first, then answer ends evenly)."
                )
            if dataset_name == "train":
                self.train_kind_counts = self._count_kinds(dataset)
        return dataset

    def _count_kinds(self, dataset: Dataset) -> dict[str, int]:
        if KIND_ID_COLUMN in dataset.column_names:
            return dict(Counter(self.kind_names[index] for index in dataset[KIND_ID_COLUMN]))
        if TIE_COLUMN in dataset.column_names:
            return dict(Counter(default_kind(tie) for tie in dataset[TIE_COLUMN]))
        return {KIND_ORIGINAL: len(dataset)}

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                IDS_CHOSEN_FIRST,
                IDS_REJECTED_FIRST,
                CHOSEN_FIRST_COLUMN,
                TRUNCATED_COLUMN,
                TIE_COLUMN,
                KIND_ID_COLUMN,
                "margin",
            ]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        # A dataset passed here directly is prepared like the ones given at init (a `str` names one of those).
        if isinstance(eval_dataset, dict):
            eval_dataset = {key: self._prepare_dataset(d, self.args, key) for key, d in eval_dataset.items()}
        elif eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_dataset(eval_dataset, self.args, "eval")
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        chosen_is_a = inputs.pop("chosen_is_a")
        pair_index = inputs.pop("pair_index")
        tie = inputs.pop(TIE_COLUMN)
        kind_id = inputs.pop(KIND_ID_COLUMN)
        truncated = inputs.pop(TRUNCATED_COLUMN)
        margin = inputs.pop("margin", None)

        # One forward pass over every sequence (both orders of every pair).
        delta = preference_logits(model, inputs, self.formatter.label_ids)
        # Orient each sequence's logit towards the chosen answer: the target is then 1 (0.5 for ties) in both orders.
        delta_chosen = torch.where(chosen_is_a, delta, -delta)
        per_sequence = composite_loss(
            delta_chosen, tie[pair_index], None if margin is None else margin[pair_index], self.tie_loss_weight
        )
        orders = torch.bincount(pair_index, minlength=tie.shape[0])
        per_pair = torch.zeros_like(tie, dtype=per_sequence.dtype).index_add(0, pair_index, per_sequence) / orders
        loss = per_pair.mean()

        with torch.no_grad():
            # P(chosen better), averaged over orders: (P(A>B | chosen first) + 1 - P(A>B | chosen second)) / 2.
            p_chosen = torch.zeros_like(per_pair).index_add(0, pair_index, torch.sigmoid(delta_chosen)) / orders
            p_first = torch.zeros_like(per_pair).index_add(0, pair_index, torch.sigmoid(delta)) / orders
        self._record_metrics(mode, inputs["attention_mask"], p_chosen, p_first, per_pair, tie, kind_id, truncated)
        return (loss, {"p_chosen": p_chosen}) if return_outputs else loss

    @torch.no_grad()
    def _record_metrics(self, mode, attention_mask, p_chosen, p_first, per_pair, tie, kind_id, truncated) -> None:
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        # Per-pair values from every process: ratios are then exact, not means of per-process means.
        columns = [p_chosen, p_first, per_pair.detach(), tie, kind_id, truncated]
        stats = torch.stack([column.float() for column in columns], dim=1)
        self._pair_stats[mode].append(self.accelerator.gather_for_metrics(stats).cpu())

    def _pair_metrics(self, mode: str) -> dict[str, float]:
        if not self._pair_stats[mode]:
            return {}
        p_chosen, p_first, per_pair, tie, kind_id, truncated = torch.cat(self._pair_stats.pop(mode)).unbind(dim=1)
        tie, kind_id = tie.bool(), kind_id.long()
        metrics = {"position_bias": p_first.mean().item() - 0.5, "truncated_pairs": truncated.sum().item()}
        if (~tie).any():
            metrics["accuracy"] = (p_chosen[~tie] > 0.5).float().mean().item()
        if tie.any():
            metrics["tie_p_deviation"] = (p_chosen[tie] - 0.5).abs().mean().item()
        return metrics | per_kind_metrics(per_pair, kind_id, self.kind_names)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items()}
        metrics.update(self._pair_metrics(mode))
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{key}": value for key, value in metrics.items()})
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if not self.args.should_save:  # transformers calls `_save` on every process; one writes
            return
        # The input format travels with the weights, so that `PairPMScorer(path)` rebuilds it exactly.
        pairpm = {
            "template_version": self.formatter.template.version,
            "use_chat_template": self.formatter.use_chat_template,
            "max_length": self.formatter.max_length,
            "tie_loss_weight": self.args.tie_loss_weight,
            "both_orders": self.args.both_orders,
        }
        path = Path(output_dir or self.args.output_dir) / PAIRPM_CONFIG_NAME
        path.write_text(json.dumps(pairpm, indent=2) + "\n", encoding="utf-8")

    def _quick_start(self, model_id: str) -> str:
        return textwrap.dedent(f"""\
            Compare two answers with the preference model (`pip install trl-crome`; the scorer reads the input format
            from `pairpm.json` beside the weights, and loads LoRA adapter folders as well as full models):

            ```python
            from trl_crome import PairPMScorer

            scorer = PairPMScorer("{model_id}"){self._model_id_comment()}
            prompt = "{EXAMPLE_PROMPT}"
            probabilities = scorer.prefer([prompt], ["{EXAMPLE_ANSWERS[0]}"], ["{EXAMPLE_ANSWERS[1]}"])
            print(probabilities)  # P(first answer better than the second), averaged over both orders
            ```
            """)

    # Save the model card with every checkpoint, as TRL's trainers do.
    def _save_checkpoint(self, model, trial):
        hub_model_id = self.args.hub_model_id
        model_name = Path(self.args.output_dir).name if hub_model_id is None else hub_model_id.split("/")[-1]
        self.create_model_card(model_name=model_name)
        super()._save_checkpoint(model, trial)
