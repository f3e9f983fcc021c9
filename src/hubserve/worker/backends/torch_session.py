"""The torch model as a `RuntimeSession`: what an adapter runs when no other runtime serves its model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


class TorchSession:
    """`module(**inputs)` on its device, the `outputs` fields back as float32 numpy arrays. `input_names` are the
    names it takes (a tokenizer's `model_input_names`): other names in the inputs are left out."""

    backend = "torch"

    def __init__(self, module: Any, input_names: Sequence[str], outputs: Sequence[str]) -> None:
        self.module = module
        self.input_names = tuple(input_names)
        self.outputs = tuple(outputs)

    @property
    def dtype(self) -> str:
        return str(next(self.module.parameters()).dtype).removeprefix("torch.")

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = self.module.device
        output = self.module(**{name: torch.as_tensor(np.asarray(inputs[name], dtype=np.int64), device=device)
                                for name in self.input_names if name in inputs})
        return {name: output[name].float().cpu().numpy() for name in self.outputs}
