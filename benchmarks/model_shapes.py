"""The architecture numbers of the models the recipes train (from their config.json on the Hub), so that benchmarks
build them with random weights and download nothing."""

from __future__ import annotations

from typing import Any

from transformers import Gemma2Config, PretrainedConfig, Qwen2Config

_GEMMA2 = dict(
    vocab_size=256000,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    max_position_embeddings=8192,
    hidden_activation="gelu_pytorch_tanh",
)

# Name -> (config class, keyword arguments) of google/gemma-2-9b-it, Qwen/Qwen2.5-7B-Instruct, google/gemma-2-2b-it.
MODEL_SHAPES: dict[str, tuple[type[PretrainedConfig], dict[str, Any]]] = {
    "gemma-2-9b": (
        Gemma2Config,
        dict(
            _GEMMA2,
            hidden_size=3584,
            intermediate_size=14336,
            num_hidden_layers=42,
            num_attention_heads=16,
            num_key_value_heads=8,
        ),
    ),  # fmt: skip
    "qwen2.5-7b": (
        Qwen2Config,
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
    ),
    "gemma-2-2b": (
        Gemma2Config,
        dict(
            _GEMMA2,
            hidden_size=2304,
            intermediate_size=9216,
            num_hidden_layers=26,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
    ),  # fmt: skip
}


def model_config(name: str) -> PretrainedConfig:
    """A fresh config of the named architecture."""
    config_class, kwargs = MODEL_SHAPES[name]
    return config_class(**kwargs)
