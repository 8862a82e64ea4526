"""Shared helpers for the tests: real tokenizers, tiny random models built from a config, the shared data folder."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerBase

from trl_crome.models import smollm2_path

# ../shared/data beside the project's root (never copied into the project).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """Path of a file under ../shared/data; skips the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (the shared data folder is not beside this checkout)")
    return path


@functools.cache
def _smollm2_tokenizer_dir() -> Path:
    return smollm2_path()


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """The real SmolLM2-135M-Instruct tokenizer (49k vocab, chat template), a fresh copy each call."""
    return AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir())


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase, **overrides) -> LlamaConfig:
    """A 2-layer Llama config sized for fast CPU tests, with the tokenizer's vocabulary and pad token."""
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        num_labels=1,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def tiny_reward_model(
    tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides
) -> LlamaForSequenceClassification:
    """A tiny random Llama reward model (one scalar per sequence), reproducible for a seed."""
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(tiny_llama_config(tokenizer, **overrides))
