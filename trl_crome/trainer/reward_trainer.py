"""[`CromeRewardTrainer`]: TRL's `RewardTrainer` with Crome's tie-aware composite loss and per-kind metrics."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_utils import has_length
from trl import RewardTrainer
from trl.data_utils import get_dataset_column_names, is_conversational
from trl.trainer.reward_trainer import DataCollatorForPreference

from ..data import (
    DEFAULT_KINDS,
    KIND_COLUMN,
    KIND_NEUTRAL,
    KIND_ORIGINAL,
    TIE_COLUMN,
    default_kind,
    validate_preference_dataset,
)
from ..packing import packed_rewards, uses_flash_attention
from ..prefix_sharing import prefix_shared_rewards
from .config import CromeRewardConfig
from .losses import composite_loss
from .metrics import per_kind_metrics
from .model_card import CromeModelCardMixin
from .packing import DataCollatorForPaddingFreePreference, DataCollatorForPrefixSharingPreference
from .pair_labels import KIND_ID_COLUMN, add_kind_id, add_pair_labels
from .prompt_groups import PROMPT_HASH_COLUMN, PROMPT_LENGTH_COLUMN, PromptGroupedSampler, add_prompt_columns

logger = get_logger(__name__)


@dataclass
class CromeDataCollator(DataCollatorForPreference):
    """
    [`~trl.trainer.reward_trainer.DataCollatorForPreference`] that also returns, per pair, `"tie"` (a bool tensor) and
    `"kind_id"` (an int tensor indexing the trainer's `kind_names`).

    Examples without a `"tie"` key are preference pairs; examples without a `"kind_id"` key are of kind `"neutral"`
    (id 2) when they are ties and `"original"` (id 0) otherwise.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return add_pair_labels(super().torch_call(examples), examples)


@dataclass
class CromePaddingFreeDataCollator(DataCollatorForPaddingFreePreference):
    """
    [`~trl_crome.trainer.packing.DataCollatorForPaddingFreePreference`] (the collator of `padding_free=True`) that also
    returns `"tie"` and `"kind_id"`, as [`CromeDataCollator`] does.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return add_pair_labels(super().torch_call(examples), examples)


@dataclass
class CromePrefixSharingDataCollator(DataCollatorForPrefixSharingPreference):
    """
    [`~trl_crome.trainer.packing.DataCollatorForPrefixSharingPreference`] (the collator of `prefix_sharing=True`) that
    also returns `"tie"` and `"kind_id"`, as [`CromeDataCollator`] does.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return add_pair_labels(super().torch_call(examples), examples)


def _add_length(example: dict[str, Any], length_column: str) -> dict[str, int]:
    # The longer answer sets the padded length of the pair's rows.
    return {length_column: max(len(example["chosen_ids"]), len(example["rejected_ids"]))}


class CromeRewardTrainer(CromeModelCardMixin, RewardTrainer):
    """
    Trainer for Crome reward models ([Robust Reward Modeling via Causal Rubrics](https://huggingface.co/papers/2506.16507)).

    A drop-in replacement for [`~trl.RewardTrainer`]. It differs from its parent only in:

    - the dataset may carry a boolean `tie` column (neutral pairs, target 0.5) and a string `kind` column (per-kind
      metrics); every row is validated before tokenization, with errors naming the row and the field;
    - the loss is Crome's composite loss, the mean over the batch's pairs of `-log sigmoid(d - margin)` for preference
      pairs and `tie_loss_weight * -(log sigmoid(d) + log sigmoid(-d)) / 2` for ties (see
      [`~trl_crome.trainer.losses.composite_loss`]); `center_rewards_coefficient` works as in TRL;
    - the logged `accuracy` and `margin` cover preference pairs only, and ties add `tie_abs_margin` (mean |d|);
      `loss/<kind>` and `count/<kind>` are logged per kind. All are computed from the pairs of every process;
    - the model card carries the `crome` tag and the paper's citation;
    - optionally, padding-free batches (`padding_free`), prefix sharing (`prefix_sharing`: each prompt computed once
      for all of its answers in a batch) and prompt-grouped batches (`group_by_prompt`), all with the padded path's
      rewards, loss and metrics (see docs/performance.md).

    On a dataset without `tie` and `kind` columns it computes exactly the loss of [`~trl.RewardTrainer`], with the
    same single forward pass per step.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_crome import CromeRewardConfig, CromeRewardTrainer

    >>> dataset = Dataset.from_list(
    ...     [
    ...         {"prompt": "2+2?", "chosen": "4", "rejected": "5", "tie": False, "kind": "original"},
    ...         {"prompt": "Capital of France?", "chosen": "4", "rejected": "5", "tie": True, "kind": "neutral"},
    ...     ]
    ... )
    >>> trainer = CromeRewardTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct", args=CromeRewardConfig("out"), train_dataset=dataset
    ... )
    >>> trainer.train()
    ```

    Args:
        model, data_collator, train_dataset, eval_dataset, processing_class, **kwargs:
            As in [`~trl.RewardTrainer`]. The default collator is [`CromeDataCollator`].
        args ([`CromeRewardConfig`] or [`~trl.RewardConfig`], *optional*):
            Configuration for this trainer. If `None`, a default configuration is used. A plain `RewardConfig` trains
            with the default `tie_loss_weight`.
    """

    _tag_names = ["trl", "reward-trainer", "crome"]
    _name = "Crome Reward"

    def __init__(
        self,
        model,
        args: CromeRewardConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        **kwargs,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = CromeRewardConfig(f"{model_name.split('/')[-1]}-Crome-Reward")
        # Grows while datasets are prepared (parent's __init__), so it holds every kind of train and eval data.
        self.kind_names: list[str] = list(DEFAULT_KINDS)
        self._pair_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.train_kind_counts: dict[str, int] = {}
        # Extra model-card sections (title -> markdown), e.g. the augmentation settings and evaluation results that a
        # recipe adds before saving; see `create_model_card`.
        self.model_card_sections: dict[str, str] = {}
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        prefix_sharing = getattr(self.args, "prefix_sharing", False)
        if prefix_sharing and uses_flash_attention(self.model):
            # cu_seqlens describe disjoint sequences: flash attention cannot let several answers attend to one prompt.
            logger.warning(
                "prefix_sharing=True needs sdpa, eager or flex attention; with flash attention the batches are "
                "padding-free instead (the same results, each prompt computed once per sequence)"
            )
            prefix_sharing = False
        if data_collator is None and prefix_sharing:
            self.data_collator = CromePrefixSharingDataCollator(
                pad_token_id=self.processing_class.pad_token_id,
                max_tokens=self.args.packing_max_tokens,
                pad_to_multiple_of=self.args.pad_to_multiple_of,
            )
        elif data_collator is None and getattr(self.args, "padding_free", False):
            self.data_collator = CromePaddingFreeDataCollator(
                pad_token_id=self.processing_class.pad_token_id,
                max_tokens=self.args.packing_max_tokens,
                one_row=uses_flash_attention(self.model),
                pad_to_multiple_of=self.args.pad_to_multiple_of,
            )
        elif data_collator is None:
            self.data_collator = CromeDataCollator(
                pad_token_id=self.processing_class.pad_token_id, pad_to_multiple_of=self.args.pad_to_multiple_of
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset, kinds = validate_preference_dataset(dataset, dataset_name)
        if dataset_name == "train" and "chosen" in get_dataset_column_names(dataset):  # not pre-tokenized
            self.train_conversational = is_conversational(next(iter(dataset)))
        self.kind_names += [kind for kind in kinds if kind not in self.kind_names]
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        columns = get_dataset_column_names(dataset)
        if KIND_COLUMN in columns and KIND_ID_COLUMN not in columns:
            kind_ids = {name: index for index, name in enumerate(self.kind_names)}
            dataset = dataset.map(
                add_kind_id, with_indices=True, fn_kwargs={"kind_ids": kind_ids, "dataset_name": dataset_name}
            )
            columns.append(KIND_ID_COLUMN)
        if dataset_name == "train" and isinstance(dataset, Dataset):
            self.train_kind_counts = self._count_kinds(dataset, columns)
            # transformers' length-grouped samplers read a length column; TRL's datasets have none.
            length_column = args.length_column_name
            # `group_by_length` became `train_sampling_strategy="group_by_length"` in transformers 5.2.
            strategy = getattr(args, "train_sampling_strategy", None)
            if strategy is None and getattr(args, "group_by_length", False):
                strategy = "group_by_length"
            if strategy in ("group_by_length", "batch_rebalance") and length_column not in columns:
                dataset = dataset.map(_add_length, fn_kwargs={"length_column": length_column})
        if getattr(args, "prefix_sharing", False) or getattr(args, "group_by_prompt", False):
            if PROMPT_LENGTH_COLUMN not in columns:
                dataset = add_prompt_columns(dataset, processing_class, dataset_name, args.dataset_num_proc)
        return dataset

    def _count_kinds(self, dataset: Dataset, columns: list[str]) -> dict[str, int]:
        if KIND_ID_COLUMN in columns:
            return dict(Counter(self.kind_names[index] for index in dataset[KIND_ID_COLUMN]))
        if TIE_COLUMN in columns:
            return dict(Counter(default_kind(tie) for tie in dataset[TIE_COLUMN]))
        return {KIND_ORIGINAL: len(dataset)}

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "chosen_ids",
                "rejected_ids",
                "margin",
                TIE_COLUMN,
                KIND_ID_COLUMN,
                self.args.length_column_name,  # for the length-grouped samplers; the collators ignore it
                PROMPT_LENGTH_COLUMN,  # for prefix sharing
                PROMPT_HASH_COLUMN,  # for the prompt-grouped sampler
            ]

    def _get_train_sampler(self, train_dataset=None):
        if not getattr(self.args, "group_by_prompt", False):
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not has_length(dataset):
            logger.warning("`group_by_prompt=True` is ignored for a dataset without a length (an IterableDataset)")
            return super()._get_train_sampler(train_dataset)
        if PROMPT_HASH_COLUMN not in dataset.column_names:
            raise ValueError(
                "`group_by_prompt=True` needs the pairs' prompts: the train dataset has no `prompt` column nor texts "
                "to find one in (pre-tokenized ids only)"
            )
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return PromptGroupedSampler(dataset[PROMPT_HASH_COLUMN], seed=seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        tie = inputs.pop(TIE_COLUMN, None)
        kind_id = inputs.pop(KIND_ID_COLUMN, None)
        margin = inputs.pop("margin", None)
        rewards, outputs, num_tokens = self._forward_rewards(model, inputs)
        rewards_chosen, rewards_rejected = torch.chunk(rewards.squeeze(-1), chunks=2)
        delta = rewards_chosen - rewards_rejected
        per_pair = composite_loss(delta, tie, margin, self.tie_loss_weight)
        loss = per_pair.mean()
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

        if tie is None:
            tie = torch.zeros_like(delta, dtype=torch.bool)
        if kind_id is None:
            kind_id = torch.where(tie, DEFAULT_KINDS.index(KIND_NEUTRAL), DEFAULT_KINDS.index(KIND_ORIGINAL))
        self._record_metrics(mode, num_tokens, rewards, delta, per_pair, tie, kind_id)
        return (loss, outputs) if return_outputs else loss

    def _forward_rewards(self, model, inputs) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The rewards of a batch's sequences, shape `(2 * num_pairs, num_labels)`, chosen first; the model's output
        (its `logits` are the rewards); and the number of real (non-padding) tokens. Padded batches go through the
        model as in TRL; packed ones (from [`CromePaddingFreeDataCollator`]) through
        [`~trl_crome.packing.packed_rewards`], which takes each sequence's reward at its own last token, and
        prefix-shared ones (from [`CromePrefixSharingDataCollator`]) through
        [`~trl_crome.prefix_sharing.prefix_shared_rewards`]. The token count is always that of the padded batch."""
        if "pooled_index" in inputs:
            rewards = prefix_shared_rewards(model, inputs) if "branch_ids" in inputs else packed_rewards(model, inputs)
            return rewards, SequenceClassifierOutput(logits=rewards), inputs["seq_lengths"].sum()
        inputs["use_cache"] = False
        outputs = model(**inputs)
        return outputs.logits, outputs, inputs["attention_mask"].sum()

    @torch.no_grad()
    def _record_metrics(self, mode, num_tokens, rewards, delta, per_pair, tie, kind_id) -> None:
        if mode == "train":
            num_tokens_in_batch = self.accelerator.gather_for_metrics(num_tokens).sum().item()
            self._total_train_tokens += num_tokens_in_batch // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        all_rewards = self.accelerator.gather(rewards)
        self._metrics[mode]["min_reward"].append(all_rewards.min().item())
        self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
        self._metrics[mode]["max_reward"].append(all_rewards.max().item())
        # Per-pair values from every process: ratios are then exact, not means of per-process means.
        stats = torch.stack([delta.float(), per_pair.float(), tie.float(), kind_id.float()], dim=1)
        self._pair_stats[mode].append(self.accelerator.gather_for_metrics(stats).cpu())

    def _pair_metrics(self, mode: str) -> dict[str, float]:
        if not self._pair_stats[mode]:
            return {}
        delta, per_pair, tie, kind_id = torch.cat(self._pair_stats.pop(mode)).unbind(dim=1)
        tie, kind_id = tie.bool(), kind_id.long()
        metrics = {}
        if (~tie).any():
            metrics["accuracy"] = (delta[~tie] > 0).float().mean().item()
            metrics["margin"] = delta[~tie].mean().item()
        if tie.any():
            metrics["tie_abs_margin"] = delta[tie].abs().mean().item()
        return metrics | per_kind_metrics(per_pair, kind_id, self.kind_names)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{key}": value for key, value in self._pair_metrics(mode).items()})
        super().log(logs, start_time)
