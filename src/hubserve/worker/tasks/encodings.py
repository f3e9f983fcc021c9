"""Token-id encodings run together: several stacked into one batch, padded alike on the tokenizer's side, and each
one's own tokens found again in the model's outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def padded_batch(tokenizer: Any, encodings: Sequence[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], int]:
    """The model inputs of several encodings (each some rows of token ids) stacked, padded alike on the tokenizer's
    side, and their common width."""
    width = max(encoding["input_ids"].shape[1] for encoding in encodings)
    left = tokenizer.padding_side == "left"
    fill = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
    names = [name for name in tokenizer.model_input_names if name in encodings[0]]

    def padded(rows: np.ndarray, value: int) -> np.ndarray:
        extra = width - rows.shape[1]
        return np.pad(np.asarray(rows, dtype=np.int64), ((0, 0), (extra, 0) if left else (0, extra)),
                      constant_values=value)

    return {name: np.concatenate([padded(encoding[name], fill.get(name, 0)) for encoding in encodings])
            for name in names}, width


def own_tokens(tokenizer: Any, encoding: Mapping[str, Any], width: int) -> slice:
    """Where an encoding's own tokens are in a batch `padded_batch` made `width` wide."""
    length = encoding["input_ids"].shape[1]
    return slice(width - length, width) if tokenizer.padding_side == "left" else slice(0, length)
