"""The reward model of the experiment: the real SmolLM2-135M-Instruct, frozen, with a trained reward head.

A `LlamaForSequenceClassification` reward is `score(h_last)`, a linear map of the final hidden state at the last
token. Here the backbone is frozen and only that `score` head is trained (a LoRA of rank 0, in effect), which lets
every training set, seed and ablation reuse one forward pass per sequence: the hidden states are computed once,
cached on disk, and each run trains the head on them with Crome's composite loss
([`trl_crome.trainer.losses.composite_loss`]). On 2 CPU cores this is what makes dozens of runs fit in minutes; the
price is a model that can only reweight what SmolLM2 already encodes (see `docs/evidence.md`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trl_crome.evaluation.scoring import build_input_ids, length_sorted_batches
from trl_crome.trainer.losses import composite_loss


def sequence_key(prompt: str, answer: str) -> str:
    return hashlib.sha256(f"{prompt}\x1f{answer}".encode()).hexdigest()


class FeatureStore:
    """Last-token hidden states of (prompt, answer) sequences under a frozen model, cached in one file.

    Args:
        path (`str` or `Path`): the cache file (a `torch.save`d dict from sequence key to a float32 vector).
        model_path (`str` or `Path`): a causal LM folder (the backbone is loaded with `AutoModel`).
        max_length (`int`): longer sequences keep their last `max_length` tokens, as [`RewardScorer`] does.
        batch_size (`int`): sequences per forward pass.
    """

    def __init__(self, path: str | Path, model_path: str | Path, max_length: int = 72, batch_size: int = 16):
        self.path, self.model_path = Path(path), model_path
        self.max_length, self.batch_size = max_length, batch_size
        self.vectors: dict[str, torch.Tensor] = torch.load(self.path) if self.path.exists() else {}
        self.truncated = 0
        self._model = self._tokenizer = None

    def _load(self):
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._model = AutoModel.from_pretrained(self.model_path, dtype=torch.float32).eval()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(self.vectors, tmp)
        os.replace(tmp, self.path)  # atomic: a killed run keeps every batch saved before it

    @torch.inference_mode()
    def compute(self, sequences: Iterable[tuple[str, str]], save_every: int = 10) -> None:
        """Compute and cache the states of the (prompt, answer) sequences not cached yet, with a progress bar."""
        todo = {sequence_key(p, a): (p, a) for p, a in sequences}
        todo = {key: value for key, value in todo.items() if key not in self.vectors}
        if not todo:
            return
        if self._model is None:
            self._load()
        keys = list(todo)
        ids = [build_input_ids(self._tokenizer, *todo[key]) for key in keys]
        self.truncated += sum(len(i) > self.max_length for i in ids)
        ids = [i[-self.max_length :] for i in ids]
        batches = length_sorted_batches([len(i) for i in ids], self.batch_size)
        for step, batch in enumerate(tqdm(batches, desc="SmolLM2 hidden states", unit="batch")):
            tensors = [torch.tensor(ids[i]) for i in batch]
            padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=0)
            mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(t) for t in tensors], batch_first=True)
            hidden = self._model(input_ids=padded, attention_mask=mask).last_hidden_state
            for row, i in enumerate(batch):
                self.vectors[keys[i]] = hidden[row, len(ids[i]) - 1].clone()
            if (step + 1) % save_every == 0:
                self._save()
        self._save()

    def matrix(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """The cached states of the sequences, stacked: shape `(len(prompts), hidden_size)`."""
        return torch.stack([self.vectors[sequence_key(p, a)] for p, a in zip(prompts, answers, strict=True)])


def pair_matrices(store: FeatureStore, rows: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [row["prompt"] for row in rows]
    return store.matrix(prompts, [r["chosen"] for r in rows]), store.matrix(prompts, [r["rejected"] for r in rows])


def train_head(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    tie: torch.Tensor,
    tie_loss_weight: float = 1.0,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> torch.nn.Linear:
    """Train a reward head `score(h)` on pairs of hidden states with Crome's composite loss.

    Every run gets the same budget (`steps` Adam steps of `batch_size` pairs, sampled with a seeded generator), so
    larger augmented sets are not trained longer. The head starts like a fresh `score` layer (normal, std 0.02).
    """
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(chosen.shape[1], 1, bias=False)
    torch.nn.init.normal_(head.weight, std=0.02, generator=generator)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    for _ in range(steps):
        index = torch.randint(len(chosen), (batch_size,), generator=generator)
        delta = (head(chosen[index]) - head(rejected[index])).squeeze(-1)
        loss = composite_loss(delta, tie[index], tie_loss_weight=tie_loss_weight).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head


@torch.no_grad()
def pair_accuracy(head: torch.nn.Linear, chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Fraction of pairs whose chosen answer gets the higher reward."""
    return (head(chosen) > head(rejected)).float().mean().item()
