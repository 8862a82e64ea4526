"""A local Hugging Face causal LM as an oracle: batched greedy generation, JSON read from the text, price 0."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import Oracle, OracleRequest, OracleResponse, StopCheck, Usage

JSON_INSTRUCTION = "Reply with only a JSON object that follows this JSON schema:\n{schema}"


class TransformersOracle(Oracle):
    """Generates with a local causal LM, many requests per forward pass.

    Requests are sorted by length and generated `batch_size` at a time (left padding, the tokenizer's chat
    template). Temperature 0 means greedy decoding. With a `schema`, the system message asks for JSON that follows
    it, and the first JSON object of the answer that validates fills `parsed` (otherwise `"malformed"`); an answer
    that hits `max_output_tokens` is `"truncated"`. Usage counts the prompt and generated tokens; the price is 0.

    Args:
        model (`str`, `os.PathLike` or `PreTrainedModel`, *optional*):
            A folder or Hub id, or a loaded model. Defaults to SmolLM2-135M-Instruct
            (`trl_crome.models.smollm2_path()`), which works offline.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Defaults to the model's own.
        batch_size (`int`, defaults to `8`):
            Requests per `generate` call.
        max_new_tokens (`int`, *optional*):
            A cap on every request's `max_output_tokens` (keeps small local runs fast).
        device (`str` or `torch.device`, *optional*):
            Defaults to CUDA when available, else CPU.
        model_name (`str`, *optional*):
            The name used in cache keys; defaults to the model folder's name.
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        device: str | torch.device | None = None,
        model_name: str | None = None,
    ):
        if model is None:
            from ..models import smollm2_path

            model = smollm2_path()
        if isinstance(model, PreTrainedModel):
            source = model.config._name_or_path or type(model).__name__
        else:
            source = str(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        super().__init__(model=model_name or Path(source).name or source, max_concurrency=1)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.lm = model.to(self.device).eval()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def __repr__(self) -> str:
        return f"TransformersOracle(model={self.model!r}, batch_size={self.batch_size}, device={str(self.device)!r})"

    def _render(self, request: OracleRequest) -> str:
        system = request.system or ""
        if request.schema is not None:
            schema = json.dumps(request.schema.model_json_schema())
            system = "\n\n".join(filter(None, [system, JSON_INSTRUCTION.format(schema=schema)]))
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": request.prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _limit(self, request: OracleRequest) -> int:
        if self.max_new_tokens is None:
            return request.max_output_tokens
        return min(request.max_output_tokens, self.max_new_tokens)

    @torch.inference_mode()
    def _generate_batch(self, batch: Sequence[OracleRequest]) -> list[OracleResponse]:
        # The chat template already holds the special tokens: do not add them twice.
        inputs = self.tokenizer(
            [self._render(r) for r in batch], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        limits = [self._limit(r) for r in batch]
        temperature = batch[0].temperature  # batches never mix temperatures
        sampling: dict[str, Any] = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        output = self.lm.generate(
            **inputs,
            max_new_tokens=max(limits),
            pad_token_id=self.tokenizer.pad_token_id,
            **({"do_sample": False} | sampling),
        )
        generated = output[:, inputs["input_ids"].shape[1] :].tolist()
        stop_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        responses = []
        for request, tokens, limit, mask in zip(batch, generated, limits, inputs["attention_mask"]):
            ends = [i for i, token in enumerate(tokens[:limit]) if token in stop_ids]
            tokens = tokens[: ends[0]] if ends else tokens[:limit]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            usage = Usage(input_tokens=int(mask.sum()), output_tokens=len(tokens) + bool(ends), calls=1)
            if not ends:
                responses.append(OracleResponse(text=text, usage=usage, error="truncated"))
            elif request.schema is None:
                responses.append(OracleResponse(text=text, usage=usage))
            else:
                parsed = request.parse(text)
                error = None if parsed is not None else "malformed"
                responses.append(OracleResponse(text=text, parsed=parsed, usage=usage, error=error))
        return responses

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        (response,) = await asyncio.to_thread(self._generate_batch, [request])
        return response

    async def _astream(
        self, requests: Sequence[OracleRequest], should_stop: StopCheck | None = None
    ) -> AsyncIterator[tuple[int, OracleResponse]]:
        # Similar lengths together waste less padding; equal temperatures together share one `generate` call.
        order = sorted(range(len(requests)), key=lambda i: (requests[i].temperature, len(requests[i].prompt)))
        batches: list[list[int]] = []
        for index in order:
            if batches and len(batches[-1]) < self.batch_size:
                if requests[batches[-1][0]].temperature == requests[index].temperature:
                    batches[-1].append(index)
                    continue
            batches.append([index])
        for batch in batches:
            if should_stop is not None and should_stop():
                return
            # In a worker thread, so that the event loop (and a progress bar, a cache) keeps running meanwhile.
            responses = await asyncio.to_thread(self._generate_batch, [requests[i] for i in batch])
            for index, response in zip(batch, responses):
                yield index, response
