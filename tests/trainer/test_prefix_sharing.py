"""Prefix sharing: layout, masks, rewards / losses / gradients equal to the padded path, training, chat-template
fallback and the prompt-grouped sampler, on tiny Llama / Qwen2 / Gemma-2 models with the real SmolLM2 tokenizer."""

import logging
import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from tests.helpers import tiny_reward_model
from tests.trainer.common import tiny_args
from tests.trainer.test_packing import WORDS, padded_rewards, tiny_family_model
from trl_crome import CromeRewardConfig, CromeRewardTrainer
from trl_crome.prefix_sharing import (
    pack_prefix_shared,
    plan_prefix_sharing,
    prefix_attention_mask,
    prefix_shared_rewards,
    shared_prefix_length,
    verified_prefix_length,
)
from trl_crome.trainer.prompt_groups import PromptGroupedSampler
from trl_crome.trainer.reward_trainer import CromePaddingFreeDataCollator, CromePrefixSharingDataCollator


def grouped_pairs(num_prompts: int = 5, seed: int = 0) -> Dataset:
    """Crome-like groups: prompts with one pair or many, answers repeated across pairs (the original chosen answer in
    the degrade pairs), ties, margins, answers from 1 to ~40 words. Prompts end with a newline, so that (as with
    UltraFeedback and chat templates) the answer's tokens start where the prompt's end."""
    rng = random.Random(seed)
    rows = []
    for p in range(num_prompts):
        prompt = f"Question {p}: " + " ".join(rng.choices(WORDS, k=rng.randint(2, 30))) + "?\n"
        answers = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(5)]
        for k in range(1 if p == 0 else rng.randint(2, 5)):
            kind = ["original", "causal", "causal", "neutral", "causal"][k]
            chosen, rejected = (answers[0], answers[k + 1]) if k < 4 else (answers[3], answers[2])
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "tie": kind == "neutral",
                    "kind": kind,
                    "margin": 0.25 * (k % 3),
                }
            )
    return Dataset.from_list(rows)


# --- layout ------------------------------------------------------------------------------------------------------


def test_shared_prefix_length_checks_token_by_token():
    assert shared_prefix_length([1, 2], [1, 2, 3]) == 2
    assert shared_prefix_length([1, 2], [1, 4, 3]) == 0  # a merged boundary token
    assert shared_prefix_length([1, 2], [1, 2]) == 0  # nothing left to be the answer
    assert shared_prefix_length([], [1, 2]) == 0
    # Candidates in order: the first one that starts every sequence wins.
    assert verified_prefix_length([[1, 2, 9], [1, 2]], [1, 2, 9, 4], [1, 2, 9, 5]) == 3
    assert verified_prefix_length([[1, 2, 9], [1, 2]], [1, 2, 9, 4], [1, 2, 7]) == 2
    assert verified_prefix_length([[1, 2, 9]], [1, 2, 9, 4], [1, 3]) == 0


def test_pack_prefix_shared_layout():
    pad = 0
    sequences = [
        [5, 6, 7, 8],  # prompt [5, 6] + answer [7, 8]
        [5, 6, 9],  # prompt [5, 6] + answer [9]
        [5, 6, 7, 8],  # identical to sequence 0: laid out once
        [3, 4],  # shares nothing (prefix length 0)
        [5, 6, pad],  # answer is only the pad token (pad == EOS): pooled at the prompt's last token
    ]
    packed = pack_prefix_shared(sequences, [2, 2, 2, 0, 2], pad_token_id=pad, max_tokens=6)
    # Unit [5 6 | 7 8 | 9 | 0] (6 tokens) in row 0; [3 4] in row 1, then a filler.
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [3, 4, 0, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 2, 2], [0, 1, 0, 1, 2, 3]]
    assert packed["segment_ids"].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert packed["branch_ids"].tolist() == [[0, 0, 1, 1, 2, 3], [1, 1, 0, 0, 0, 0]]
    # Flat pooled index of each input sequence; the duplicate points at the same token as sequence 0.
    assert packed["pooled_index"].tolist() == [3, 4, 3, 7, 1]
    assert packed["seq_lengths"].tolist() == [4, 3, 4, 2, 3]  # what a padded batch counts as real tokens

    no_dedup = pack_prefix_shared(sequences, [2, 2, 2, 0, 2], pad_token_id=pad, max_tokens=6, deduplicate=False)
    assert no_dedup["input_ids"].flatten().tolist().count(7) == 2  # the answer [7, 8] twice
    assert no_dedup["pooled_index"][0] != no_dedup["pooled_index"][2]


def test_a_prompt_whose_answers_exceed_the_budget_gets_several_units():
    prompt = [1, 2, 3, 4]
    sequences = [prompt + [10 + i] * length for i, length in enumerate([4, 3, 3, 2])]
    rows, representative = plan_prefix_sharing(sequences, [4] * 4, max_tokens=10)
    units = [unit for row in rows for unit in row]
    assert all(unit.prefix_length == 4 for unit in units)
    assert sorted(i for unit in units for i in unit.members) == [0, 1, 2, 3] and representative == [0, 1, 2, 3]
    assert all(unit.num_tokens(sequences) <= 10 for unit in units)
    assert len(units) == 2  # 4 + (4 + 2) and 4 + (3 + 3)
    with pytest.raises(ValueError, match="sequence 1 has 12 tokens, more than the budget of 10"):
        plan_prefix_sharing([[1], [1] * 12], [0, 0], max_tokens=10)


def test_mask_lets_each_answer_see_the_prompt_and_itself_within_the_window(tokenizer):
    model = tiny_family_model("gemma2", tokenizer)  # eager; full and sliding-window layers (window 16)
    prompt = list(range(100, 112))  # 12 tokens
    sequences = [prompt + list(range(200, 210)), prompt + list(range(300, 306))]
    packed = pack_prefix_shared(sequences, [12, 12], pad_token_id=tokenizer.pad_token_id)
    masks = prefix_attention_mask(model, packed)
    assert set(masks) == {"full_attention", "sliding_attention"}
    full = masks["full_attention"][0, 0] == 0  # eager masks are additive: 0 where attention is allowed
    sliding = masks["sliding_attention"][0, 0] == 0
    first, second = range(12, 22), range(22, 28)
    for q in range(28):
        for kv in range(28):
            same = (q in first and kv in first) or (q in second and kv in second)
            expected = kv <= q and (kv < 12 or same)
            assert full[q, kv] == expected, (q, kv)
            distance = packed["position_ids"][0, q] - packed["position_ids"][0, kv]
            assert sliding[q, kv] == (expected and distance < 16), (q, kv)
    # The second answer's last token is at position 17: the window drops prompt positions 0 and 1 only.
    assert sliding[27, :12].tolist() == [False, False] + [True] * 10


def test_flash_attention_and_unknown_layer_types_are_refused(tokenizer):
    model = tiny_reward_model(tokenizer)
    packed = pack_prefix_shared([[1, 2, 3], [1, 2, 4]], [2, 2], pad_token_id=0)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash attention's varlen kernel cannot"):
        prefix_attention_mask(model, packed)
    model = tiny_family_model("qwen2", tokenizer)
    model.config.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(ValueError, match=r"this model also has \['linear_attention'\]"):
        prefix_attention_mask(model, packed)


# --- rewards, losses and gradients equal the padded path's -------------------------------------------------------

FAMILIES = [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa"), ("gemma2", "eager")]


def family_model(family, attn, tokenizer):
    if family == "llama":
        return tiny_reward_model(tokenizer, attn_implementation=attn)
    return tiny_family_model(family, tokenizer)


def lora() -> LoraConfig:
    return LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


def _trainers(tmp_path, tokenizer, family, attn, use_lora, **overrides):
    trainers = []
    for prefix_sharing in (False, True):
        torch.manual_seed(0)  # the same LoRA weights in both trainers
        trainers.append(
            CromeRewardTrainer(
                family_model(family, attn, tokenizer),
                args=tiny_args(tmp_path / f"{prefix_sharing}", prefix_sharing=prefix_sharing, **overrides),
                train_dataset=grouped_pairs(),
                processing_class=tokenizer,
                peft_config=lora() if use_lora else None,
            )
        )
    return trainers


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize(("family", "attn"), FAMILIES, ids=[f"{f}-{a}" for f, a in FAMILIES])
def test_rewards_losses_and_gradients_equal_padded(tmp_path, tokenizer, family, attn, use_lora):
    settings = dict(tie_loss_weight=2.0, center_rewards_coefficient=0.01, max_length=256)
    padded, shared = _trainers(tmp_path, tokenizer, family, attn, use_lora, **settings)
    assert shared.args.padding_free and isinstance(shared.data_collator, CromePrefixSharingDataCollator)
    dataset = shared.train_dataset
    assert all(length > 0 for length in dataset["prompt_length"])  # every pair verified its prompt
    examples = [dataset[i] for i in range(len(dataset))]
    padded_batch, shared_batch = padded.data_collator(examples), shared.data_collator(examples)
    # Prompts and repeated answers are computed once: far fewer tokens than the padded path's real tokens.
    assert shared_batch["seq_lengths"].sum() == padded_batch["attention_mask"].sum()
    assert shared_batch["input_ids"].numel() < 0.7 * padded_batch["attention_mask"].sum()

    model = padded.model  # same seed: the two trainers' models are equal; use one, in training mode (no dropout)
    results = []
    for trainer, batch in ((padded, padded_batch), (shared, shared_batch)):
        model.zero_grad()
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), outputs.logits.detach(), trainer._pair_stats["train"][-1], grads))
    (loss_p, rewards_p, stats_p, grads_p), (loss_s, rewards_s, stats_s, grads_s) = results
    torch.testing.assert_close(rewards_s, rewards_p, rtol=0, atol=1e-5)
    assert rewards_p.std() > 1e-3  # rewards differ between sequences: the comparison means something
    assert loss_s.item() == pytest.approx(loss_p.item(), abs=1e-5)
    torch.testing.assert_close(stats_s, stats_p, rtol=0, atol=1e-5)  # delta, per-pair loss, tie, kind
    assert stats_p[:, 2].any() and stats_p[:, 2].logical_not().any()  # ties and preferences in the batch
    assert set(grads_s) == set(grads_p) and (not use_lora or all("lora" in n or "score" in n for n in grads_p))
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_s[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert max(grad.abs().max() for grad in grads_p.values()) > 1e-3


@pytest.mark.slow
def test_flex_attention_block_mask_gives_the_padded_rewards(tokenizer):
    """Flex attention runs forward only on CPU (its backward needs a GPU): the `BlockMask` path is checked here,
    training with it in benchmarks/gpu_check.py."""
    model = tiny_family_model("gemma2", tokenizer).eval()
    dataset = grouped_pairs()
    sequences = [tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"] for row in dataset]
    prompt_lengths = [len(tokenizer(row["prompt"])["input_ids"]) for row in dataset]
    expected = padded_rewards(model, sequences, tokenizer.pad_token_id)
    model.set_attn_implementation("flex_attention")
    packed = pack_prefix_shared(sequences, prompt_lengths, tokenizer.pad_token_id, pad_to_multiple_of=128)
    mask = prefix_attention_mask(model, packed)
    assert type(mask["sliding_attention"]).__name__ == "BlockMask"
    with torch.no_grad():
        rewards = prefix_shared_rewards(model, packed)
    torch.testing.assert_close(rewards, expected, rtol=0, atol=1e-5)


# --- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation_checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_four_training_steps_give_the_padded_weights(tmp_path, tokenizer, activation_checkpointing):
    settings = dict(
        max_steps=4,
        per_device_train_batch_size=4,
        group_by_prompt=True,
        activation_checkpointing=activation_checkpointing,
    )
    histories, weights, evals = [], [], []
    for trainer in _trainers(tmp_path, tokenizer, "llama", "sdpa", False, **settings):
        trainer.train()
        evals.append(trainer.evaluate(grouped_pairs(3, seed=2)))  # 9 pairs, a tie among them
        histories.append([log["loss"] for log in trainer.state.log_history if "loss" in log])
        weights.append({name: p.detach().clone() for name, p in trainer.model.named_parameters()})
    assert len(histories[0]) == 4 and len(set(histories[0])) == 4
    assert histories[1] == pytest.approx(histories[0], abs=1e-4)
    initial = tiny_reward_model(tokenizer).score.weight
    assert (weights[0]["score.weight"] - initial).abs().max() > 1e-3  # training moved the weights...
    for name, value in weights[0].items():  # ...by the same amount in both paths
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-4, msg=name)
    for key in ("eval_loss", "eval_accuracy", "eval_tie_abs_margin", "eval_loss/causal"):
        assert evals[1][key] == pytest.approx(evals[0][key], abs=1e-4), key


def test_flash_attention_falls_back_to_padding_free(tmp_path, tokenizer, caplog):
    model = tiny_reward_model(tokenizer)
    model.config._attn_implementation = "flash_attention_2"  # only the collator choice is checked: no forward pass
    with caplog.at_level(logging.WARNING):
        trainer = CromeRewardTrainer(
            model,
            args=tiny_args(tmp_path, prefix_sharing=True),
            train_dataset=grouped_pairs(2),
            processing_class=tokenizer,
        )
    assert isinstance(trainer.data_collator, CromePaddingFreeDataCollator) and trainer.data_collator.one_row
    assert "with flash attention the batches are padding-free" in caplog.text


# --- chat templates ----------------------------------------------------------------------------------------------

# A template that glues the messages together: "Hello" + "world" renders "Helloworld", whose tokenization merges the
# prompt's last token with the answer's first one, unless the answer starts with a space.
GLUE_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
)


def chat_rows(answers_of_prompt: dict[str, list[str]]) -> Dataset:
    rows = []
    for prompt, answers in answers_of_prompt.items():
        for answer in answers[1:]:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": answers[0]}],
                    "rejected": [{"role": "assistant", "content": answer}],
                }
            )
    return Dataset.from_list(rows)


def test_chat_template_prompt_is_shared_as_rendered(tmp_path, tokenizer):
    """SmolLM2's own template: the shared prefix is the rendered prompt with the assistant header."""
    dataset = chat_rows({"Name a bird.": ["An owl.", "A tea.", "Seven."], "Name a river?": ["The Nile.", "No."]})
    model = tiny_reward_model(tokenizer)
    trainer = CromeRewardTrainer(
        model, args=tiny_args(tmp_path, prefix_sharing=True), train_dataset=dataset, processing_class=tokenizer
    )
    prepared = trainer.train_dataset
    prompt = [{"role": "user", "content": "Name a bird."}]
    rendered = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert prepared["prompt_length"][0] == len(rendered) and prepared["chosen_ids"][0][: len(rendered)] == rendered
    assert len(set(prepared["prompt_hash"])) == 2
    examples = [prepared[i] for i in range(len(prepared))]
    batch = trainer.data_collator(examples)
    sequences = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
    # 2 prompts + 5 distinct answers instead of 6 full sequences
    assert batch["input_ids"].ne(tokenizer.pad_token_id).sum() < sum(len(s) for s in sequences) * 0.6
    with torch.no_grad():
        rewards = prefix_shared_rewards(model.eval(), batch)
    torch.testing.assert_close(rewards, padded_rewards(model, sequences, tokenizer.pad_token_id), rtol=0, atol=1e-5)


def test_chat_template_that_merges_the_boundary_falls_back_for_that_pair_and_says_so_once(tmp_path, tokenizer, caplog):
    tokenizer.chat_template = GLUE_TEMPLATE
    # "Hello" + "world" -> "Helloworld" merges; "Hello" + " there" does not.
    dataset = chat_rows({"Hello": [" there", "world", " you", "wide"]})
    model = tiny_reward_model(tokenizer)
    with caplog.at_level(logging.WARNING):
        trainer = CromeRewardTrainer(
            model, args=tiny_args(tmp_path, prefix_sharing=True), train_dataset=dataset, processing_class=tokenizer
        )
    prepared = trainer.train_dataset
    prompt_ids = tokenizer("Hello")["input_ids"]
    assert prepared["chosen_ids"][0][: len(prompt_ids)] == prompt_ids  # " there" keeps the boundary
    assert prepared["rejected_ids"][0][: len(prompt_ids)] != prompt_ids  # "world" merges it
    assert prepared["prompt_length"] == [0, len(prompt_ids), 0]  # "world" and "wide" fall back, " you" shares
    warnings = [r for r in caplog.records if "do not start with their prompt's own tokens" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 pairs of the train dataset (first: row 0)" in warnings[0].getMessage()
    examples = [prepared[i] for i in range(len(prepared))]
    batch = trainer.data_collator(examples)
    sequences = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
    with torch.no_grad():
        rewards = prefix_shared_rewards(model.eval(), batch)
    torch.testing.assert_close(rewards, padded_rewards(model, sequences, tokenizer.pad_token_id), rtol=0, atol=1e-5)


def test_streamed_dataset_says_so_at_the_first_unshared_pair(tmp_path, tokenizer, caplog):
    tokenizer.chat_template = GLUE_TEMPLATE
    dataset = chat_rows({"Hello": [" there", " you", "world", "wide"]}).to_iterable_dataset()
    args = tiny_args(tmp_path, prefix_sharing=True, max_steps=1)
    trainer = CromeRewardTrainer(
        tiny_reward_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    with caplog.at_level(logging.WARNING):
        lengths = [row["prompt_length"] for row in trainer.train_dataset]
    assert lengths[0] > 0 and lengths[1:] == [0, 0]
    warnings = [
        r.getMessage() for r in caplog.records if "do not start with their prompt's own tokens" in r.getMessage()
    ]
    assert len(warnings) == 1 and "streamed train dataset (first: row 1)" in warnings[0]


# --- the prompt-grouped sampler ----------------------------------------------------------------------------------


def test_sampler_yields_every_pair_once_per_epoch_with_each_prompt_together():
    keys = [i % 7 for i in range(40)] + [99]  # 8 prompts, 1 to 6 pairs each, rows of a prompt not adjacent
    sampler = PromptGroupedSampler(keys, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(41)) and len(sampler) == 41
        runs = [keys[order[0]]] + [keys[b] for a, b in zip(order, order[1:]) if keys[a] != keys[b]]
        assert sorted(runs) == sorted(set(keys))  # each prompt's pairs form one run
        for key in set(keys):  # within a prompt, dataset order
            rows = [i for i in order if keys[i] == key]
            assert rows == sorted(rows)


def test_sampler_is_deterministic_for_a_seed_and_changes_with_seed_and_epoch():
    keys = [i // 3 for i in range(60)]

    def order(seed, epoch):
        sampler = PromptGroupedSampler(keys, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0) and order(5, 2) == order(5, 2)
    assert order(0, 0) != order(1, 0)
    assert order(0, 0) != order(0, 1)


def test_group_by_prompt_drives_the_trainer_batches(tmp_path, tokenizer):
    model = tiny_reward_model(tokenizer)
    args = tiny_args(tmp_path, prefix_sharing=True, group_by_prompt=True, data_seed=7)
    trainer = CromeRewardTrainer(model, args=args, train_dataset=grouped_pairs(6), processing_class=tokenizer)
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(trainer.train_dataset))
    assert isinstance(sampler, PromptGroupedSampler) and sampler.seed == 7
    hashes = trainer.train_dataset["prompt_hash"]
    order = list(sampler)
    assert sorted(order) == list(range(len(hashes)))
    assert sum(a != b for a, b in zip([hashes[i] for i in order], [hashes[i] for i in order[1:]])) == 5
    # The dataloader's batches follow the sampler: prompts are never interleaved.
    batches = list(trainer.get_train_dataloader())
    assert sum(len(b["seq_lengths"]) for b in batches) == 2 * len(hashes)


def test_pre_tokenized_rows_may_bring_their_own_prompt_columns(tmp_path, tokenizer):
    """Sharing is keyed on the actual tokens, so a given `prompt_length` can cost speed, never exactness."""
    args = tiny_args(tmp_path, prefix_sharing=True, group_by_prompt=True)
    first = CromeRewardTrainer(
        tiny_reward_model(tokenizer), args=args, train_dataset=grouped_pairs(), processing_class=tokenizer
    )
    columns = ["chosen_ids", "rejected_ids", "prompt_length", "prompt_hash", "tie"]
    pre_tokenized = first.train_dataset.select_columns(columns)
    pre_tokenized = pre_tokenized.map(
        lambda row, i: {"prompt_length": row["prompt_length"] + i % 2}, with_indices=True
    )
    model = tiny_reward_model(tokenizer)
    trainer = CromeRewardTrainer(model, args=args, train_dataset=pre_tokenized, processing_class=tokenizer)
    assert trainer.train_dataset["prompt_length"] == pre_tokenized["prompt_length"]  # used as given
    assert isinstance(
        trainer._get_train_sampler(trainer._remove_unused_columns(trainer.train_dataset)), PromptGroupedSampler
    )
    examples = [trainer.train_dataset[i] for i in range(len(pre_tokenized))]
    batch = trainer.data_collator(examples)
    sequences = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
    with torch.no_grad():
        rewards = prefix_shared_rewards(model.eval(), batch)
    torch.testing.assert_close(rewards, padded_rewards(model, sequences, tokenizer.pad_token_id), rtol=0, atol=1e-5)


def test_group_by_prompt_excludes_other_sampling_strategies(tmp_path):
    with pytest.raises(ValueError, match="cannot be combined with `train_sampling_strategy='group_by_length'`"):
        CromeRewardConfig(str(tmp_path), bf16=False, group_by_prompt=True, train_sampling_strategy="group_by_length")
