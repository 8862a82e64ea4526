"""Padding-free (packed) rewards and training, and length-grouped batches, on tiny Llama models (real tokenizer)."""

import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import Gemma2Config, Gemma2ForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification
from transformers.trainer_pt_utils import LengthGroupedSampler

from tests.helpers import tiny_reward_model
from tests.trainer.common import tiny_args
from trl_crome import CromeRewardConfig, CromeRewardTrainer
from trl_crome.evaluation.scoring import RewardScorer
from trl_crome.packing import best_fit_decreasing, pack_sequences, packed_rewards
from trl_crome.trainer.packing import DataCollatorForPaddingFreePreference
from trl_crome.trainer.reward_trainer import CromePaddingFreeDataCollator

WORDS = "the a river moon bread owl tea chess volcano bicycle quietly bright under over seven".split()


def varied_pairs(n: int = 12, seed: int = 0) -> Dataset:
    """Pairs whose answers range from 1 to ~60 words, with ties, kinds and margins: a batch has lots of padding."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = ["original", "causal", "neutral"][i % 3]
        rows.append(
            {
                "prompt": f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 8))),
                "chosen": " ".join(rng.choices(WORDS, k=rng.randint(1, 60))),
                "rejected": " ".join(rng.choices(WORDS, k=rng.randint(1, 60))),
                "tie": kind == "neutral",
                "kind": kind,
                "margin": 0.25 * (i % 4),
            }
        )
    return Dataset.from_list(rows)


# --- bin packing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [64, 100, 257])
def test_best_fit_decreasing_respects_the_budget_and_places_every_sequence_once(capacity):
    rng = random.Random(capacity)
    lengths = [rng.randint(1, 64) for _ in range(200)]
    bins = best_fit_decreasing(lengths, capacity)
    assert sorted(i for row in bins for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= capacity for row in bins)
    # Best fit decreasing is near-optimal: at most 11/9 OPT + 1 bins, and OPT >= total / capacity.
    assert len(bins) <= 11 / 9 * (sum(lengths) / capacity) + 1 + 1e-9
    assert all(rng_row == sorted(rng_row, key=lambda i: -lengths[i]) for rng_row in bins)  # placed longest first


def test_best_fit_decreasing_picks_the_tightest_bin():
    # 6 opens bin 0 (4 free), 5 opens bin 1 (5 free); 4 fits both and must go where it fits tightest (bin 0).
    assert best_fit_decreasing([6, 5, 4, 5], capacity=10) == [[0, 2], [1, 3]]


def test_best_fit_decreasing_names_the_sequence_that_does_not_fit():
    with pytest.raises(ValueError, match="sequence 2 has 11 tokens, more than the budget of 10"):
        best_fit_decreasing([3, 4, 11], capacity=10)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        best_fit_decreasing([3, 0], capacity=10)


def test_pack_sequences_layout():
    pad = 0
    # Sequence 1 ends with the pad token (pad == EOS, as with SmolLM2): it is pooled at its last non-pad token.
    sequences = [[5, 6, 7], [8, pad], [9, 10], [11]]
    packed = pack_sequences(sequences, pad_token_id=pad)  # budget: the longest sequence, 3 tokens
    # The 1-token sequence goes to the first of the two rows with 1 token free; the last row ends with a filler.
    assert packed["input_ids"].tolist() == [[5, 6, 7], [8, 0, 11], [9, 10, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0], [0, 1, 0]]
    # Flat index of each sequence's pooled token, in input order.
    assert packed["pooled_index"].tolist() == [2, 3, 7, 5]
    assert packed["seq_lengths"].tolist() == [3, 2, 2, 1]
    # Boundaries of every sequence and of the filler in the flattened 9 tokens, as flash attention reads them.
    assert packed["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 8, 9]
    assert packed["max_length_q"] == 3

    one_row = pack_sequences(sequences, pad_token_id=pad, one_row=True, pad_to_multiple_of=4)
    assert one_row["input_ids"].tolist() == [[5, 6, 7, 8, 0, 9, 10, 11]]
    assert one_row["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0]]
    assert one_row["pooled_index"].tolist() == [2, 3, 6, 7]
    assert one_row["cu_seq_lens_k"].tolist() == [0, 3, 5, 7, 8]


def test_collator_matches_trl_order_and_margins():
    collator = DataCollatorForPaddingFreePreference(pad_token_id=0)
    batch = collator(
        [
            {"chosen_ids": [1, 2, 3], "rejected_ids": [4, 5], "margin": 0.5},
            {"chosen_ids": [6], "rejected_ids": [7], "margin": 0.0},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6], [7, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0], [0, 0, 1]]
    # chosen of example 0, chosen of example 1, rejected of example 0, rejected of example 1
    assert batch["pooled_index"].tolist() == [2, 5, 4, 6]
    assert batch["margin"].tolist() == [0.5, 0.0]


# --- rewards and losses ------------------------------------------------------------------------------------------


def _trainer(tmp_path, tokenizer, attn, padding_free, **overrides):
    model = tiny_reward_model(tokenizer, attn_implementation=attn)
    args = tiny_args(tmp_path / f"{attn}-{padding_free}", padding_free=padding_free, **overrides)
    return CromeRewardTrainer(model, args=args, train_dataset=varied_pairs(), processing_class=tokenizer)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("packing_max_tokens", [None, 256])
def test_packed_rewards_and_loss_equal_padded(tmp_path, tokenizer, attn, packing_max_tokens):
    settings = dict(tie_loss_weight=2.0, center_rewards_coefficient=0.01, max_length=256)
    padded = _trainer(tmp_path, tokenizer, attn, False, **settings)
    packed = _trainer(tmp_path, tokenizer, attn, True, packing_max_tokens=packing_max_tokens, **settings)
    assert isinstance(packed.data_collator, CromePaddingFreeDataCollator)
    examples = [padded.train_dataset[i] for i in range(12)]
    padded_batch, packed_batch = padded.data_collator(examples), packed.data_collator(examples)
    # Several sequences do share rows, and no padding but the row ends is computed.
    assert packed_batch["input_ids"].shape[0] < 24
    assert packed_batch["seq_lengths"].sum() == padded_batch["attention_mask"].sum()
    assert packed_batch["input_ids"].numel() < padded_batch["input_ids"].numel()

    model = padded.model.eval()  # same seed: the two trainers' models are equal; use one
    with torch.no_grad():
        loss_padded, out_padded = padded.compute_loss(model, dict(padded_batch), return_outputs=True)
        loss_packed, out_packed = packed.compute_loss(model, dict(packed_batch), return_outputs=True)
    torch.testing.assert_close(out_packed.logits, out_padded.logits, rtol=0, atol=1e-5)
    assert loss_packed.item() == pytest.approx(loss_padded.item(), abs=1e-5)
    assert out_padded.logits.std() > 1e-3  # rewards differ between sequences: the comparison means something
    # Per-pair stats (delta, loss, tie, kind) recorded for the metrics agree too.
    for stats_padded, stats_packed in zip(padded._pair_stats["eval"], packed._pair_stats["eval"]):
        torch.testing.assert_close(stats_packed, stats_padded, rtol=0, atol=1e-5)


def padded_rewards(model, sequences, pad_token_id):
    ids = [torch.tensor(s) for s in sequences]
    input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad_token_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(t) for t in ids], batch_first=True)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask).logits


def some_sequences(tokenizer, n=10, seed=0):
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) + tokenizer.eos_token for _ in range(n)]
    return [tokenizer(text)["input_ids"] for text in texts]


def tiny_family_model(family, tokenizer):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(0)
    if family == "qwen2":
        return Qwen2ForSequenceClassification(Qwen2Config(**common, attn_implementation="sdpa"))
    # Gemma-2: logit softcapping (no sdpa), and a sliding window shorter than the rows, so the packed mask must
    # combine it with the sequence blocks.
    config = Gemma2Config(**common, head_dim=8, sliding_window=16, attn_implementation="eager")
    return Gemma2ForSequenceClassification(config)


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_packed_rewards_equal_padded_for_qwen2_and_gemma2(tokenizer, family):
    model = tiny_family_model(family, tokenizer).eval()
    sequences = some_sequences(tokenizer)
    with torch.no_grad():
        rewards = packed_rewards(model, pack_sequences(sequences, tokenizer.pad_token_id, max_tokens=100))
    torch.testing.assert_close(rewards, padded_rewards(model, sequences, tokenizer.pad_token_id), rtol=0, atol=1e-5)


def test_packed_scoring_equals_padded_scoring(tokenizer):
    model = tiny_reward_model(tokenizer)
    sequences = some_sequences(tokenizer, n=13)
    padded = RewardScorer(model, tokenizer, batch_size=4, sort_by_length=False, show_progress=False)
    packed = RewardScorer(model, tokenizer, batch_size=2, packing=True, show_progress=False)
    expected, rewards = padded.score_ids(sequences), packed.score_ids(sequences)
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert packed.stats.real_tokens == padded.stats.real_tokens == sum(len(s) for s in sequences)
    assert packed.stats.padded_tokens < padded.stats.padded_tokens
    assert packed.stats.sequences == 13


def test_packed_rewards_with_a_peft_lora_model(tokenizer):
    torch.manual_seed(0)
    model = tiny_reward_model(tokenizer)
    config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(model, config).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    sequences = some_sequences(tokenizer, n=6)
    with torch.no_grad():
        rewards = packed_rewards(model, pack_sequences(sequences, tokenizer.pad_token_id, max_tokens=100))
    torch.testing.assert_close(rewards, padded_rewards(model, sequences, tokenizer.pad_token_id), rtol=0, atol=1e-5)


# --- training ----------------------------------------------------------------------------------------------------


def test_padding_free_training_reaches_the_padded_loss(tmp_path, tokenizer):
    histories, tokens, weights, evals = [], [], [], []
    for padding_free in (False, True):
        trainer = _trainer(tmp_path, tokenizer, "sdpa", padding_free, max_steps=4, per_device_train_batch_size=3)
        trainer.train()
        evals.append(trainer.evaluate(varied_pairs(6, seed=1)))
        logs = [log for log in trainer.state.log_history if "loss" in log]
        histories.append([log["loss"] for log in logs])
        tokens.append(logs[-1]["num_tokens"])
        weights.append({name: p.detach().clone() for name, p in trainer.model.named_parameters()})
    assert len(histories[0]) == 4
    assert histories[1] == pytest.approx(histories[0], abs=1e-4)
    assert len(set(histories[0])) == 4  # the losses vary from step to step: equal histories are not two constants
    assert tokens[1] == tokens[0]  # real tokens only, in both paths
    initial = tiny_reward_model(tokenizer).score.weight
    assert (weights[0]["score.weight"] - initial).abs().max() > 1e-3  # training moved the weights...
    for name, value in weights[0].items():  # ...by the same amount in both paths
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-4, msg=name)
    for key in ("eval_loss", "eval_accuracy", "eval_tie_abs_margin", "eval_loss/causal"):  # evaluation too
        assert evals[1][key] == pytest.approx(evals[0][key], abs=1e-4), key


def test_group_by_length_adds_the_length_column_and_trains(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, "sdpa", False, max_steps=2, train_sampling_strategy="group_by_length")
    dataset = trainer.train_dataset
    expected = [max(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
    assert dataset["length"] == expected
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(dataset))
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == expected
    trainer.train()  # the length column reaches the collator, never the model
    assert trainer.state.global_step == 2


def test_packing_budget_below_max_length_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="`packing_max_tokens` \\(256\\) must be >= `max_length` \\(512\\)"):
        CromeRewardConfig(str(tmp_path), bf16=False, max_length=512, packing_max_tokens=256)
