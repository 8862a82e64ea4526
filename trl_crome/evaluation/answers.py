"""Final answers of math solutions: `\\boxed{...}`, a `# Answer` section, GSM8K's `#### N`, "the answer is N"."""

from __future__ import annotations

import re

_HASH_ANSWER = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_SECTION = re.compile(r"^#\s*Answer\s*\n+(.+?)\s*$", re.MULTILINE | re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is:?\s*\$?([^\s$]+?)\$?\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)


def boxed_spans(text: str) -> list[tuple[int, int, int, int]]:
    """`(start, end, content_start, content_end)` of every `\\boxed{...}` (braces balanced)."""
    spans = []
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth, position = 1, match.end()
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            spans.append((match.start(), position, match.end(), position - 1))
    return spans


def normalize_answer(answer: str) -> str:
    """Compare answers up to spacing, thousands separators, `$` signs, a trailing period and integral decimals."""
    answer = answer.strip().strip("$").strip().rstrip(".").replace(",", "").replace(" ", "")
    try:
        number = float(answer)
    except ValueError:
        return answer
    return str(int(number)) if number.is_integer() else answer  # "18.00" and "18" are the same answer


def extract_final_answer(text: str, last_number_fallback: bool = False) -> str | None:
    """The final answer of a math solution, normalized with [`normalize_answer`]; `None` when there is none.

    Looks, in order, for the last `\\boxed{...}`, a `# Answer` section (MATH / PRM800K style), GSM8K's `#### N`, and
    a last "the answer is N"; with `last_number_fallback`, then for the last number in the text (the usual reading
    of free-form model samples).
    """
    boxes = boxed_spans(text)
    if boxes:
        _, _, start, end = boxes[-1]
        return normalize_answer(text[start:end])
    for pattern in (_ANSWER_SECTION, _HASH_ANSWER, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches:
            return normalize_answer(matches[-1])
    if last_number_fallback:
        numbers = _NUMBER.findall(text)
        return normalize_answer(numbers[-1]) if numbers else None
    return None
