"""Meaning-preserving transformations of a preference pair (reWordBench-style), seeded and deterministic.

Each [`Transform`] has a name, a family (`controlled`, `naturalistic`, `domain`), a one-line definition and the
fields it rewrites (`prompt`, or both `answers` alike). Text edits never touch digits, code, math, URLs or the final
answer: word-level edits only change plain alphabetic words (4+ letters, not an identifier of the pair's code)
outside protected regions (code blocks and code-looking lines, inline code, LaTeX, `\\boxed{}`, the final-answer
lines). A transformation that does not apply to a text (e.g. `code_minify` on prose) returns it unchanged, and
[`evaluate_robustness`] scores each transformation on the pairs it actually changed.

The two oracle transformations (`paraphrase`, `back_translation`) rewrite the prompt with an LLM through
[`~trl_crome.oracles.base.Oracle`] (cached on disk when a cache folder is given) and keep a rewrite only when it
has the same numbers as the original.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .answers import boxed_spans
from .pair_scoring import as_pair_scorer, compare_pairs
from .reports import bar_chart, json_safe, markdown_table

FAMILIES = ("controlled", "naturalistic", "domain")

# ----------------------------------------------------------------------------------------------------------------
# Protected regions: what no text edit may change.
# ----------------------------------------------------------------------------------------------------------------

_FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
_URL = re.compile(r"https?://\S+|www\.\S+")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_ANSWER_SECTION = re.compile(r"^#\s*Answer\b.*\Z", re.MULTILINE | re.DOTALL)  # the section runs to the end
_FINAL_ANSWER_LINE = re.compile(r"^####.*$|^.*\banswer is\b.*$", re.MULTILINE | re.IGNORECASE)
_CODE_LINE = re.compile(
    r"[;{}]|==|=>|->|::|\w\(|\w\[|\)\s*:|^\s*[#@]\w|^\s*(?:def|class|import|from|return|for|while|elif|else|func|fn"
    r"|let|const|var|public|private|static|int|void|package|use|try|except|catch|struct|impl|print|System)\b"
    r"|^\s{4,}\S|^\t|^>>>"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Plain words that word-level edits may change: 4+ ASCII letters, not glued to code-like characters.
_WORD = re.compile(r"(?<![\w.\\/@$#-])[A-Za-z]{4,}(?![\w(\[])")


def _line_spans(text: str) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line), line))
        start += len(line) + 1
    return spans


def looks_like_code(line: str) -> bool:
    """Whether a line reads as source code rather than prose (a heuristic that errs towards code)."""
    return bool(_CODE_LINE.search(line))


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `text` that no transformation may edit: code, math, URLs, the final answer."""
    spans = [
        m.span() for pattern in (_FENCED, _INLINE_CODE, _MATH, _URL, _LATEX_COMMAND) for m in pattern.finditer(text)
    ]
    spans += [m.span() for pattern in (_ANSWER_SECTION, _FINAL_ANSWER_LINE) for m in pattern.finditer(text)]
    spans += [(start, end) for start, end, _, _ in boxed_spans(text)]
    spans += [(start, end) for start, end, line in _line_spans(text) if looks_like_code(line)]
    return sorted(spans)


def code_identifiers(text: str) -> set[str]:
    """Identifiers in the code regions of `text` (fenced blocks, inline code, code-looking lines)."""
    regions = [m.group() for pattern in (_FENCED, _INLINE_CODE) for m in pattern.finditer(text)]
    regions += [line for _, _, line in _line_spans(text) if looks_like_code(line)]
    return {name for region in regions for name in _IDENTIFIER.findall(region)}


class _Protection:
    """Answers "may this character range be edited?" for one text."""

    def __init__(self, text: str, protected_words: frozenset[str]):
        self.mask = bytearray(len(text))
        for start, end in protected_spans(text):
            self.mask[start:end] = b"\x01" * (end - start)
        self.protected_words = protected_words

    def free(self, start: int, end: int) -> bool:
        return not any(self.mask[start:end])

    def editable_words(self, text: str) -> list[re.Match]:
        """Plain lower-case or capitalized words outside protected regions that are not identifiers of the pair."""
        return [
            m
            for m in _WORD.finditer(text)
            if self.free(m.start(), m.end())
            and m.group() not in self.protected_words
            and (m.group()[1:].islower())  # skips acronyms and camelCase
        ]


def _edit_words(
    text: str,
    rng: random.Random,
    protected_words: frozenset[str],
    edit: Callable[[str, random.Random], str],
    rate: float,
) -> str:
    """Apply `edit` to a seeded sample of about `rate` of the editable words (at least one when there is any)."""
    words = _Protection(text, protected_words).editable_words(text)
    if not words:
        return text
    chosen = sorted(rng.sample(words, max(1, round(rate * len(words)))), key=lambda m: m.start())
    pieces, last = [], 0
    for match in chosen:
        pieces += [text[last : match.start()], edit(match.group(), rng)]
        last = match.end()
    return "".join(pieces) + text[last:]


def _sub_free(text: str, pattern: re.Pattern, replace: Callable[[re.Match], str]) -> str:
    """`pattern.sub` restricted to matches outside protected regions."""
    protection = _Protection(text, frozenset())
    return pattern.sub(lambda m: replace(m) if protection.free(m.start(), m.end()) else m.group(), text)


# ----------------------------------------------------------------------------------------------------------------
# Text edits. Each is `fn(text, rng, protected_words) -> str`.
# ----------------------------------------------------------------------------------------------------------------

_DISTRACTORS = (
    "The Pacific is the largest ocean on Earth.",
    "Honey never spoils if it is stored properly.",
    "The violin belongs to the string family of instruments.",
    "Mount Everest lies on the border of Nepal and China.",
    "Octopuses have three hearts and blue blood.",
)
_QWERTY_NEIGHBOURS = {
    row[i]: row[max(0, i - 1)] + row[min(len(row) - 1, i + 1)]
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i in range(len(row))
}
_HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445", "y": "\u0443"}
_CONTRACTIONS = {
    "do not": "don't",
    "does not": "doesn't",
    "did not": "didn't",
    "is not": "isn't",
    "are not": "aren't",
    "cannot": "can't",
    "will not": "won't",
    "it is": "it's",
    "I am": "I'm",
    "you are": "you're",
    "there is": "there's",
    "that is": "that's",
    "we are": "we're",
    "they are": "they're",
}
_EXPANSIONS = {short: long for long, short in _CONTRACTIONS.items()}


def _random_letters(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(size))


def _swap(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)  # inner letters only: first and last stay, as in natural typos
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _insert(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word))
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i:]


def _delete(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1 :]


def _keyboard(word: str, rng: random.Random) -> str:
    positions = [i for i in range(1, len(word)) if word[i] in _QWERTY_NEIGHBOURS]
    i = rng.choice(positions) if positions else len(word) - 1
    return word[:i] + rng.choice(_QWERTY_NEIGHBOURS.get(word[i], word[i])) + word[i + 1 :]


def _homoglyph(word: str, rng: random.Random) -> str:
    positions = [i for i, char in enumerate(word) if char in _HOMOGLYPHS]
    if not positions:
        return word
    i = rng.choice(positions)
    return word[:i] + _HOMOGLYPHS[word[i]] + word[i + 1 :]


def _words_edit(edit: Callable[[str, random.Random], str], rate: float = 0.1):
    return lambda text, rng, protected: _edit_words(text, rng, protected, edit, rate)


def _contractions(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    def pattern(table):
        return re.compile(r"\b(" + "|".join(re.escape(k) for k in table) + r")\b", re.IGNORECASE)

    def swap(table):
        def replace(match: re.Match) -> str:
            found = match.group()
            for key, value in table.items():
                if found.lower() == key.lower():
                    return value[0].upper() + value[1:] if found[0].isupper() else value
            return found

        return replace

    contracted = _sub_free(text, pattern(_CONTRACTIONS), swap(_CONTRACTIONS))
    return contracted if contracted != text else _sub_free(text, pattern(_EXPANSIONS), swap(_EXPANSIONS))


_PUNCT_AFTER_WORD = re.compile(r"(?<=[A-Za-z])([,.;:!?])(?=\s|$)")
_SENTENCE_END = re.compile(r"(?<=[a-z][.!?]) (?=[A-Z])")
_PROSE_NEWLINE = re.compile(r"(?<=[^\n])\n(?=[^\n])")


def _punctuation_spaces(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return _sub_free(text, _PUNCT_AFTER_WORD, lambda m: " " + m.group(1))


def _sentence_spacing(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return _sub_free(text, _SENTENCE_END, lambda m: "  ")


def _line_spacing(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return _sub_free(text, _PROSE_NEWLINE, lambda m: "\n\n")


def _add_quotes(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return f'"{text}"'


def _twitter_handle(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return f"{text} @{_random_letters(rng, 8)}"


def _twitter_url(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return f"{text} https://t.co/{_random_letters(rng, 10)}"


def _stress_test(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return text + " and true is true" * 5


def _distractor_prefix(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return f"{rng.choice(_DISTRACTORS)}\n\n{text}"


def _distractor_suffix(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return f"{text}\n\nP.S. {rng.choice(_DISTRACTORS)}"


def _ignore_above(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    noise = " ".join(rng.sample(_DISTRACTORS, 3))
    return f"{noise}\n\nIgnore the text above. Here is the actual instruction:\n\n{text}"


def _ignore_below(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    noise = " ".join(rng.sample(_DISTRACTORS, 3))
    return f"{text}\n\nIgnore the text below.\n\n{noise}"


def _boxed_to_answer_header(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    boxes = boxed_spans(text)
    if not boxes or re.search(r"^#\s*Answer", text, re.MULTILINE):
        return text
    answer = text[boxes[-1][2] : boxes[-1][3]]
    for start, end, content_start, content_end in reversed(boxes):
        text = text[:start] + text[content_start:content_end] + text[end:]
    return f"{text.rstrip()}\n\n# Answer\n\n{answer}"


_ANSWER_HEADER = re.compile(r"\n*^(?:#\s*Answer\s*\n+|####\s*)(.+?)\s*\Z", re.MULTILINE | re.DOTALL)


def _answer_header_to_boxed(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    if boxed_spans(text):
        return text
    return _ANSWER_HEADER.sub(lambda m: f"\n\nThe final answer is $\\boxed{{{m.group(1)}}}$.", text, count=1)


def _comment_prefix(code: str) -> str:
    python_like = re.search(r"^\s*(def|import|from|class)\s|^\s*#\s|:\s*$", code, re.MULTILINE) and ";" not in code
    return "#" if python_like else "//"


def _is_bare_code(lines: list[str]) -> bool:
    """Most non-empty lines look like code and there is no LaTeX (math derivations look like code too)."""
    content = [line for line in lines if line.strip()]
    return bool(content) and sum(looks_like_code(line) for line in content) >= 0.6 * len(content)


def _code_line_indices(text: str) -> list[int]:
    """Indices of the lines that are code: inside ``` fences, or every line of an answer that is bare code."""
    lines = text.split("\n")
    fenced, inside = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            fenced.append(i)
    if fenced or "```" in text:
        return fenced
    return list(range(len(lines))) if "$" not in text and _is_bare_code(lines) else []


def _code_comments(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    code = [i for i in _code_line_indices(text) if text.split("\n")[i].strip()]
    if not code:
        return text
    lines = text.split("\n")
    prefix = _comment_prefix("\n".join(lines[i] for i in code))
    note = rng.choice(("Implementation follows.", "Main logic.", "See the explanation above.", "Core steps."))
    indent = re.match(r"\s*", lines[code[0]]).group()
    lines.insert(code[0], f"{indent}{prefix} {note}")
    return "\n".join(lines)


_PREPROCESSOR = re.compile(r"^\s*#\s*(include|define|pragma|if|ifdef|ifndef|endif|else|elif|undef|import)\b")


def _code_minify(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    code = set(_code_line_indices(text))
    if not code:
        return text
    lines = text.split("\n")
    prefix = _comment_prefix("\n".join(lines[i] for i in sorted(code)))

    def drop(line: str) -> bool:
        stripped = line.strip()
        if not stripped:
            return True
        return stripped.startswith(prefix) and not _PREPROCESSOR.match(line) and not stripped.startswith("#!")

    return "\n".join(
        line.rstrip() if i in code else line for i, line in enumerate(lines) if i not in code or not drop(line)
    )


def _code_fence(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    if "```" in text or "$" in text or not _is_bare_code(text.split("\n")):
        return text
    return f"```\n{text.strip(chr(10))}\n```"


_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_HEADER = re.compile(r"^#{1,6}\s+(?!Answer\b)", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)", re.MULTILINE)


def _markdown_strip(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    protection = _Protection(text, frozenset())
    text = _BOLD.sub(lambda m: m.group(1) if protection.free(m.start(), m.start() + 2) else m.group(), text)
    protection = _Protection(text, frozenset())
    text = _HEADER.sub(lambda m: "" if protection.free(m.start(), m.end()) else m.group(), text)
    protection = _Protection(text, frozenset())
    return _BULLET.sub(lambda m: m.group(1) if protection.free(m.start(), m.end()) else m.group(), text)


_FIRST_SENTENCE = re.compile(r"\A(\s*)([A-Z][^\n*`$]{3,}?[.!?:])(?=\s|\Z)")


def _markdown_add(text: str, rng: random.Random, protected: frozenset[str]) -> str:
    return _sub_free(text, _FIRST_SENTENCE, lambda m: f"{m.group(1)}**{m.group(2)}**")


# ----------------------------------------------------------------------------------------------------------------
# The registry.
# ----------------------------------------------------------------------------------------------------------------

_PARAPHRASE_PROMPT = (
    "Paraphrase the text below. Keep its meaning, every number, name, code snippet and formatting instruction "
    "exactly; change only the wording. Reply with the paraphrase only.\n\nText:\n{text}"
)
_TO_FRENCH_PROMPT = (
    "Translate the text below into French. Keep every number, name and code snippet unchanged. "
    "Reply with the translation only.\n\nText:\n{text}"
)
_TO_ENGLISH_PROMPT = (
    "Translate the text below into English. Keep every number, name and code snippet unchanged. "
    "Reply with the translation only.\n\nText:\n{text}"
)


@dataclass(frozen=True)
class Transform:
    """A meaning-preserving rewrite of a preference pair.

    Args:
        name (`str`): registry key.
        family (`str`): `"controlled"`, `"naturalistic"` or `"domain"`.
        definition (`str`): what it does, in one line.
        fields (`tuple[str, ...]`): `("prompt",)` or `("chosen", "rejected")` (both answers alike).
        edit (callable, *optional*): `edit(text, rng, protected_words) -> str` for local transformations.
        oracle_prompts (`tuple[str, ...]`): for LLM transformations, the prompt templates applied in sequence.
    """

    name: str
    family: str
    definition: str
    fields: tuple[str, ...]
    edit: Callable[[str, random.Random, frozenset[str]], str] | None = field(default=None, repr=False)
    oracle_prompts: tuple[str, ...] = ()

    @property
    def needs_oracle(self) -> bool:
        return bool(self.oracle_prompts)


_ANSWERS = ("chosen", "rejected")
_PROMPT = ("prompt",)

TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("add_quotes", "controlled", "Wrap the prompt in double quotes.", _PROMPT, _add_quotes),
        Transform(
            "punctuation_spaces",
            "controlled",
            "Put a space before each punctuation mark that ends a word in the answers' prose.",
            _ANSWERS,
            _punctuation_spaces,
        ),
        Transform(
            "sentence_spacing",
            "controlled",
            "Use two spaces between sentences in the answers' prose.",
            _ANSWERS,
            _sentence_spacing,
        ),
        Transform(
            "line_spacing",
            "controlled",
            "Turn each single line break in the answers' prose into a blank line.",
            _ANSWERS,
            _line_spacing,
        ),
        Transform("twitter_handle", "controlled", "Append a random @handle to the prompt.", _PROMPT, _twitter_handle),
        Transform("twitter_url", "controlled", "Append a random t.co URL to the prompt.", _PROMPT, _twitter_url),
        Transform(
            "stress_test", "controlled", 'Append " and true is true" five times to the prompt.', _PROMPT, _stress_test
        ),
        Transform(
            "distractor_prefix",
            "controlled",
            "Put an irrelevant true sentence before the prompt.",
            _PROMPT,
            _distractor_prefix,
        ),
        Transform(
            "distractor_suffix",
            "controlled",
            'Append the same irrelevant "P.S." sentence to both answers.',
            _ANSWERS,
            _distractor_suffix,
        ),
        Transform(
            "ignore_above",
            "controlled",
            'Put irrelevant text before the prompt, then "Ignore the text above" and the prompt.',
            _PROMPT,
            _ignore_above,
        ),
        Transform(
            "ignore_below",
            "controlled",
            'Follow the prompt with "Ignore the text below" and irrelevant text.',
            _PROMPT,
            _ignore_below,
        ),
        Transform(
            "char_swap",
            "naturalistic",
            "Swap two adjacent inner letters in about 10% of the answers' plain words.",
            _ANSWERS,
            _words_edit(_swap),
        ),
        Transform(
            "char_insert",
            "naturalistic",
            "Insert a random letter into about 10% of the answers' plain words.",
            _ANSWERS,
            _words_edit(_insert),
        ),
        Transform(
            "char_delete",
            "naturalistic",
            "Delete an inner letter from about 10% of the answers' plain words.",
            _ANSWERS,
            _words_edit(_delete),
        ),
        Transform(
            "keyboard_typo",
            "naturalistic",
            "Replace a letter by a QWERTY neighbour in about 10% of the answers' plain words.",
            _ANSWERS,
            _words_edit(_keyboard),
        ),
        Transform(
            "homoglyph",
            "naturalistic",
            "Replace one letter by a look-alike Cyrillic letter in about 20% of the answers' plain words.",
            _ANSWERS,
            _words_edit(_homoglyph, rate=0.2),
        ),
        Transform(
            "contractions",
            "naturalistic",
            "Contract phrases in the answers' prose (do not -> don't); expand contractions when there are none.",
            _ANSWERS,
            _contractions,
        ),
        Transform(
            "paraphrase",
            "naturalistic",
            "Paraphrase the prompt with the oracle LLM (kept only when its numbers are unchanged).",
            _PROMPT,
            oracle_prompts=(_PARAPHRASE_PROMPT,),
        ),
        Transform(
            "back_translation",
            "naturalistic",
            "Translate the prompt to French and back to English with the oracle LLM (numbers must survive).",
            _PROMPT,
            oracle_prompts=(_TO_FRENCH_PROMPT, _TO_ENGLISH_PROMPT),
        ),
        Transform(
            "boxed_to_answer_header",
            "domain",
            'Math: replace "\\boxed{X}" by X and end the answers with a "# Answer\\n\\nX" section.',
            _ANSWERS,
            _boxed_to_answer_header,
        ),
        Transform(
            "answer_header_to_boxed",
            "domain",
            'Math: replace a final "# Answer X" or "#### X" by "The final answer is $\\boxed{X}$."',
            _ANSWERS,
            _answer_header_to_boxed,
        ),
        Transform(
            "code_comments",
            "domain",
            "Code: insert a neutral comment line before the answers' first line of code.",
            _ANSWERS,
            _code_comments,
        ),
        Transform(
            "code_minify",
            "domain",
            "Code: drop whole-line comments and blank lines from the answers (identifiers and indentation kept).",
            _ANSWERS,
            _code_minify,
        ),
        Transform(
            "code_fence", "domain", "Code: wrap an answer that is bare code in a ``` fence.", _ANSWERS, _code_fence
        ),
        Transform(
            "markdown_strip",
            "domain",
            "Remove bold markers, headers and bullet markers from the answers' prose.",
            _ANSWERS,
            _markdown_strip,
        ),
        Transform(
            "markdown_add",
            "domain",
            "Make the first sentence of each answer bold.",
            _ANSWERS,
            _markdown_add,
        ),
    )
}


def list_transforms(include_oracle: bool = True) -> list[Transform]:
    """The registered transformations, in registry order."""
    return [t for t in TRANSFORMS.values() if include_oracle or not t.needs_oracle]


def _stable_seed(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def apply_transform(transform: Transform | str, pair: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Apply a local transformation to one pair (a dict with `prompt`, `chosen`, `rejected`; other keys are kept).

    The random choices depend only on `seed`, the transformation and the pair's text, so the result is the same in
    every run and every process. Both answers get the same seed for choices they must share (e.g. the appended
    distractor sentence) and independent seeds for typos.
    """
    transform = TRANSFORMS[transform] if isinstance(transform, str) else transform
    if transform.needs_oracle:
        raise ValueError(f"transformation '{transform.name}' needs an oracle: use apply_oracle_transform")
    protected = frozenset().union(*(code_identifiers(pair[name]) for name in ("prompt", "chosen", "rejected")))
    pair_key = _stable_seed(seed, transform.name, pair["prompt"], pair["chosen"], pair["rejected"])
    out = dict(pair)
    for name in transform.fields:
        # Typos differ between the two answers; sentence choices (seeded by the pair alone) are shared.
        text_key = pair_key if transform.name == "distractor_suffix" else _stable_seed(pair_key, name)
        out[name] = transform.edit(pair[name], random.Random(text_key), protected)
    return out


def apply_oracle_transform(
    transform: Transform | str,
    pairs: Sequence[dict[str, Any]],
    oracle: Any,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Apply an LLM transformation (`paraphrase`, `back_translation`) to the prompts of `pairs` through `oracle`.

    Requests go out in one [`~trl_crome.oracles.base.Oracle.generate`] call per step at temperature 0, through
    `CachedOracle(oracle, cache_dir)` when `cache_dir` is set (re-runs cost nothing). A rewrite is kept only when the
    oracle succeeded, returned non-empty text and the numbers (digit runs) are the same as in the original;
    otherwise the pair is returned unchanged.
    """
    from trl_crome.oracles.base import OracleRequest

    transform = TRANSFORMS[transform] if isinstance(transform, str) else transform
    if not transform.needs_oracle:
        raise ValueError(f"transformation '{transform.name}' is local: use apply_transform")
    if cache_dir is not None:
        from trl_crome.oracles.cache import CachedOracle

        oracle = CachedOracle(oracle, cache_dir)
    originals = [pair["prompt"] for pair in pairs]
    texts: list[str | None] = list(originals)
    for step, template in enumerate(transform.oracle_prompts):
        todo = [i for i, text in enumerate(texts) if text is not None]
        requests = [
            OracleRequest(
                prompt=template.format(text=texts[i]),
                template=f"eval-{transform.name}-{step}@1",
                max_output_tokens=2048,
                temperature=0.0,
            )
            for i in todo
        ]
        for i, response in zip(todo, oracle.generate(requests)):
            texts[i] = response.text.strip() if response.ok and response.text and response.text.strip() else None
    out = []
    for pair, original, text in zip(pairs, originals, texts):
        keep = text is not None and re.findall(r"\d+", text) == re.findall(r"\d+", original)
        out.append({**pair, "prompt": text} if keep else dict(pair))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Robustness evaluation.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RobustnessResult:
    """Accuracy of a model on original and transformed pairs.

    `per_transform[name]` has `family`, `changed` (pairs the transformation changed), `accuracy` on the transformed
    versions of those pairs, `original_accuracy` on the same pairs untransformed, and `drop`
    (`original_accuracy - accuracy`; positive means the transformation hurt).
    """

    original_accuracy: float
    num_pairs: int
    per_transform: dict[str, dict[str, Any]]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_accuracy": self.original_accuracy,
            "num_pairs": self.num_pairs,
            "seed": self.seed,
            "per_transform": self.per_transform,
        }

    def to_markdown(self) -> str:
        rows = [
            [
                name,
                info["family"],
                str(info["changed"]),
                f"{100 * info['original_accuracy']:.2f}" if info["changed"] else "n/a",
                f"{100 * info['accuracy']:.2f}" if info["changed"] else "n/a",
                f"{100 * info['drop']:+.2f}" if info["changed"] else "n/a",
            ]
            for name, info in self.per_transform.items()
        ]
        return (
            f"## Robustness ({self.num_pairs} pairs, original accuracy {100 * self.original_accuracy:.2f}%)\n\n"
            + markdown_table(
                ["Transformation", "Family", "Changed pairs", "Original (%)", "Transformed (%)", "Drop (points)"],
                rows,
            )
        )

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write `robustness.json`, `robustness.md` and `robustness_drop.png`."""
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "robustness.json").write_text(json.dumps(json_safe(self.to_dict()), indent=2) + "\n")
        (output / "robustness.md").write_text(self.to_markdown())
        names = [name for name, info in self.per_transform.items() if info["changed"]]
        drops = [100 * self.per_transform[name]["drop"] for name in names]
        bar_chart(names, drops, output / "robustness_drop.png", title="Accuracy drop", ylabel="Points")
        return output


def evaluate_robustness(
    scorer_or_model: Any,
    pairs: Sequence[dict[str, Any]],
    transforms: Sequence[str | Transform] | None = None,
    seed: int = 0,
    oracle: Any = None,
    cache_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    **scorer_kwargs: Any,
) -> RobustnessResult:
    """Accuracy on each transformation of `pairs` and its drop from the untransformed accuracy.

    A pair is correct when the chosen answer wins strictly (ties are wrong). Each transformation is scored on the
    pairs it changed, against the original accuracy of those same pairs, so a transformation that applies to few
    pairs (e.g. `code_minify`) is not diluted by pairs it left alone.

    Args:
        scorer_or_model:
            Anything [`evaluate_rewardbench`] accepts (a [`RewardScorer`], a preference model, a path, a model).
        pairs (`list[dict]`):
            Rows with `prompt`, `chosen`, `rejected` (e.g. RewardBench rows).
        transforms (`list[str | Transform]`, *optional*):
            Names or objects; defaults to every local transformation (plus the oracle ones when `oracle` is given).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the random edits.
        oracle ([`~trl_crome.oracles.base.Oracle`], *optional*):
            Needed for `paraphrase` and `back_translation`.
        cache_dir (`str` or `os.PathLike`, *optional*):
            On-disk cache of the oracle's answers.
        output_dir (`str` or `os.PathLike`, *optional*):
            When set, the JSON, markdown and PNG reports are written there.
        **scorer_kwargs:
            Passed to [`RewardScorer`] when the model is wrapped.
    """
    for index, pair in enumerate(pairs):
        for name in ("prompt", "chosen", "rejected"):
            if not isinstance(pair.get(name), str):
                raise ValueError(f"pair {index}: field '{name}' must be a string")
    if transforms is None:
        transforms = list_transforms(include_oracle=oracle is not None)
    transforms = [TRANSFORMS[t] if isinstance(t, str) else t for t in transforms]
    for transform in transforms:
        if transform.needs_oracle and oracle is None:
            raise ValueError(f"transformation '{transform.name}' needs an oracle (pass oracle=...)")
    scorer = as_pair_scorer(scorer_or_model, **scorer_kwargs)

    def correct(rows: Sequence[dict[str, Any]]) -> list[bool]:
        if not rows:
            return []
        margins = compare_pairs(
            scorer, [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]
        )["margin"]
        return [m > 0 for m in margins]

    original = correct(pairs)
    per_transform = {}
    for transform in tqdm(transforms, desc="Transformations", unit="transform"):
        if transform.needs_oracle:
            transformed = apply_oracle_transform(transform, pairs, oracle, cache_dir)
        else:
            transformed = [apply_transform(transform, pair, seed) for pair in pairs]
        changed = [
            i for i, (a, b) in enumerate(zip(pairs, transformed)) if any(a[f] != b[f] for f in transform.fields)
        ]
        flags = correct([transformed[i] for i in changed])
        accuracy = sum(flags) / len(flags) if flags else float("nan")
        before = sum(original[i] for i in changed) / len(changed) if changed else float("nan")
        per_transform[transform.name] = {
            "family": transform.family,
            "changed": len(changed),
            "original_accuracy": before,
            "accuracy": accuracy,
            "drop": before - accuracy,
        }
    result = RobustnessResult(
        original_accuracy=sum(original) / len(original) if original else float("nan"),
        num_pairs=len(pairs),
        per_transform=per_transform,
        seed=seed,
    )
    if output_dir is not None:
        result.save(output_dir)
    return result
