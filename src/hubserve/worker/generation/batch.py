"""A transformers model under the scheduler (`TorchModel`), and its running batch, TGI's `CausalLMBatch` pattern:
left-padded rows sharing one `DynamicCache`; new rows are prefilled together then pad-concatenated in, finished rows
are dropped (and the padding they leave).

Prompts that start with the same tokens (a chat template's system prompt) can share a `Prefix`: its cache is
computed once and copied into each row, and only the rest of each prompt is prefilled. Such rows hold a gap of
padding between the prefix and the rest; the mask and explicit position ids make it invisible to the model. A long
prompt builds a prefix of its own the same way, a chunk at a time, before its last chunk is prefilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

PAD = -1  # what pads `token_ids` (the attention mask marks it; the repetition penalty skips it)


def left_padded(parts: Sequence[torch.Tensor], length: int, fill: float, dim: int = 1) -> torch.Tensor:
    """The `parts` stacked along dim 0, each right-aligned in `length` positions along `dim`, `fill` before."""
    first = parts[0]
    shape = list(first.shape)
    shape[0], shape[dim] = sum(part.shape[0] for part in parts), length
    out = first.new_full(shape, fill)
    row = 0
    for part in parts:
        width = part.shape[dim]
        out.narrow(0, row, part.shape[0]).narrow(dim, length - width, width).copy_(part)
        row += part.shape[0]
    return out


@dataclass(frozen=True)
class Prefix:
    """Prompt tokens that several prompts start with, and their cache (one row), computed once."""

    token_ids: tuple[int, ...]
    cache: DynamicCache

    @classmethod
    def empty(cls) -> Prefix:
        return cls((), DynamicCache())

    def extended(self, model: Any, token_ids: Sequence[int]) -> Prefix:
        """This prefix followed by `token_ids`, from one forward over them after its cache (which that forward
        extends in place: this prefix is used up)."""
        start = len(self.token_ids)
        ids = torch.tensor([list(token_ids)], device=model.device)
        positions = torch.arange(start, start + ids.shape[1], device=model.device)[None]
        mask = torch.ones(1, start + ids.shape[1], dtype=ids.dtype, device=model.device)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=self.cache,
                        use_cache=True, logits_to_keep=1)
        check_cache(out.past_key_values)
        return Prefix((*self.token_ids, *token_ids), out.past_key_values)

    def rows(self, count: int) -> DynamicCache:
        """A fresh cache holding the prefix in `count` rows (the forward extends it in place)."""
        cache = DynamicCache()
        for index, layer in enumerate(cache_layers(self.cache)):
            cache.update(layer.keys.expand(count, -1, -1, -1).contiguous(),
                         layer.values.expand(count, -1, -1, -1).contiguous(), index)
        return cache


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one token of its own."""
    first, shortest = prompts[0], min(len(prompt) for prompt in prompts)
    length = 0
    while length < shortest - 1 and all(prompt[length] == first[length] for prompt in prompts):
        length += 1
    return length


class Batch:
    """Rows decoded together. Column j of `mask` and of the cache is the same position of every row; `token_ids`
    has one more column: the token each row feeds next, also in `next_tokens`. `positions[i]` counts row i's
    real tokens in the cache: the position id of the token it feeds next."""

    def __init__(
        self,
        cache: DynamicCache,
        mask: torch.Tensor,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        self.cache = cache
        self.mask = mask
        self.token_ids = token_ids
        self.positions = positions
        self.next_tokens = token_ids[:, -1]

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @classmethod
    def prefill(cls, model: Any, prompts: Sequence[Sequence[int]],
                prefix: Prefix | None = None) -> tuple[Batch, torch.Tensor]:
        """One forward over the left-padded prompts (after `prefix`, which each must start with, when given); the
        batch (before its first tokens) and last-position logits."""
        device = model.device
        shared = len(prefix.token_ids) if prefix is not None else 0
        width = max(len(prompt) for prompt in prompts) - shared
        ids = left_padded([torch.tensor([prompt[shared:]], device=device) for prompt in prompts], width, PAD)
        mask = (ids != PAD).long()
        # generate()'s position ids for left padding: count real tokens, padding gets 1.
        position_ids = (mask.cumsum(dim=1) - 1 + shared).masked_fill(mask == 0, 1)
        if prefix is not None:
            ids_before = torch.tensor([prefix.token_ids], device=device).expand(len(prompts), -1)
            cache, mask = prefix.rows(len(prompts)), torch.cat([torch.ones_like(ids_before), mask], dim=1)
        else:
            ids_before, cache = ids[:, :0], DynamicCache()
        out = model(
            input_ids=ids.clamp(min=0),
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        check_cache(out.past_key_values)
        lengths = torch.tensor([len(prompt) for prompt in prompts], device=device)
        return cls(out.past_key_values, mask, torch.cat([ids_before, ids], dim=1), lengths), out.logits[:, -1]

    def decode(self, model: Any) -> torch.Tensor:
        """One forward of every row's next token; its logits."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        out = model(
            input_ids=self.next_tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.positions = self.positions + 1
        return out.logits[:, -1]

    def append(self, tokens: torch.Tensor | np.ndarray) -> None:
        """Record the tokens just chosen: each row feeds its own next."""
        tokens = torch.as_tensor(tokens, device=self.token_ids.device)
        self.token_ids = torch.cat([self.token_ids, tokens[:, None]], dim=1)
        self.next_tokens = tokens

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order), then drop the leading columns that are padding in every row (rows that
        share a prefix have padding after it: only the columns before any row's first real token go)."""
        if list(rows) != list(range(self.size)):
            index = torch.tensor(rows, device=self.mask.device)
            self.mask, self.token_ids = self.mask[index], self.token_ids[index]
            self.positions, self.next_tokens = self.positions[index], self.next_tokens[index]
            self.cache.batch_select_indices(index)
        unused = int(self.mask.any(dim=0).int().argmax())
        if unused > 0:
            self.mask, self.token_ids = self.mask[:, unused:], self.token_ids[:, unused:]
            for layer in cache_layers(self.cache):
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]

    def extend(self, other: Batch) -> None:
        """Append `other`'s rows after these, both left-padded to the longer of the two."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = left_padded([self.mask, other.mask], width, 0)
        self.token_ids = left_padded([self.token_ids, other.token_ids], width + 1, PAD)
        self.positions = torch.cat([self.positions, other.positions])
        self.next_tokens = torch.cat([self.next_tokens, other.next_tokens])
        for mine, theirs in zip(cache_layers(self.cache), cache_layers(other.cache), strict=True):
            mine.keys = left_padded([mine.keys, theirs.keys], width, 0, dim=2)
            mine.values = left_padded([mine.values, theirs.values], width, 0, dim=2)


def cache_layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers, each holding `keys` and `values` of shape (batch, heads, positions, head size)."""
    return list(cache.layers)


def check_cache(cache: Any) -> None:
    """The scheduler pads and slices cache tensors itself: it needs plain full-attention `DynamicLayer`s."""
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        raise TypeError(
            f"continuous batching needs a model whose cache is a DynamicCache of DynamicLayers; got {type(cache)}"
        )


class TorchModel:
    """A transformers causal LM as the scheduler's `BatchModel`: generate()'s own forward and DynamicCache."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device: torch.device = model.device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        eos = model.generation_config.eos_token_id
        self.eos_ids: tuple[int, ...] = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
        # A CPU prefills tokens one after another at about the same rate whatever the batch: prefilling a burst in
        # small groups (and a long prompt in small chunks) gives the first their first token sooner, and keeps
        # every step short, at no cost in throughput.
        self.step_tokens = 256 if self.device.type == "cpu" else 4096

    def prefill(self, prompts: Sequence[Sequence[int]], prefix: Prefix | None = None,
                adopt: bool = False) -> tuple[Batch, torch.Tensor]:
        return Batch.prefill(self.model, prompts, prefix)

    def decode(self, batch: Batch) -> torch.Tensor:
        return batch.decode(self.model)

    def prefix(self, token_ids: Sequence[int], after: Prefix | None = None) -> Prefix:
        return (after or Prefix.empty()).extended(self.model, token_ids)
