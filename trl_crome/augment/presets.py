"""The augmenter's presets: `"paper"` (the pipeline of the Crome paper's appendix, the default) and `"lite"` (the
cheaper pipeline this package shipped first). A preset only fills the fields a configuration leaves at `None`; any
field set explicitly (in Python, on the command line or in a recipe's YAML) wins.

- attributes: per example, from the prompt and both answers, 5 with importance scores, ordered by importance
  (paper); per unique prompt, from the prompt alone, 2 (lite).
- causal elements: 5 per attribute, shown to the rewrite and the verification (paper); none (lite).
- rewrites: every attribute x (degrade the chosen answer, upgrade the rejected one), the oracle's analysis before
  its new response (paper); 2 attributes x 2, JSON with the new response only (lite).
- verification: one Pass/Fail oracle call per rewrite, Fails dropped (paper); none (lite).
- checks: the sanity checks only, i.e. empty, identical, truncated, runaway length (paper); plus a length gate
  (0.5-2.0x) and a markdown format gate (lite).
- IQN neutrals: about 1x the original data, one per row drawn from its original and causal pairs (paper); one per
  original and one per causal pair (lite).

The lite preset also keeps its own templates (`rubrics@1`, `degrade@1`, `upgrade@1`), so caches of earlier runs keep
working; it cannot use causal elements (its rewrite templates have no place for them).
"""

from __future__ import annotations

PAPER, LITE = "paper", "lite"

PRESETS: dict[str, dict[str, object]] = {
    PAPER: {
        "max_attributes": 5,
        "attributes_per_example": 5,
        "rubric_max_output_tokens": 1024,
        "causal_elements": True,
        "rewrite_max_output_tokens": 4096,
        "verify_rewrites": True,
        "check_length": False,
        "check_format": False,
        "neutrals_per_original": 0,
        "neutrals_per_causal": 0,
        "neutrals_per_row": 1.0,
    },
    LITE: {
        "max_attributes": 2,
        "attributes_per_example": 2,
        "rubric_max_output_tokens": 512,
        "causal_elements": False,
        "rewrite_max_output_tokens": 2048,
        "verify_rewrites": False,
        "check_length": True,
        "check_format": True,
        "neutrals_per_original": 1,
        "neutrals_per_causal": 1,
        "neutrals_per_row": 0.0,
    },
}


def apply_preset(config: object, preset: str) -> None:
    """Set every field of `config` that is still `None` to the value `preset` gives it."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    for name, value in PRESETS[preset].items():
        if getattr(config, name) is None:
            setattr(config, name, value)
