"""A model int8 cannot serve: a copy of a tiny BERT with one outlier weight per output channel of its linear layers,
as trained transformers grow, for the tests of `engine.precision int8`'s accuracy check."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import BertModel


def build_outlier_model(source: Path, folder: Path) -> Path:
    """A copy of the tiny BERT in `source` (its tokenizer too) in `folder`, whose query, key, value and intermediate
    layers each hold an outlier weight per output channel on the input feature that the layer norm before them
    zeroes: torch's outputs do not see the outliers, but each channel's int8 scale is set by its outlier, and its
    other weights (made 20 times larger, so the layers matter) round to zero. Built once per folder."""
    if (folder / "config.json").exists():
        return folder
    model = BertModel.from_pretrained(source)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[0], module.bias[0] = 0.0, 0.0
            elif isinstance(module, torch.nn.Linear) and name.endswith(("query", "key", "value", "intermediate.dense")):
                module.weight.mul_(20.0)
                module.weight[:, 0] = 1e4
    model.save_pretrained(folder)
    for path in source.iterdir():
        if path.is_file() and ("token" in path.name or path.name == "vocab.txt"):
            shutil.copy(path, folder / path.name)
    return folder
