"""PairPM: input format, loss, training, symmetrised scoring, LoRA, gradient accumulation, multi-process, RewardBench.

Models are tiny random Llama causal LMs built from a config, with the real SmolLM2 tokenizer and chat template.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import LlamaForCausalLM

from tests.helpers import shared_data, smollm2_tokenizer, tiny_llama_config
from trl_crome.data import CromeDataError
from trl_crome.evaluation.pairpm import PairPMScorer, round_robin_scores, select_best_of_n
from trl_crome.evaluation.rewardbench import evaluate_rewardbench, load_rewardbench
from trl_crome.pairpm import (
    DEFAULT_TEMPLATE_VERSION,
    PAIRPM_TEMPLATE_V1,
    PAIRPM_TEMPLATE_V2,
    PairPMFormatter,
    truncation_lengths,
)
from trl_crome.trainer.pairpm_config import CromePairPMConfig
from trl_crome.trainer.pairpm_trainer import CromePairPMTrainer

GOOD = ["correct", "true", "right", "accurate", "valid", "exact"]
BAD = ["wrong", "false", "incorrect", "mistaken", "invalid", "bogus"]
NEUTRAL = ["maybe", "perhaps", "unclear", "possibly", "unsure", "somewhat"]


def tiny_causal_lm(tokenizer, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **overrides))


def pairpm_args(output_dir, **overrides) -> CromePairPMConfig:
    """Fast, deterministic CPU settings (fp32, no checkpointing, no reporting, no saving)."""
    kwargs = dict(
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return CromePairPMConfig(str(output_dir), **kwargs)


def synthetic_pairs(num_preferences: int, num_ties: int, seed: int = 0) -> Dataset:
    """A learnable task: the chosen answer is made of "good" words, the rejected one of "bad" words; ties pair two
    answers of "neutral" words (the right P is then 0.5)."""
    rng = random.Random(seed)

    def answer(words):
        return " ".join(rng.choice(words) for _ in range(3))

    rows = [
        {"prompt": "Which statement is right?", "chosen": answer(GOOD), "rejected": answer(BAD), "tie": False}
        for _ in range(num_preferences)
    ]
    rows += [
        {"prompt": "Which statement is right?", "chosen": answer(NEUTRAL), "rejected": answer(NEUTRAL), "tie": True}
        for _ in range(num_ties)
    ]
    rng.shuffle(rows)
    return Dataset.from_list(rows)


def collect_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry or "accuracy" in entry]


# ----------------------------------------------------------------------------------------------------------------
# Input format


def chat_ids(tokenizer, user_turn: str) -> list[int]:
    """The tokenizer's own ids of one user turn in its chat template, with the generation prompt: the whole text
    tokenized at once, without the formatter's segmenting."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_turn}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_default_template_is_rrm_neutral_format_in_chat_with_single_token_labels(tokenizer):
    formatter = PairPMFormatter(tokenizer)
    assert formatter.template is PAIRPM_TEMPLATE_V2 and DEFAULT_TEMPLATE_VERSION == "pairpm@2"
    encoding = formatter.encode(["What is 2+2?"], [[{"role": "assistant", "content": "4"}]], ["Five."])[0]
    # RRM's format, nothing else in the user turn: no instruction about what makes an answer better.
    assert encoding.ids_ab == chat_ids(tokenizer, "[CONTEXT] What is 2+2? [RESPONSE A] 4 [RESPONSE B] Five.")
    assert encoding.ids_ba == chat_ids(tokenizer, "[CONTEXT] What is 2+2? [RESPONSE A] Five. [RESPONSE B] 4")
    assert tokenizer.decode(encoding.ids_ab).endswith("<|im_start|>assistant\n")  # the label is the next token
    assert formatter.label_ids == (tokenizer.convert_tokens_to_ids("A"), tokenizer.convert_tokens_to_ids("B"))
    assert not encoding.truncated


@pytest.mark.parametrize("template", [PAIRPM_TEMPLATE_V1, PAIRPM_TEMPLATE_V2], ids=lambda t: t.version)
def test_segmented_encoding_equals_the_whole_text_tokenized(tokenizer, template):
    """Tokenizing the fixed parts once and the texts apart gives the ids of the whole filled turn, for every
    template (pairpm@1's ids are those its models were trained on)."""
    formatter = PairPMFormatter(tokenizer, template)
    prompts = ["Name a colour.", "Why is the sky blue?  ", "x"]
    answers_a = ["Blue.", "Rayleigh scattering: short wavelengths scatter more.", "(a) yes"]
    answers_b = ["Seven.", "It reflects the sea.\n\n- really", "  no"]
    for encoding, prompt, a, b in zip(formatter.encode(prompts, answers_a, answers_b), prompts, answers_a, answers_b):
        filled = template.instruction.format(prompt=prompt.strip(), answer_a=a.strip(), answer_b=b.strip())
        assert encoding.ids_ab == chat_ids(tokenizer, filled)


def test_plain_format_and_multi_turn_prompt(tokenizer):
    formatter = PairPMFormatter(tokenizer, use_chat_template=False)
    prompt = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    text = tokenizer.decode(formatter.encode([prompt], ["Blue."], ["Seven."])[0].ids_ab)
    assert (
        text
        == "[CONTEXT] User: Hi\n\nAssistant: Hello!\n\nUser: Name a colour. [RESPONSE A] Blue. [RESPONSE B] "
        + ("Seven. [BETTER RESPONSE]")
    )
    # After the suffix, the labels are the space-prefixed letters.
    assert formatter.label_ids == tuple(tokenizer.encode(label, add_special_tokens=False)[0] for label in (" A", " B"))
    old = PairPMFormatter(tokenizer, "pairpm@1", use_chat_template=False)
    old_text = tokenizer.decode(old.encode([prompt], ["Blue."], ["Seven."])[0].ids_ab)
    assert "[Prompt]\nUser: Hi\n\nAssistant: Hello!\n\nUser: Name a colour.\n\n[Answer A]\nBlue." in old_text
    assert old_text.endswith("\n\nBetter answer:")


@pytest.mark.parametrize(
    ("lengths", "budget", "expected"),
    [
        ((10, 5, 5), 60, (10, 5, 5)),  # fits
        ((100, 10, 10), 60, (40, 10, 10)),  # the prompt alone is cut
        ((100, 100, 10), 60, (15, 35, 10)),  # prompt down to a quarter, the short answer kept whole
        ((5, 100, 100), 60, (5, 27, 28)),  # answers share the rest evenly
    ],
)
def test_truncation_lengths(lengths, budget, expected):
    assert truncation_lengths(*lengths, budget) == expected


def test_truncation_keeps_prompt_end_and_answer_starts(tokenizer):
    formatter = PairPMFormatter(tokenizer, max_length=formatter_budget(tokenizer) + 60)
    prompt = "START " + "filler " * 200 + "QUESTION END"
    answer_a = "ALPHA " + "aaa " * 200
    answer_b = "BETA " + "bbb " * 200
    encoding = formatter.encode([prompt], [answer_a], [answer_b])[0]
    assert encoding.truncated
    assert len(encoding.ids_ab) == len(encoding.ids_ba) == formatter.max_length
    text = tokenizer.decode(encoding.ids_ab)
    assert "QUESTION END" in text and "START" not in text
    assert "ALPHA" in text and "BETA" in text
    assert text.count("[RESPONSE A]") == text.count("[RESPONSE B]") == 1  # the template is never cut
    with pytest.raises(ValueError, match="max_length"):
        PairPMFormatter(tokenizer, max_length=formatter_budget(tokenizer))


def formatter_budget(tokenizer) -> int:
    return PairPMFormatter(tokenizer).fixed_length


# ----------------------------------------------------------------------------------------------------------------
# Loss


def hand_delta(model, ids: list[int], label_ids) -> torch.Tensor:
    """logit("A") - logit("B") of one unpadded sequence, computed without the package's batching."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return logits[label_ids[0]] - logits[label_ids[1]]


@pytest.mark.parametrize("both_orders", [True, False])
def test_loss_equals_formula_on_a_fixed_batch(tmp_path, tokenizer, both_orders):
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome, I think.", "tie": False},
        {"prompt": "2+2?", "chosen": "4", "rejected": "22", "tie": False},
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hello there!", "tie": True},
    ]
    weight = 0.5
    args = pairpm_args(tmp_path, tie_loss_weight=weight, both_orders=both_orders)
    trainer = CromePairPMTrainer(
        tiny_causal_lm(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    model, labels = trainer.model.eval(), trainer.formatter.label_ids
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)

    expected, p_chosen = [], []
    for index, row in enumerate(rows):
        encoding = trainer.formatter.encode([row["prompt"]], [row["chosen"]], [row["rejected"]])[0]
        d_chosen_first = hand_delta(model, encoding.ids_ab, labels)  # chosen is A: target "A"
        d_chosen_second = -hand_delta(model, encoding.ids_ba, labels)  # chosen is B: target "B"
        if both_orders:
            deltas = [d_chosen_first, d_chosen_second]
        else:  # even rows show the chosen answer first
            deltas = [d_chosen_first if index % 2 == 0 else d_chosen_second]
        if row["tie"]:
            terms = [weight * -(F.logsigmoid(d) + F.logsigmoid(-d)) / 2 for d in deltas]
        else:
            terms = [-F.logsigmoid(d) for d in deltas]
        expected.append(sum(terms) / len(terms))
        p_chosen.append(sum(torch.sigmoid(d) for d in deltas) / len(deltas))
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs["p_chosen"], torch.stack(p_chosen), rtol=1e-5, atol=1e-6)
    assert batch["input_ids"].shape[0] == (6 if both_orders else 3)


# ----------------------------------------------------------------------------------------------------------------
# Training and symmetrised scoring (one trained model shared by these tests; training it takes > 20 s on 2 cores)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = smollm2_tokenizer()
    # A larger initial scale than the default 0.02 makes the from-scratch model learn the task in fewer steps.
    model = tiny_causal_lm(tokenizer, initializer_range=0.1)
    held_out = synthetic_pairs(24, 0, seed=1)
    before = PairPMScorer(model, tokenizer, batch_size=16, show_progress=False)
    raw_before = before.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"], both_orders=False)
    sym_before = before.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"])
    args = pairpm_args(
        tmp_path_factory.mktemp("pairpm"), per_device_train_batch_size=8, max_steps=60, learning_rate=3e-3
    )
    trainer = CromePairPMTrainer(model, args=args, train_dataset=synthetic_pairs(48, 24), processing_class=tokenizer)
    trainer.train()
    return {
        "trainer": trainer,
        "tokenizer": tokenizer,
        "held_out": held_out,
        "raw_before": raw_before,
        "sym_before": sym_before,
        "logs": collect_logs(trainer),
    }


@pytest.mark.slow
def test_training_drives_accuracy_up_and_ties_to_one_half(trained):
    logs = trained["logs"]
    start, end = logs[:10], logs[-10:]

    def mean(entries, key):
        return sum(e[key] for e in entries if key in e) / sum(key in e for e in entries)

    assert mean(end, "accuracy") >= 0.95
    assert mean(end, "loss/original") < 0.85 * mean(start, "loss/original")
    assert all(entry["count/original"] + entry.get("count/neutral", 0) == 8 for entry in logs)

    tokenizer, trainer = trained["tokenizer"], trained["trainer"]
    scorer = PairPMScorer(trainer.model, tokenizer, show_progress=False)
    held_out = trained["held_out"]
    p = scorer.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"])
    accuracy_before = sum(value > 0.5 for value in trained["sym_before"]) / len(p)
    accuracy_after = sum(value > 0.5 for value in p) / len(p)
    assert accuracy_after >= 0.9 and accuracy_after > accuracy_before
    # Ties: P stays near 0.5 while preference pairs move away from it.
    ties = synthetic_pairs(0, 12, seed=2)
    p_ties = scorer.prefer(ties["prompt"], ties["chosen"], ties["rejected"])
    tie_deviation = sum(abs(value - 0.5) for value in p_ties) / len(p_ties)
    preference_deviation = sum(abs(value - 0.5) for value in p) / len(p)
    assert tie_deviation < 0.25 * preference_deviation


@pytest.mark.slow
def test_swapping_answers_gives_one_minus_p(trained):
    tokenizer, trainer, held_out = trained["tokenizer"], trained["trainer"], trained["held_out"]
    scorer = PairPMScorer(trainer.model, tokenizer, batch_size=5, show_progress=False)
    p_ab = scorer.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"])
    p_ba = scorer.prefer(held_out["prompt"], held_out["rejected"], held_out["chosen"])
    for forward, backward in zip(p_ab, p_ba):
        assert forward + backward == pytest.approx(1.0, abs=1e-6)

    # The raw single-order P carries the position bias; training in both orders shrinks it relative to the signal.
    def relative_bias(raw, sym):
        bias = sum(abs(r - s) for r, s in zip(raw, sym))
        signal = sum(abs(s - 0.5) for s in sym)
        return bias / signal

    raw_after = scorer.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"], both_orders=False)
    before = relative_bias(trained["raw_before"], trained["sym_before"])
    after = relative_bias(raw_after, p_ab)
    assert after < 0.25 < before


def test_scores_do_not_depend_on_batching(tokenizer):
    model = tiny_causal_lm(tokenizer, initializer_range=0.1)
    held_out = synthetic_pairs(6, 0, seed=1)
    prompts = [p + " Think" * i for i, p in enumerate(held_out["prompt"])]  # different lengths: padding
    batched = PairPMScorer(model, tokenizer, batch_size=6, show_progress=False)
    single = PairPMScorer(model, tokenizer, batch_size=1, show_progress=False)
    together = batched.prefer(prompts, held_out["chosen"], held_out["rejected"])
    alone = single.prefer(prompts, held_out["chosen"], held_out["rejected"])
    assert together == pytest.approx(alone, abs=1e-5)
    assert max(abs(p - 0.5) for p in together) > 1e-3  # the check is not vacuous
    assert single.stats.batches == 12 and batched.stats.batches == 2


@pytest.mark.slow
def test_best_of_n_tournaments(trained):
    tokenizer, trainer = trained["tokenizer"], trained["trainer"]
    scorer = PairPMScorer(trainer.model, tokenizer, show_progress=False)
    candidates = [
        "wrong false bogus",
        "mistaken invalid wrong",
        "correct true exact",
        "incorrect false wrong",
        "bogus invalid false",
    ]
    assert select_best_of_n(scorer, "Which statement is right?", candidates) == 2
    assert select_best_of_n(scorer, "Which statement is right?", candidates, method="round_robin") == 2
    scores = round_robin_scores(scorer, "Which statement is right?", candidates)
    assert sum(scores) == pytest.approx(10.0, abs=1e-5)  # 5 * 4 / 2 matches, one point each


class _LengthPreference:
    """A transitive preference with known answers (longer wins), to check the tournament logic alone."""

    def __init__(self):
        self.calls = 0

    def prefer(self, prompts, answers_a, answers_b):
        self.calls += 1
        return [1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5 for a, b in zip(answers_a, answers_b)]


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_knockout_finds_the_best_in_log_rounds(n):
    candidates = [("x" * ((7 * i) % n + 1)) for i in range(n)]
    preference = _LengthPreference()
    assert select_best_of_n(preference, "p", candidates) == max(range(n), key=lambda i: len(candidates[i]))
    assert preference.calls == (n - 1).bit_length()
    assert select_best_of_n(_LengthPreference(), "p", candidates, method="round_robin") == candidates.index(
        max(candidates, key=len)
    )
    with pytest.raises(ValueError, match="method"):
        select_best_of_n(preference, "p", candidates, method="swiss")


def test_rewardbench_through_the_evaluation_module(tokenizer):
    rows = load_rewardbench(shared_data("rewardbench/filtered.jsonl"))
    model = tiny_causal_lm(tokenizer, initializer_range=0.1)
    scorer = PairPMScorer(model, tokenizer, batch_size=16, max_length=384, show_progress=False)
    result = evaluate_rewardbench(scorer, rows, per_subset=1)
    assert result.num_pairs == len(result.subset_accuracy) == 23
    assert scorer.stats.truncated > 0 and scorer.stats.sequences == 2 * 23
    for pair in result.pairs:
        assert 0.0 <= pair["p_chosen"] <= 1.0
        assert pair["margin"] == pytest.approx(pair["p_chosen"] - 0.5)
        assert result.subset_accuracy[pair["subset"]] == float(pair["p_chosen"] > 0.5)


# ----------------------------------------------------------------------------------------------------------------
# Data handling


def test_invalid_rows_name_the_row_and_field(tmp_path, tokenizer):
    rows = [{**row, "kind": "original"} for row in synthetic_pairs(3, 0).to_list()]
    rows[1]["kind"] = ""
    with pytest.raises(CromeDataError, match=r"row 1, field 'kind'"):
        CromePairPMTrainer(
            tiny_causal_lm(tokenizer),
            args=pairpm_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    tokenized = Dataset.from_list([{"chosen_ids": [1, 2], "rejected_ids": [3]}])
    with pytest.raises(CromeDataError, match="pre-tokenized"):
        CromePairPMTrainer(
            tiny_causal_lm(tokenizer), args=pairpm_args(tmp_path), train_dataset=tokenized, processing_class=tokenizer
        )


def test_conversational_implicit_prompt_kinds_and_truncation_metrics(tmp_path, tokenizer):
    def conversation(answer):
        return [{"role": "user", "content": "Name a fruit. " * 40}, {"role": "assistant", "content": answer}]

    rows = [
        {"chosen": conversation("An apple."), "rejected": conversation("A car."), "kind": "causal"},
        {"chosen": conversation("A pear."), "rejected": conversation("A plum."), "kind": "neutral", "tie": True},
    ] * 2
    for row in rows:
        row.setdefault("tie", False)
    args = pairpm_args(tmp_path, max_length=formatter_budget(tokenizer) + 40, max_steps=1)
    trainer = CromePairPMTrainer(
        tiny_causal_lm(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    assert trainer.train_kind_counts == {"causal": 2, "neutral": 2}
    text = tokenizer.decode(trainer.train_dataset[0]["ids_chosen_first"])
    assert "[RESPONSE A] An apple. [RESPONSE B] A car." in text
    trainer.train()
    logs = collect_logs(trainer)[0]
    assert logs["truncated_pairs"] == 4
    assert logs["count/causal"] == 2 and logs["count/neutral"] == 2
    assert {"loss/causal", "loss/neutral", "accuracy", "tie_p_deviation", "position_bias"} <= set(logs)

    trainer.model_card_sections["Evaluation"] = "| section | accuracy |\n|---|---|\n| Chat | 50.0 |"
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "## Crome training" in card and "lambda = 1.0" in card and "| neutral | 2 |" in card
    assert card.index("### Evaluation") < card.index("## Citations") and "| Chat | 50.0 |" in card


def test_rejects_sequence_classification_models_and_wrong_peft_task(tmp_path, tokenizer):
    from peft import LoraConfig
    from transformers import LlamaForSequenceClassification

    data = synthetic_pairs(2, 0)
    with pytest.raises(ValueError, match="causal LM"):
        CromePairPMTrainer(
            LlamaForSequenceClassification(tiny_llama_config(tokenizer)),
            args=pairpm_args(tmp_path),
            train_dataset=data,
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="CAUSAL_LM"):
        CromePairPMTrainer(
            tiny_causal_lm(tokenizer),
            args=pairpm_args(tmp_path),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=LoraConfig(task_type="SEQ_CLS"),
        )


# ----------------------------------------------------------------------------------------------------------------
# Gradient accumulation, LoRA, several processes


def train_parameters(tmp_path, tokenizer, **overrides) -> dict[str, torch.Tensor]:
    # Plain SGD: Adam's first step is about sign(grad), which would hide a wrongly scaled gradient.
    args = pairpm_args(tmp_path, max_steps=1, optim="sgd", learning_rate=0.5, **overrides)
    trainer = CromePairPMTrainer(
        tiny_causal_lm(tokenizer), args=args, train_dataset=synthetic_pairs(6, 2), processing_class=tokenizer
    )
    trainer.train()
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def test_gradient_accumulation_2x4_equals_1x8(tmp_path, tokenizer):
    one_by_eight = train_parameters(tmp_path / "a", tokenizer, per_device_train_batch_size=8)
    two_by_four = train_parameters(
        tmp_path / "b", tokenizer, per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    initial = dict(tiny_causal_lm(tokenizer).named_parameters())
    assert any(not torch.equal(one_by_eight[name], initial[name]) for name in initial)
    for name, value in one_by_eight.items():
        torch.testing.assert_close(two_by_four[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_lora_trains_saves_and_reloads(tmp_path, tokenizer):
    from peft import LoraConfig

    base_dir = tmp_path / "base"
    tiny_causal_lm(tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    args = pairpm_args(tmp_path / "out", max_steps=4, learning_rate=1e-2)
    trainer = CromePairPMTrainer(
        str(base_dir), args=args, train_dataset=synthetic_pairs(12, 4), peft_config=peft_config
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    lora_after = {n: p.detach() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before and all(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before)
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if "lora" not in n)

    trainer.save_model(str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "pairpm.json").read_text())
    assert saved["template_version"] == "pairpm@2" and saved["use_chat_template"] is True
    assert (tmp_path / "out" / "adapter_config.json").exists()

    held_out = synthetic_pairs(6, 2, seed=3)
    in_memory = PairPMScorer(trainer.model, trainer.processing_class, show_progress=False)
    reloaded = PairPMScorer(tmp_path / "out", device="cpu", show_progress=False)
    expected = in_memory.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"])
    actual = reloaded.prefer(held_out["prompt"], held_out["chosen"], held_out["rejected"])
    assert actual == pytest.approx(expected, abs=1e-5)
    assert reloaded.formatter.max_length == args.max_length


# ----------------------------------------------------------------------------------------------------------------
# The input template saved with the model


@pytest.mark.parametrize(
    ("template_version", "use_chat_template"), [(None, True), ("pairpm@1", False)], ids=["default", "pairpm@1-plain"]
)
def test_saved_model_is_scored_in_its_trained_format_token_for_token(
    tmp_path, tokenizer, template_version, use_chat_template
):
    """The default (RRM's format) and the old template each round-trip through save and load: the scorer of the saved
    folder rebuilds exactly the token ids the model was trained on, and gives the in-memory model's preferences."""
    overrides = {} if template_version is None else {"template_version": template_version}
    args = pairpm_args(tmp_path / "out", max_steps=1, max_length=160, use_chat_template=use_chat_template, **overrides)
    train = synthetic_pairs(3, 1)
    trainer = CromePairPMTrainer(tiny_causal_lm(tokenizer), args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    expected_version = template_version or "pairpm@2"
    saved = json.loads((tmp_path / "out" / "pairpm.json").read_text())
    assert saved["template_version"] == expected_version
    assert saved["use_chat_template"] is use_chat_template and saved["max_length"] == 160

    reloaded = PairPMScorer(tmp_path / "out", device="cpu", show_progress=False)
    assert reloaded.formatter.template.version == expected_version
    assert (reloaded.formatter.use_chat_template, reloaded.formatter.max_length) == (use_chat_template, 160)
    assert reloaded.formatter.label_ids == trainer.formatter.label_ids
    encodings = reloaded.formatter.encode(train["prompt"], train["chosen"], train["rejected"])
    assert [e.ids_ab for e in encodings] == trainer.train_dataset["ids_chosen_first"]
    assert [e.ids_ba for e in encodings] == trainer.train_dataset["ids_rejected_first"]
    in_memory = PairPMScorer(
        trainer.model, tokenizer, template=expected_version, use_chat_template=use_chat_template, show_progress=False
    )
    p = reloaded.prefer(train["prompt"], train["chosen"], train["rejected"])
    assert p == pytest.approx(in_memory.prefer(train["prompt"], train["chosen"], train["rejected"]), abs=1e-6)


def test_folder_saved_with_the_old_template_keeps_it(tmp_path, tokenizer, caplog):
    """A folder as trl-crome wrote it before pairpm@2 was the default (its pairpm.json verbatim): it is scored with
    pairpm@1's instruction, token for token, with no warning."""
    folder = tmp_path / "old"
    tiny_causal_lm(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    old_entry = {"template_version": "pairpm@1", "use_chat_template": True, "max_length": 2048}
    old_entry |= {"tie_loss_weight": 1.0, "both_orders": True}
    (folder / "pairpm.json").write_text(json.dumps(old_entry, indent=2) + "\n")
    with caplog.at_level("WARNING", logger="trl_crome.evaluation.pairpm"):
        scorer = PairPMScorer(folder, device="cpu", show_progress=False)
    assert scorer.formatter.template is PAIRPM_TEMPLATE_V1 and not caplog.records
    encoding = scorer.formatter.encode(["What is 2+2?"], ["4"], ["Five."])[0]
    instruction = PAIRPM_TEMPLATE_V1.instruction.format(prompt="What is 2+2?", answer_a="4", answer_b="Five.")
    assert encoding.ids_ab == chat_ids(tokenizer, instruction)
    assert "Do not let length, formatting or style decide" in tokenizer.decode(encoding.ids_ab)


def test_folder_without_a_template_entry_gets_the_default_with_a_warning(tmp_path, tokenizer, caplog):
    folder = tmp_path / "base"
    tiny_causal_lm(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # No pairpm.json at all (an untrained model, or a PairPM trained elsewhere).
    with caplog.at_level("WARNING", logger="trl_crome.evaluation.pairpm"):
        scorer = PairPMScorer(folder, device="cpu", show_progress=False)
    assert scorer.formatter.template is PAIRPM_TEMPLATE_V2
    assert "no PairPM template entry" in caplog.text and "'pairpm@2'" in caplog.text
    # A pairpm.json without the entry: its other settings still apply.
    (folder / "pairpm.json").write_text(json.dumps({"max_length": 200, "use_chat_template": False}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="trl_crome.evaluation.pairpm"):
        scorer = PairPMScorer(folder, device="cpu", show_progress=False)
    assert scorer.formatter.template is PAIRPM_TEMPLATE_V2 and "no PairPM template entry" in caplog.text
    assert (scorer.formatter.max_length, scorer.formatter.use_chat_template) == (200, False)
    # An explicit template wins over the saved one, with a warning that they differ.
    (folder / "pairpm.json").write_text(json.dumps({"template_version": "pairpm@2"}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="trl_crome.evaluation.pairpm"):
        scorer = PairPMScorer(folder, template="pairpm@1", device="cpu", show_progress=False)
    assert scorer.formatter.template is PAIRPM_TEMPLATE_V1
    assert "'pairpm@1' a model trained with 'pairpm@2'" in caplog.text


def test_unknown_template_version_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown `template_version` 'pairpm@9'.*pairpm@1.*pairpm@2"):
        pairpm_args(tmp_path, template_version="pairpm@9")
