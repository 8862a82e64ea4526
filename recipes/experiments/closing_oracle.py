"""A programmatic oracle for the closing-sentence task, behind the same [`~trl_crome.oracles.base.Oracle`] interface
as the LLM oracles, so that the real [`~trl_crome.CromeAugmenter`] pipeline runs unchanged on top of it.

It answers the augmenter's real requests of both presets by reading the rendered templates: an attribute request
(lite `rubrics@1`, paper `attributes@1`) gets the one causal attribute of the task (importance 1); a causal-elements
request gets the two elements of that attribute (the requested closing sentence raises it, any other closing lowers
it); a degrade request replaces the requested closing sentence by another one; an upgrade request replaces the
answer's last sentence by the requested one; a verification passes exactly when the rewrite moved the requirement in
the intended direction and everything before its last sentence is unchanged. It edits only the answer's last
sentence and knows nothing of the planted opener (it never imports, reads or writes it): the tests check on every
produced pair that the opener is exactly where it was.
"""

from __future__ import annotations

import json
import re

from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage

from .closing_task import other_closing, required_closing, satisfies, split_last_sentence

ATTRIBUTE = {
    "name": "instruction_following",
    "description": "The response ends with the exact sentence the prompt asks it to end with.",
}
_BLOCK = {
    name: re.compile(rf"<{name}>\n(.*)\n</{name}>", re.DOTALL)
    for name in ("prompt", "response", "original", "rewrite")
}
REWRITES = {"degrade", "upgrade", "counterfactual_degrade", "counterfactual_upgrade"}


def _block(text: str, name: str) -> str | None:
    match = _BLOCK[name].search(text)
    return match.group(1) if match else None


class ClosingSentenceOracle(Oracle):
    """Answers the attribute, causal-elements, rewrite and verification requests of the closing-sentence task by code
    (no model, no tokens).

    Per-request failures come back as [`OracleResponse.error`]: `"no_requirement"` for a prompt that asks for no
    closing sentence, `"unsupported_template"` for any other request, `"malformed"` when a block is missing.
    """

    def __init__(self, max_concurrency: int = 8):
        super().__init__(model="programmatic-closing-sentence", max_concurrency=max_concurrency)

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        kind = request.template.split("@")[0]
        prompt = _block(request.prompt, "prompt")
        if prompt is None:
            return OracleResponse(error="malformed", usage=Usage(calls=1))
        closing = required_closing(prompt)
        if closing is None:
            return OracleResponse(error="no_requirement", usage=Usage(calls=1))
        if kind == "rubrics":
            return self._answer({"attributes": [ATTRIBUTE]})
        if kind == "attributes":
            return self._answer({"attributes": [{**ATTRIBUTE, "importance": 1.0}]})
        if kind == "causal_elements":
            elements = [
                {"element": f'The last sentence is exactly "{closing}".', "direction": "increases"},
                {"element": "The last sentence is any other sentence.", "direction": "decreases"},
            ]
            return self._answer({"elements": elements})
        if kind == "verify":
            return self._verify(request.prompt, prompt)
        if kind not in REWRITES:
            return OracleResponse(error="unsupported_template", usage=Usage(calls=1))
        response = _block(request.prompt, "response")
        if response is None:
            return OracleResponse(error="malformed", usage=Usage(calls=1))
        head, last = split_last_sentence(response)
        if kind.endswith("degrade"):
            # An answer that already misses the requirement cannot get worse on it: returned as is, the augmenter's
            # checks reject it as "identical".
            new_last = other_closing(closing, prompt + response) if last == closing else last
        else:
            new_last = closing
        answer = {"rewritten": head + new_last}
        if kind.startswith("counterfactual"):
            answer = {
                "analysis": f"Only the last sentence decides {ATTRIBUTE['name']}; it is the one changed."
            } | answer
        return self._answer(answer)

    def _verify(self, text: str, prompt: str) -> OracleResponse:
        original, rewrite = _block(text, "original"), _block(text, "rewrite")
        if original is None or rewrite is None:
            return OracleResponse(error="malformed", usage=Usage(calls=1))
        worse = "significantly worse on this attribute" in text
        moved = satisfies(prompt, original) and not satisfies(prompt, rewrite)
        if not worse:
            moved = satisfies(prompt, rewrite) and not satisfies(prompt, original)
        unchanged = split_last_sentence(original)[0] == split_last_sentence(rewrite)[0]
        verdict = "Pass" if moved and unchanged else "Fail"
        return self._answer(
            {"analysis": f"Requirement moved: {moved}; rest unchanged: {unchanged}.", "verdict": verdict}
        )

    @staticmethod
    def _answer(payload: dict) -> OracleResponse:
        return OracleResponse(text=json.dumps(payload), parsed=payload, usage=Usage(calls=1))
