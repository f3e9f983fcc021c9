"""fill-mask: the most likely tokens for the mask token in a text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubserve.errors import BadRequest
from hubserve.worker.tasks.base import LoadOptions
from hubserve.worker.tasks.parameter_types import OBJECT, POSITIVE_INTEGER, STRING, STRINGS
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts


class FillMaskAdapter(PipelineAdapter):
    """`[{"score", "token", "token_str", "sequence"}]` (a list of those per mask or per text)."""

    task = "fill-mask"
    default_max_batch_size = 32
    parameters = frozenset({"top_k", "targets", "tokenizer_kwargs"})
    parameter_types = {"top_k": POSITIVE_INTEGER, "targets": STRING | STRINGS, "tokenizer_kwargs": OBJECT}
    runtime_export = ("AutoModelForMaskedLM", ("logits",))

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        mask_token = getattr(self.pipe.tokenizer, "mask_token", None)
        if not isinstance(mask_token, str):
            raise ValueError("fill-mask needs a tokenizer with a mask token")
        self.mask_token = mask_token

    def prepare(self, inputs: Any) -> Any:
        return require_texts(inputs)

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        return self.text_tokens

    def shorten(self, prepared: Any, kwargs: dict[str, Any]) -> Any:
        texts = super().shorten(prepared, kwargs)
        if any(self.mask_token not in text for text in ([texts] if isinstance(texts, str) else texts)):
            where = "" if self.text_tokens is None else f" within its first {self.text_tokens} tokens"
            raise BadRequest(f"every input must contain the mask token {self.mask_token}{where}")
        return texts

    def warmup(self) -> None:
        self.predict(f"Paris is the {self.mask_token} of France.", {})
