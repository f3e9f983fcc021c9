"""token-classification (alias ner): entities with their character offsets, optionally grouped."""

from __future__ import annotations

from typing import Any

from hubserve.worker.tasks.parameter_types import INTEGER, STRINGS, one_of
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts


class TokenClassificationAdapter(PipelineAdapter):
    """`[{entity, score, index, word, start, end}]`, or `[{entity_group, score, word, start, end}]`
    with an `aggregation_strategy` (simple, first, average, max)."""

    task = "token-classification"
    default_max_batch_size = 32
    aliases = ("ner",)
    parameters = frozenset({"aggregation_strategy", "ignore_labels", "stride"})
    parameter_types = {"aggregation_strategy": one_of("none", "simple", "first", "average", "max"),
                       "ignore_labels": STRINGS, "stride": INTEGER}
    warmup_inputs = "My name is Sarah and I live in London"
    runtime_export = ("AutoModelForTokenClassification", ("logits",))

    def prepare(self, inputs: Any) -> Any:
        return require_texts(inputs)

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        # With a `stride` the pipeline reads the whole text, window after window.
        return None if kwargs.get("stride") else self.text_tokens
