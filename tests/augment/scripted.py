"""A deterministic oracle for the pipeline tests, and the answer rules it shares with the local Gemini server.

The answers follow the packaged templates, recognised by their text (a server sees only the prompt):

- lite rubric: two attributes (`RUBRIC`, three listed); paper attributes: `SCORED` (six, scores not in order);
- causal elements: five elements naming the attribute;
- rewrite (either family): the `<response>` back with a marker naming the attribute and the direction, so a test can
  tell every rewrite apart and predict it (the paper family also gets an analysis);
- verification: "Pass"; aligned and paraphrase neutrals: the response with a marker.

This stands in for an LLM, which cannot run in unit tests; the oracle interface, the cache and the pipeline around
it are the real ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage

RUBRIC = [
    {"name": "Factual Accuracy", "description": "States only true facts."},
    {"name": "relevance", "description": "Answers what was asked."},
    {"name": "completeness", "description": "Covers every part of the request."},
]
# Six scored attributes, listed out of order: kept by importance, ties in the oracle's order, cut at five.
SCORED = [
    {"name": "clarity", "description": "Easy to follow.", "importance": 0.1},
    {"name": "Factual Accuracy", "description": "States only true facts.", "importance": 0.3},
    {"name": "relevance", "description": "Answers what was asked.", "importance": 0.25},
    {"name": "completeness", "description": "Covers every part of the request.", "importance": 0.2},
    {"name": "safety", "description": "Avoids harm.", "importance": 0.1},
    {"name": "format", "description": "Well laid out.", "importance": 0.05},
]
SCORED_ORDER = ["factual_accuracy", "relevance", "completeness", "clarity", "safety"]

# Step of a prompt, by a phrase only that step's template has (see `step_of`).
STEP_MARKERS = {
    "rubrics": "Return at most",
    "attributes": '"importance"',
    "causal_elements": '{"elements"',
    "rewrites": "Attribute to ",
    "verification": '"verdict"',
    "aligned_neutrals": "<reference>",
    "paraphrase_neutrals": "Paraphrase the response below",
}


def step_of(prompt: str) -> str:
    """The pipeline step whose template rendered `prompt`."""
    steps = [step for step, marker in STEP_MARKERS.items() if marker in prompt]
    assert len(steps) == 1, (steps, prompt[:200])
    return steps[0]


def rewrite_marker(attribute: str, direction: str) -> str:
    return f" [{direction}d {attribute}]"


def _block(prompt: str, name: str) -> str:
    return re.search(rf"<{name}>\n(.*)\n</{name}>", prompt, re.DOTALL).group(1)


def scripted_answer(prompt: str) -> dict:
    """The JSON an obliging oracle returns for a prompt rendered from one of the packaged templates."""
    step = step_of(prompt)
    if step == "rubrics":
        return {"attributes": RUBRIC}
    if step == "attributes":
        return {"attributes": SCORED}
    if step == "causal_elements":
        attribute = re.search(r"^Attribute: (.+)$", prompt, re.MULTILINE).group(1)
        return {"elements": [{"element": f"element {i} of {attribute}", "direction": "increases"} for i in range(5)]}
    if step == "verification":
        return {"analysis": "It changed only the attribute.", "verdict": "Pass"}
    response = _block(prompt, "response")
    if step == "aligned_neutrals":
        return {"analysis": "Aligned.", "rewritten": response + " [aligned]"}
    if step == "paraphrase_neutrals":
        return {"rewritten": response + " [paraphrased]"}
    attribute = re.search(r"^Attribute to (?:make worse|improve): (.+)$", prompt, re.MULTILINE).group(1)
    direction = "degrade" if "WORSE" in prompt else "upgrade"
    if "significantly" in prompt:  # the paper family: analysis first
        return {"analysis": "Analysis.", "rewritten": response + rewrite_marker(attribute, direction)}
    return {"rewritten": response + rewrite_marker(attribute, direction)}


def gemini_responder(call) -> str:
    """Responder for `tests.servers.gemini.GeminiServer` (module:function usable from the command line)."""
    return json.dumps(scripted_answer(call.prompt))


class ScriptedOracle(Oracle):
    """Answers with [`scripted_answer`], except prompts containing a key of `failures`, which get that error.

    `rewrites` maps a substring of the response being rewritten to the rewritten text to return instead (to test
    validation through the whole pipeline); `answer` may return another JSON answer for a prompt (`None`: the
    scripted one). Every request is recorded in `requests`.
    """

    input_price_per_million = 1.0
    output_price_per_million = 2.0

    def __init__(
        self,
        failures: dict[str, str] | None = None,
        rewrites: dict[str, str] | None = None,
        answer: Callable[[str], dict | None] | None = None,
    ):
        super().__init__(model="scripted", max_concurrency=4)
        self.failures = failures or {}
        self.rewrites = rewrites or {}
        self.answer = answer
        self.requests: list[OracleRequest] = []

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        self.requests.append(request)
        usage = Usage(input_tokens=len(request.prompt.split()), output_tokens=10, calls=1)
        for match, error in self.failures.items():
            if match in request.prompt:
                return OracleResponse(usage=usage, error=error)
        answer = scripted_answer(request.prompt)
        for match, rewritten in self.rewrites.items():
            if "rewritten" in answer and match in request.prompt.split("<response>")[-1]:
                answer = {**answer, "rewritten": rewritten}
        if self.answer is not None and (replacement := self.answer(request.prompt)) is not None:
            answer = replacement
        text = json.dumps(answer)
        return OracleResponse(text=text, parsed=request.parse(text), usage=usage)
