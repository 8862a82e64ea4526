"""PairPM input format, shared by the trainer and by inference: the versioned input templates, (prompt, answer A,
answer B) to token ids with answer-preserving truncation, left-padded batches, and the preference logit of the labels.

A PairPM is a causal LM that reads one user turn holding the prompt and two answers in a fixed template, and answers
with the label token "A" or "B". P(A better than B) is the softmax of the two label logits, renormalised over the two:
`sigmoid(logit("A") - logit("B"))`. The trainer (`trl_crome.trainer`) and the scorer (`trl_crome.evaluation`) both
build their inputs here, so a model is always scored in exactly the format it was trained in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, Any]]
TextOrMessages = str | Messages


@dataclass(frozen=True)
class PairPMTemplate:
    """A versioned PairPM input template. Never edit a released template: add a new version instead, because a model
    only works with the exact template it was trained on.

    Args:
        version (`str`):
            Name saved with the model (`pairpm.json`), e.g. `"pairpm@2"`.
        instruction (`str`):
            The user turn, with the placeholders `{prompt}`, `{answer_a}` and `{answer_b}`. A space right before a
            placeholder is tokenized with the text that fills it, as in the whole string.
        labels (`tuple[str, str]`):
            The answer that means "A is better" and the one that means "B is better"; each must be one token.
        plain_suffix (`str`):
            Appended to the user turn when no chat template is used; the labels then follow after a space.
    """

    version: str
    instruction: str
    labels: tuple[str, str] = ("A", "B")
    plain_suffix: str = "\n\nBetter answer:"


# The first template (the default before pairpm@2): an instruction that names the qualities to judge and tells the
# model to disregard length, formatting and style. Kept so that models trained with it are scored with it.
PAIRPM_TEMPLATE_V1 = PairPMTemplate(
    version="pairpm@1",
    instruction=(
        "Compare two answers to the same prompt and decide which one is better. Judge only what makes an answer good "
        "for this prompt: correctness, relevance, helpfulness, completeness and safety. Do not let length, formatting "
        "or style decide unless the prompt asks for them.\n\n"
        "[Prompt]\n{prompt}\n\n"
        "[Answer A]\n{answer_a}\n\n"
        "[Answer B]\n{answer_b}\n\n"
        "Which answer is better? Reply with one letter: A or B."
    ),
)
# The default: RRM's neutral pairwise format (arXiv 2409.13156), which the Crome paper's PairPM follows. The model sees
# only the question and the two answers; no instruction adds a prior about what makes an answer better.
PAIRPM_TEMPLATE_V2 = PairPMTemplate(
    version="pairpm@2",
    instruction="[CONTEXT] {prompt} [RESPONSE A] {answer_a} [RESPONSE B] {answer_b}",
    plain_suffix=" [BETTER RESPONSE]",
)
PAIRPM_TEMPLATES: dict[str, PairPMTemplate] = {
    template.version: template for template in (PAIRPM_TEMPLATE_V1, PAIRPM_TEMPLATE_V2)
}
DEFAULT_TEMPLATE_VERSION = PAIRPM_TEMPLATE_V2.version
# File saved beside a trained PairPM so that inference rebuilds the same format.
PAIRPM_CONFIG_NAME = "pairpm.json"

_SLOTS = ("prompt", "answer_a", "answer_b")
_SENTINELS = {slot: f"\x00PAIRPM_{slot.upper()}\x00" for slot in _SLOTS}


def get_template(template: str | PairPMTemplate) -> PairPMTemplate:
    if isinstance(template, PairPMTemplate):
        return template
    if template not in PAIRPM_TEMPLATES:
        raise ValueError(f"unknown PairPM template {template!r}; known versions: {sorted(PAIRPM_TEMPLATES)}")
    return PAIRPM_TEMPLATES[template]


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "\n".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text")
    return str(content)


def render_text(value: TextOrMessages) -> str:
    """A prompt or an answer as the plain text placed in the template (surrounding whitespace stripped).

    A string is used as it is; a single message gives its content; several messages (a multi-turn prompt) give one
    `"Role: content"` paragraph per message.
    """
    if isinstance(value, str):
        return value.strip()
    if len(value) == 1:
        return _content_text(value[0]["content"]).strip()
    return "\n\n".join(f"{m['role'].capitalize()}: {_content_text(m['content']).strip()}" for m in value)


@dataclass
class PairPMEncoding:
    """Token ids of one pair in both orders: `ids_ab` shows answer A first, `ids_ba` shows answer B in slot A.

    Both orders hold the same (possibly truncated) tokens, so they differ only by the swap.
    """

    ids_ab: list[int]
    ids_ba: list[int]
    truncated: bool


def truncation_lengths(prompt: int, answer_a: int, answer_b: int, budget: int) -> tuple[int, int, int]:
    """How many tokens of the prompt and of each answer fit in `budget` tokens.

    The prompt is cut first (its start is dropped), but keeps at least a quarter of the budget (or all of it when
    shorter). If the answers still do not fit they share the rest evenly: the shorter one is kept whole when it fits
    in half, the longer one gets what remains (their ends are dropped).
    """
    if prompt + answer_a + answer_b <= budget:
        return prompt, answer_a, answer_b
    keep_prompt = min(prompt, max(budget - answer_a - answer_b, budget // 4))
    answers = budget - keep_prompt
    keep_a = min(answer_a, max(answers // 2, answers - answer_b))
    keep_b = min(answer_b, answers - keep_a)
    return keep_prompt, keep_a, keep_b


class PairPMFormatter:
    """Turns (prompt, answer A, answer B) into PairPM token ids.

    The filled template goes into one user turn of the tokenizer's chat template, followed by the generation prompt;
    the model's next token is the label. The fixed parts of the text are tokenized once; the prompt and the answers
    are tokenized separately (each with the space that precedes it in the template, as the whole text would be) and
    placed between them, so truncation never cuts the template and the model always sees both answers and the
    question.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The model's tokenizer.
        template (`str` or [`PairPMTemplate`], *optional*, defaults to `"pairpm@2"`):
            The template or its version ([`PAIRPM_TEMPLATES`]).
        max_length (`int`, *optional*):
            Longest input; longer pairs are truncated with [`truncation_lengths`] (never dropped). `None` keeps all.
        use_chat_template (`bool`, *optional*):
            Whether to wrap the filled template in the chat template; `None` does so when the tokenizer has one.
            Without it the input is the filled template followed by `template.plain_suffix`, and the labels follow
            after a space.

    Raises:
        `ValueError`: when a label is not exactly one token after the template, or `max_length` leaves no room
        for the prompt and the answers.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: str | PairPMTemplate = DEFAULT_TEMPLATE_VERSION,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
    ):
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.max_length = max_length
        self.use_chat_template = bool(tokenizer.chat_template) if use_chat_template is None else use_chat_template

        user_turn = self.template.instruction.format(**_SENTINELS)
        if self.use_chat_template:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": user_turn}], tokenize=False, add_generation_prompt=True
            )
            leading: list[int] = []
            label_texts = self.template.labels
        else:
            text = user_turn + self.template.plain_suffix
            leading = self._leading_special_ids()
            label_texts = tuple(" " + label for label in self.template.labels)
        segments = []
        for slot in _SLOTS:
            before, sentinel, text = text.partition(_SENTINELS[slot])
            if not sentinel:
                raise ValueError(f"the chat template of {type(tokenizer).__name__} altered the PairPM template")
            segments.append(before)
        segments.append(text)
        # A space before a slot goes with the slot's text, which a tokenizer merges into its first word (" What").
        self.slot_prefixes = ["" for _ in _SLOTS]
        for index in range(len(_SLOTS)):
            if segments[index].endswith(" "):
                segments[index], self.slot_prefixes[index] = segments[index][:-1], " "
        self.segment_ids = [self._tokenize(segment) for segment in segments]
        self.segment_ids[0] = leading + self.segment_ids[0]
        self.label_ids: tuple[int, int] = tuple(self._label_id(segments[-1], label) for label in label_texts)
        self.fixed_length = sum(len(ids) for ids in self.segment_ids)
        if max_length is not None and max_length - self.fixed_length < 16:
            raise ValueError(
                f"max_length={max_length} leaves {max_length - self.fixed_length} tokens for the prompt and both "
                f"answers (the PairPM template alone takes {self.fixed_length}); raise max_length"
            )

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _leading_special_ids(self) -> list[int]:
        """The ids (e.g. BOS) that the tokenizer puts before a text on its own."""
        with_special = self.tokenizer("a")["input_ids"]
        plain = self._tokenize("a")
        start = len(with_special) - len(plain)
        return with_special[:start] if with_special[start:] == plain else []

    def _label_id(self, suffix: str, label: str) -> int:
        # Tokenize the label in context: some tokenizers give a different id to a letter after a space or a newline.
        without, with_label = self._tokenize(suffix), self._tokenize(suffix + label)
        if with_label[: len(without)] != without or len(with_label) != len(without) + 1:
            raise ValueError(f"the PairPM label {label!r} is not a single token for {type(self.tokenizer).__name__}")
        return with_label[-1]

    def encode(
        self,
        prompts: Sequence[TextOrMessages],
        answers_a: Sequence[TextOrMessages],
        answers_b: Sequence[TextOrMessages],
    ) -> list[PairPMEncoding]:
        """Token ids of each (prompt, answer A, answer B) in both orders, truncated to `max_length`."""
        if not len(prompts) == len(answers_a) == len(answers_b):
            raise ValueError(f"got {len(prompts)} prompts, {len(answers_a)} answers A and {len(answers_b)} answers B")
        texts = [
            prefix + render_text(value)
            for prefix, values in zip(self.slot_prefixes, (prompts, answers_a, answers_b))
            for value in values
        ]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        n = len(prompts)
        s0, s1, s2, s3 = self.segment_ids
        encodings = []
        for prompt, a, b in zip(ids[:n], ids[n : 2 * n], ids[2 * n :]):
            truncated = False
            if self.max_length is not None:
                keep_p, keep_a, keep_b = truncation_lengths(
                    len(prompt), len(a), len(b), self.max_length - self.fixed_length
                )
                truncated = (keep_p, keep_a, keep_b) != (len(prompt), len(a), len(b))
                prompt, a, b = prompt[len(prompt) - keep_p :], a[:keep_a], b[:keep_b]
            encodings.append(
                PairPMEncoding(
                    ids_ab=s0 + prompt + s1 + a + s2 + b + s3,
                    ids_ba=s0 + prompt + s1 + b + s2 + a + s3,
                    truncated=truncated,
                )
            )
        return encodings


def pad_left(
    sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask` and `position_ids` (counting from 0 at each sequence's first token).

    Left padding puts every label position at the last column, so the model only computes the logits of one
    position per row (`logits_to_keep=1`); explicit position ids keep each row's result independent of its padding.
    """
    length = max(len(ids) for ids in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    position_ids = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        start = length - len(ids)
        input_ids[row, start:] = torch.as_tensor(list(ids), dtype=torch.long)
        attention_mask[row, start:] = 1
        position_ids[row, start:] = torch.arange(len(ids))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def preference_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], label_ids: tuple[int, int]
) -> torch.Tensor:
    """`logit("A") - logit("B")` at the last position of each left-padded row, in float32.

    `sigmoid` of it is P(the answer in slot A is better), the two label probabilities renormalised over the pair.
    """
    outputs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
        logits_to_keep=1,
    )
    logits = outputs.logits[:, -1, :]
    return (logits[:, label_ids[0]] - logits[:, label_ids[1]]).float()
