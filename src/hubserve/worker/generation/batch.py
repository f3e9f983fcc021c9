"""The running batch on the model side, TGI's `CausalLMBatch` pattern: left-padded rows sharing one `DynamicCache`;
new rows are prefilled together then pad-concatenated in, finished rows are dropped (and the padding they leave)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    def prefill(cls, model: Any, prompts: Sequence[Sequence[int]]) -> tuple[Batch, torch.Tensor]:
        """One forward over the left-padded prompts; the batch (before its first tokens) and last-position logits."""
        device = model.device
        lengths = torch.tensor([len(prompt) for prompt in prompts], device=device)
        width = int(lengths.max())
        ids = left_padded([torch.tensor([prompt], device=device) for prompt in prompts], width, PAD)
        mask = (ids != PAD).long()
        # generate()'s position ids for left padding: count real tokens, padding gets 1.
        position_ids = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, 1)
        out = model(
            input_ids=ids.clamp(min=0),
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )
        check_cache(out.past_key_values)
        return cls(out.past_key_values, mask, ids, lengths), out.logits[:, -1]

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

    @staticmethod
    def _layers(cache: DynamicCache) -> list[Any]:
        """The cache's layers, each holding `keys` and `values` of shape (batch, heads, positions, head size)."""
        return list(cache.layers)

    def append(self, tokens: torch.Tensor) -> None:
        """Record the tokens just chosen: each row feeds its own next."""
        self.token_ids = torch.cat([self.token_ids, tokens[:, None]], dim=1)
        self.next_tokens = tokens

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order), then drop the leading columns that are padding in every row."""
        if list(rows) != list(range(self.size)):
            index = torch.tensor(rows, device=self.mask.device)
            self.mask, self.token_ids = self.mask[index], self.token_ids[index]
            self.positions, self.next_tokens = self.positions[index], self.next_tokens[index]
            self.cache.batch_select_indices(index)
        unused = self.mask.shape[1] - int(self.positions.max())
        if unused > 0:
            self.mask, self.token_ids = self.mask[:, unused:], self.token_ids[:, unused:]
            for layer in self._layers(self.cache):
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]

    def extend(self, other: Batch) -> None:
        """Append `other`'s rows after these, both left-padded to the longer of the two."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = left_padded([self.mask, other.mask], width, 0)
        self.token_ids = left_padded([self.token_ids, other.token_ids], width + 1, PAD)
        self.positions = torch.cat([self.positions, other.positions])
        self.next_tokens = torch.cat([self.next_tokens, other.next_tokens])
        for mine, theirs in zip(self._layers(self.cache), self._layers(other.cache), strict=True):
            mine.keys = left_padded([mine.keys, theirs.keys], width, 0, dim=2)
            mine.values = left_padded([mine.values, theirs.values], width, 0, dim=2)


def check_cache(cache: Any) -> None:
    """The scheduler pads and slices cache tensors itself: it needs plain full-attention `DynamicLayer`s."""
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        raise TypeError(
            f"continuous batching needs a model whose cache is a DynamicCache of DynamicLayers; got {type(cache)}"
        )
