"""A deterministic oracle for the pipeline tests, and the answer rules it shares with the local Gemini server.

The answers follow the packaged templates: a rubric prompt gets two attributes, a rewrite prompt gets its
`<response>` back with a short marker naming the attribute and the direction (so a test can tell every rewrite
apart and predict it). This stands in for an LLM, which cannot run in unit tests; the oracle interface, the cache and
the pipeline around it are the real ones.
"""

from __future__ import annotations

import json
import re

from trl_crome.oracles.base import Oracle, OracleRequest, OracleResponse, Usage

RUBRIC = [
    {"name": "Factual Accuracy", "description": "States only true facts."},
    {"name": "relevance", "description": "Answers what was asked."},
    {"name": "completeness", "description": "Covers every part of the request."},
]


def rewrite_marker(attribute: str, direction: str) -> str:
    return f" [{direction}d {attribute}]"


def scripted_answer(prompt: str) -> dict:
    """The JSON an obliging oracle returns for a prompt rendered from one of the packaged templates."""
    if '{"attributes"' in prompt:
        return {"attributes": RUBRIC}
    response = re.search(r"<response>\n(.*)\n</response>", prompt, re.DOTALL).group(1)
    attribute = re.search(r"^Attribute to (?:make worse|improve): (.+)$", prompt, re.MULTILINE).group(1)
    direction = "degrade" if "clearly WORSE" in prompt else "upgrade"
    return {"rewritten": response + rewrite_marker(attribute, direction)}


def gemini_responder(call) -> str:
    """Responder for `tests.servers.gemini.GeminiServer` (module:function usable from the command line)."""
    return json.dumps(scripted_answer(call.prompt))


class ScriptedOracle(Oracle):
    """Answers with [`scripted_answer`], except prompts containing a key of `failures`, which get that error.

    `rewrites` maps a substring of the response being rewritten to the rewritten text to return instead (to test
    validation through the whole pipeline). Every request is recorded in `requests`.
    """

    input_price_per_million = 1.0
    output_price_per_million = 2.0

    def __init__(self, failures: dict[str, str] | None = None, rewrites: dict[str, str] | None = None):
        super().__init__(model="scripted", max_concurrency=4)
        self.failures = failures or {}
        self.rewrites = rewrites or {}
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
                answer = {"rewritten": rewritten}
        text = json.dumps(answer)
        return OracleResponse(text=text, parsed=request.parse(text), usage=usage)
