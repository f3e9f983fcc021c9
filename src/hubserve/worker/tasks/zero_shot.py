"""zero-shot-classification: scores for labels chosen per request, with an NLI model."""

from __future__ import annotations

from typing import Any

from hubserve.errors import BadRequest
from hubserve.worker.tasks.parameter_types import BOOLEAN, STRING, STRINGS
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts


class ZeroShotClassificationAdapter(PipelineAdapter):
    """`{"sequence", "labels", "scores"}` (labels best first), a list of them for a list of texts."""

    task = "zero-shot-classification"
    parameters = frozenset({"candidate_labels", "multi_label", "hypothesis_template"})
    parameter_types = {"candidate_labels": STRING | STRINGS, "multi_label": BOOLEAN, "hypothesis_template": STRING}
    warmup_inputs = "I love football"
    warmup_parameters = {"candidate_labels": ["sports", "politics"]}

    def prepare(self, inputs: Any) -> Any:
        return require_texts(inputs)

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        return self.text_tokens  # the premise: the pipeline truncates it (only_first) to fit the hypothesis

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        labels = parameters.get("candidate_labels")
        if isinstance(labels, str):  # "a, b, c", as the pipeline splits it
            labels = [label.strip() for label in labels.split(",") if label.strip()]
        if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
            raise BadRequest(
                "zero-shot-classification needs parameters.candidate_labels: a list of label strings"
            )
        return {**parameters, "candidate_labels": labels}

    def forward_rows(self, items: int, kwargs: dict[str, Any]) -> int:
        return items * len(kwargs["candidate_labels"])  # one (text, hypothesis) pair per label
