"""LLM backends behind one small interface ([`Oracle`]), an on-disk cache that makes runs resumable, and a factory.

The backends import their client libraries (google-genai, httpx, transformers) only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import (
    Oracle,
    OracleFatalError,
    OracleRequest,
    OracleResponse,
    OracleStats,
    RetryPolicy,
    Usage,
    is_transient_error,
)
from .cache import CachedOracle, OracleCache

_BACKENDS = {
    "GeminiOracle": "trl_crome.oracles.gemini",
    "OpenAICompatibleOracle": "trl_crome.oracles.openai_compat",
    "TransformersOracle": "trl_crome.oracles.local",
}

# `make_oracle` names -> backend classes.
ORACLE_NAMES = {"gemini": "GeminiOracle", "openai": "OpenAICompatibleOracle", "transformers": "TransformersOracle"}

__all__ = [
    "CachedOracle",
    "GeminiOracle",
    "OpenAICompatibleOracle",
    "Oracle",
    "OracleCache",
    "OracleFatalError",
    "OracleRequest",
    "OracleResponse",
    "OracleStats",
    "RetryPolicy",
    "Usage",
    "is_transient_error",
    "TransformersOracle",
    "make_oracle",
]

if TYPE_CHECKING:
    from .gemini import GeminiOracle
    from .local import TransformersOracle
    from .openai_compat import OpenAICompatibleOracle


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module 'trl_crome.oracles' has no attribute {name!r}")


def make_oracle(name: str, model: str | None = None, cache_dir: str | None = None, **kwargs: Any) -> Oracle:
    """Builds a backend by its short name, for the command line.

    Args:
        name (`str`):
            `"gemini"`, `"openai"` (any OpenAI-compatible server) or `"transformers"` (a local model).
        model (`str` or `None`):
            The model name or path; `None` keeps the backend's default.
        cache_dir (`str` or `None`):
            When set, the oracle is wrapped in a [`CachedOracle`] on this folder.
        **kwargs:
            Passed to the backend's constructor (e.g. `base_url`, `max_concurrency`, `batch`).
    """
    if name not in ORACLE_NAMES:
        raise ValueError(f"Unknown oracle {name!r}; choose one of {sorted(ORACLE_NAMES)}")
    if model is not None:
        kwargs["model"] = model
    oracle = __getattr__(ORACLE_NAMES[name])(**kwargs)
    return CachedOracle(oracle, cache_dir) if cache_dir is not None else oracle
