"""Versioned prompt templates shipped as package files in `trl_crome/augment/prompts/`.

A template named `"degrade@1"` lives in `prompts/degrade@1.txt` and uses `$placeholders` (`string.Template`), so
answers full of braces or JSON need no escaping. The name, version included, is sent as `OracleRequest.template`:
editing a template means adding `degrade@2.txt`, and cached answers of the old version are never reused for it.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class PromptTemplate:
    """A named, versioned prompt template.

    Args:
        name (`str`):
            Template name with its version, e.g. `"degrade@1"`.
        text (`str`):
            The template text with `$placeholders`.
    """

    name: str
    text: str

    def render(self, **values: object) -> str:
        """Fill every placeholder; a missing value raises `KeyError` naming it."""
        return string.Template(self.text).substitute({key: str(value) for key, value in values.items()})


@functools.cache
def load_template(name: str) -> PromptTemplate:
    """Load the packaged template `name` (e.g. `"rubrics@1"`)."""
    if "@" not in name:
        raise ValueError(f"Template name {name!r} must carry its version, e.g. 'degrade@1'.")
    path = resources.files("trl_crome.augment") / "prompts" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"No prompt template {name!r} (looked for {path}).")
    return PromptTemplate(name=name, text=path.read_text(encoding="utf-8"))
