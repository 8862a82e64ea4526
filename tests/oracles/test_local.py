"""TransformersOracle: batched local generation with the real SmolLM2 tokenizer (tiny model) and the real SmolLM2."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from transformers import LlamaForCausalLM

from tests.helpers import tiny_llama_config
from trl_crome.oracles import OracleRequest, TransformersOracle


class Answer(BaseModel):
    answer: str


def tiny_oracle(tokenizer, **kwargs) -> TransformersOracle:
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, num_labels=2))
    return TransformersOracle(model, tokenizer=tokenizer, model_name="tiny-llama", device="cpu", **kwargs)


def test_requests_are_generated_in_batches_and_match_one_by_one(tokenizer):
    oracle = tiny_oracle(tokenizer, batch_size=3)
    batch_sizes = []
    generate = oracle.lm.generate

    def recording_generate(**kwargs):  # a spy: the real generate runs
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    oracle.lm.generate = recording_generate
    prompts = ["Hi", "What is the capital of France?", "Count to three", "A much longer prompt " * 5, "x"]
    requests = [OracleRequest(prompt=p, max_output_tokens=6) for p in prompts]
    batched = oracle.generate(requests, progress=False)
    assert batch_sizes == [3, 2]

    single = tiny_oracle(tokenizer, batch_size=1).generate(requests, progress=False)
    # Left padding and the attention mask make a row's greedy answer independent of its batch mates.
    assert [r.text for r in batched] == [r.text for r in single]
    for prompt, response in zip(prompts, batched):
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        prompt_tokens = len(tokenizer(chat, add_special_tokens=False)["input_ids"])
        assert response.usage.input_tokens == prompt_tokens
        assert response.usage.calls == 1 and 1 <= response.usage.output_tokens <= 6
        # A random model rarely stops by itself: such an answer is reported as truncated, never silently cut.
        assert response.error in (None, "truncated")
    assert oracle.cost(oracle.stats.usage) == 0.0


def test_schema_answers_are_parsed_or_malformed(tokenizer):
    oracle = tiny_oracle(tokenizer, max_new_tokens=4)
    (response,) = oracle.generate([OracleRequest(prompt="Say hi", schema=Answer)], progress=False)
    assert response.error in ("malformed", "truncated") and response.parsed is None
    assert OracleRequest(prompt="", schema=Answer).parse('Sure: {"answer": "hi"} done') == {"answer": "hi"}


@pytest.mark.slow
def test_real_smollm2_answers_a_few_requests():
    oracle = TransformersOracle(batch_size=3, max_new_tokens=48, device="cpu")
    assert oracle.model == "SmolLM2-135M-Instruct"
    requests = [
        OracleRequest(prompt="What is 2 + 2? Answer with one number.", max_output_tokens=16),
        OracleRequest(prompt="Name a colour.", schema=Answer, max_output_tokens=48),
        OracleRequest(prompt="Say hello.", system="You are terse.", max_output_tokens=16),
    ]
    responses = oracle.generate(requests, progress=False)
    assert "4" in responses[0].text
    assert responses[1].parsed is not None or responses[1].error in ("malformed", "truncated")
    assert all(r.text for r in responses)
    assert all(r.usage.calls == 1 and r.usage.input_tokens > 10 and r.usage.output_tokens > 0 for r in responses)
    assert oracle.summary()["calls"] == 3
