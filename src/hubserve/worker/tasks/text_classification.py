"""text-classification (alias sentiment-analysis): a label and score per text, or per text pair."""

from __future__ import annotations

from typing import Any

from hubserve.errors import BadRequest
from hubserve.worker.tasks.operations import PipelineModel, Scorer
from hubserve.worker.tasks.parameter_types import (
    FUNCTION_TO_APPLY,
    INTEGER,
    NULL,
    PADDING,
    POSITIVE_INTEGER,
    TRUNCATION,
)
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts

PAIR_KEYS = frozenset({"text", "text_pair"})


class TextClassificationAdapter(PipelineModel, Scorer, PipelineAdapter):
    """`[{"label", "score"}]` for a string (top-1, or the `top_k` best), a list of them for a list."""

    task = "text-classification"
    default_max_batch_size = 32
    aliases = ("sentiment-analysis",)
    parameters = frozenset({"top_k", "function_to_apply", "truncation", "max_length", "padding"})
    parameter_types = {"top_k": INTEGER | NULL, "function_to_apply": FUNCTION_TO_APPLY, "truncation": TRUNCATION,
                       "max_length": POSITIVE_INTEGER, "padding": PADDING}
    warmup_inputs = "warm up"
    runtime_export = ("AutoModelForSequenceClassification", ("logits",))

    def prepare(self, inputs: Any) -> Any:
        pairs = inputs if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else [inputs]
        if not all(isinstance(pair, dict) for pair in pairs):
            return require_texts(inputs)
        for pair in pairs:
            if not (set(pair) <= PAIR_KEYS and isinstance(pair.get("text"), str)):
                raise BadRequest('a text pair must be {"text": str, "text_pair": str}')
            if not isinstance(pair.get("text_pair", ""), str):
                raise BadRequest('"text_pair" must be a string')
        return inputs

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        # Texts come cut to the model's length (`input_tokens`); a pair of them still needs truncating together.
        if self.context_tokens is None or "truncation" in parameters:
            return parameters
        return {"truncation": True, "max_length": self.context_tokens, **parameters}

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        return self.text_tokens

    def item_output(self, output: Any, item: Any, kwargs: dict[str, Any]) -> Any:
        # For one text the pipeline answers a list even for its top-1 label; within a list, the bare dict.
        return output if isinstance(output, list) else [output]

    @property
    def classifier(self) -> Any:
        return self.pipe.model
