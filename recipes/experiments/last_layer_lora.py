"""The reward model of the experiments: SmolLM2-135M-Instruct fine-tuned with LoRA on its last decoder layer.

A `LlamaForSequenceClassification` reward is `score(norm(h))` at the sequence's last token. The experiments train the
peft LoRA `LoraConfig(target_modules=LORA_TARGETS, layers_to_transform=[last layer], modules_to_save=["score"])`:
rank-`r` adapters on the query, output and MLP projections of the **last** decoder layer, plus the `score` head; the
other 134M parameters stay frozen. Nothing trainable then touches the earlier layers or the last layer's keys and
values, so for each sequence the frozen part is computed once and cached ([`LastLayerCache`]): the last layer's
rotated keys and values at every position, and its input at the last token. A training step
([`LastLayerRewardModel`]) runs only the last token through the adapted layer, which makes a step of 64 sequences
take milliseconds on 2 CPU cores instead of seconds, and dozens of runs fit in minutes. `tests/experiments` check
that the rewards equal those of the same peft LoRA applied to the whole network.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from tqdm.auto import tqdm
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from trl_crome.evaluation.scoring import build_input_ids, length_sorted_batches
from trl_crome.trainer.losses import composite_loss

LORA_TARGETS = ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def sequence_key(prompt: str, answer: str) -> str:
    return hashlib.sha256(f"{prompt}\x1f{answer}".encode()).hexdigest()


def sequence_ids(tokenizer, pairs: Sequence[dict]) -> dict[str, list[int]]:
    """Token ids of every (prompt, chosen) and (prompt, rejected) sequence, in TRL's reward format, by key."""
    return {
        sequence_key(pair["prompt"], pair[side]): build_input_ids(tokenizer, pair["prompt"], pair[side])
        for pair in pairs
        for side in ("chosen", "rejected")
    }


class LastLayerCache:
    """The frozen part of every (prompt, answer) sequence under a Llama model, computed once and kept in shards.

    Per sequence: the last decoder layer's keys (after RoPE) and values at every position, shape
    `(key_value_heads, length, head_dim)`, and the layer's input at the last token, shape `(hidden_size,)`.

    Args:
        directory (`str` or `Path`): the cache folder; one `shard-*.pt` file per computed batch, written atomically,
            so a killed run keeps every finished batch.
        model_path (`str` or `Path`): a Llama causal LM or sequence-classification folder.
        batch_size (`int`): sequences per forward pass.
        dtype (`torch.dtype`): storage type of the cached tensors (computation is float32).
    """

    def __init__(
        self,
        directory: str | Path,
        model_path: str | Path,
        batch_size: int = 16,
        dtype: torch.dtype = torch.float16,
    ):
        from transformers import AutoModel

        self.directory, self.batch_size, self.dtype = Path(directory), batch_size, dtype
        self.directory.mkdir(parents=True, exist_ok=True)
        self.backbone = AutoModel.from_pretrained(model_path, dtype=torch.float32).eval()
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for shard in sorted(self.directory.glob("shard-*.pt")):
            self.entries.update(torch.load(shard))

    @property
    def last_layer(self) -> torch.nn.Module:
        return self.backbone.layers[-1]

    @torch.inference_mode()
    def compute(self, sequences: dict[str, list[int]], desc: str = "SmolLM2 frozen layers") -> int:
        """Cache the sequences (key -> token ids) not cached yet, with a progress bar; returns how many it computed."""
        todo = [key for key in dict.fromkeys(sequences) if key not in self.entries]
        captured = {}

        def capture_input(module, args, kwargs):
            captured["hidden"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        handle = self.last_layer.register_forward_pre_hook(capture_input, with_kwargs=True)
        attention = self.last_layer.self_attn
        try:
            batches = length_sorted_batches([len(sequences[key]) for key in todo], self.batch_size)
            shard_index = len(list(self.directory.glob("shard-*.pt")))
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not batches):
                ids = [torch.tensor(sequences[todo[i]]) for i in batch]
                padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
                mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(t) for t in ids], batch_first=True)
                # Right padding under a causal mask leaves every real token's states exactly as if unpadded.
                self.backbone(input_ids=padded, attention_mask=mask)
                hidden = captured["hidden"]
                normed = self.last_layer.input_layernorm(hidden)
                shape = (*hidden.shape[:2], -1, attention.head_dim)
                keys = attention.k_proj(normed).view(shape).transpose(1, 2)
                values = attention.v_proj(normed).view(shape).transpose(1, 2)
                positions = torch.arange(hidden.shape[1]).expand(hidden.shape[0], -1)
                cos, sin = self.backbone.rotary_emb(normed, position_ids=positions)
                keys, _ = apply_rotary_pos_emb(keys, keys, cos, sin)
                new = {}
                for row, i in enumerate(batch):
                    n = len(ids[row])
                    new[todo[i]] = tuple(
                        t.to(self.dtype).clone() for t in (keys[row, :, :n], values[row, :, :n], hidden[row, n - 1])
                    )
                self._write_shard(shard_index, new)
                shard_index += 1
                self.entries.update(new)
        finally:
            handle.remove()
        return len(todo)

    def _write_shard(self, index: int, entries: dict) -> None:
        path = self.directory / f"shard-{index:06d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(entries, tmp)
        os.replace(tmp, path)

    def table(self, keys: Sequence[str]) -> CachedSequences:
        """The cached sequences `keys`, padded into one table (row `i` is `keys[i]`)."""
        return CachedSequences(keys, [self.entries[key] for key in keys])


class CachedSequences:
    """Cached sequences padded to one length: `keys`, `values` `(N, kv_heads, L, head_dim)`, `hidden`, `lengths`."""

    def __init__(self, keys: Sequence[str], entries: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
        self.row_of = {key: row for row, key in enumerate(keys)}
        self.lengths = torch.tensor([k.shape[1] for k, _, _ in entries])
        width = int(self.lengths.max())
        kv_heads, _, head_dim = entries[0][0].shape
        self.keys = entries[0][0].new_zeros(len(entries), kv_heads, width, head_dim)
        self.values = torch.zeros_like(self.keys)
        for row, (k, v, _) in enumerate(entries):
            self.keys[row, :, : k.shape[1]] = k
            self.values[row, :, : v.shape[1]] = v
        self.hidden = torch.stack([h for _, _, h in entries])

    def __len__(self) -> int:
        return len(self.lengths)

    def pair_rows(self, pairs: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of the pairs' (prompt, chosen) and (prompt, rejected) sequences."""
        return tuple(
            torch.tensor([self.row_of[sequence_key(pair["prompt"], pair[side])] for pair in pairs])
            for side in ("chosen", "rejected")
        )

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows `index` in float32, cut to their longest length: `(keys, values, hidden, lengths)`."""
        lengths = self.lengths[index]
        width = int(lengths.max())
        return (
            self.keys[index, :, :width].float(),
            self.values[index, :, :width].float(),
            self.hidden[index].float(),
            lengths,
        )


class LastLayerRewardModel(torch.nn.Module):
    """The last decoder layer with LoRA adapters, the final norm and a fresh `score` head, run on the last token only.

    Args:
        backbone ([`~transformers.LlamaModel`]): the frozen model; its last layer, norm and rotary embedding are
            copied.
        rank (`int`), alpha (`int`): the LoRA rank and scaling numerator.
        seed (`int`): seeds the adapters' and the head's initialisation.
    """

    def __init__(self, backbone: torch.nn.Module, rank: int = 16, alpha: int = 32, seed: int = 0):
        super().__init__()
        self.layer = copy.deepcopy(backbone.layers[-1])
        self.norm = copy.deepcopy(backbone.norm)
        self.rotary_emb = backbone.rotary_emb
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.score = torch.nn.Linear(self.norm.weight.shape[0], 1, bias=False)
            torch.nn.init.normal_(self.score.weight, std=backbone.config.initializer_range)
            config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
            inject_adapter_in_model(config, self.layer)
        for name, parameter in self.named_parameters():
            parameter.requires_grad = "lora_" in name or name.startswith("score.")

    def forward(
        self, keys: torch.Tensor, values: torch.Tensor, hidden: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Rewards `(N,)` of cached sequences (see [`CachedSequences.rows`])."""
        attention = self.layer.self_attn
        normed = self.layer.input_layernorm(hidden)[:, None]
        query = attention.q_proj(normed).view(len(hidden), 1, -1, attention.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(normed, position_ids=(lengths - 1)[:, None])
        query, _ = apply_rotary_pos_emb(query, query, cos, sin)
        visible = (torch.arange(keys.shape[2]) < lengths[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(
            query, keys, values, attn_mask=visible, scale=attention.scaling, enable_gqa=True
        )
        state = hidden + attention.o_proj(out.transpose(1, 2).reshape(len(hidden), -1))
        state = state + self.layer.mlp(self.layer.post_attention_layernorm(state))
        return self.score(self.norm(state)).squeeze(-1)

    @torch.no_grad()
    def rewards(self, table: CachedSequences, batch_size: int = 256) -> torch.Tensor:
        return torch.cat([self(*table.rows(index)) for index in torch.arange(len(table)).split(batch_size)])


def train_reward_model(
    model: LastLayerRewardModel,
    table: CachedSequences,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    tie: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    tie_loss_weight: float = 1.0,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> LastLayerRewardModel:
    """Train with Crome's composite loss on `steps` batches of `batch_size` pairs sampled with replacement.

    `chosen` / `rejected` are row indices into `table`, `tie` the pairs' tie flags. Every run gets the same budget
    whatever the size of its set, so a larger augmented set is not trained longer. `on_step(step)` is called after
    each step (1-based), e.g. to evaluate at epoch ends.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    for step in range(1, steps + 1):
        index = torch.randint(len(chosen), (batch_size,), generator=generator)
        rewards = model(*table.rows(torch.cat([chosen[index], rejected[index]])))
        delta = rewards[:batch_size] - rewards[batch_size:]
        loss = composite_loss(delta, tie[index], tie_loss_weight=tie_loss_weight).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)
    return model


def pair_accuracy(rewards: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Fraction of pairs (row indices into `rewards`) whose chosen answer gets the higher reward."""
    return (rewards[chosen] > rewards[rejected]).float().mean().item()
