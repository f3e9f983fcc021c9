"""Transformers pipelines over a runtime session (ONNX Runtime): each is the task's own pipeline class, so its
parameter handling, call shapes and post-processing helpers are transformers' own, with the steps that touch torch
(tokenizing to tensors, batching, the forward pass, the numeric post-processing) done in numpy instead. One call
runs its inputs (and the windows of a long text) through as few forward passes as they fit in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from transformers import (
    FeatureExtractionPipeline,
    FillMaskPipeline,
    TextClassificationPipeline,
    TokenClassificationPipeline,
)
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines.text_classification import ClassificationFunction, sigmoid, softmax
from transformers.pipelines.token_classification import AggregationStrategy, TokenClassificationArgumentHandler

from hubserve.worker.backends import RuntimeSession
from hubserve.worker.tasks.base import regroup
from hubserve.worker.tasks.encodings import own_tokens, padded_batch

# Encodings per forward pass when a call brings more (a long list, or a long text's windows).
ROWS = 32


class RuntimeModel:
    """What a pipeline (and an adapter) reads of its model besides running it: the config."""

    base_model_prefix = ""

    def __init__(self, config: Any) -> None:
        self.config = config


class CpuDevice:
    """Where a runtime pipeline runs, as much as `Pipeline.__call__` asks of a device."""

    type = "cpu"


class RuntimePipeline:
    """Put before the transformers task pipeline in a class's bases: it replaces the pipeline's construction and
    its torch-bound running (`run_single`, `get_iterator`) while the task class keeps `__call__`,
    `_sanitize_parameters` and its helpers. A subclass gives `preprocess` (numpy encodings, one per input, or a
    generator of windows for a chunk pipeline) and a numpy `postprocess`."""

    # Whether the model's outputs have a token axis (cut back to each input's own tokens) or one row per input.
    token_outputs: ClassVar[bool] = True
    # What `Pipeline` reads of itself, set here to what a runtime has (no torch model, device or processors).
    model: Any
    device: Any
    feature_extractor: Any
    image_processor: Any
    processor: Any

    def __init__(self, task: str, session: RuntimeSession, tokenizer: Any, config: Any) -> None:
        self.task = task
        self.session = session
        self.tokenizer = tokenizer
        self.model = RuntimeModel(config)
        self.feature_extractor = self.image_processor = self.processor = None
        self.device = CpuDevice()
        self.call_count = 0
        self._num_workers = self._batch_size = None
        self._preprocess_params: dict[str, Any] = {}
        self._forward_params: dict[str, Any] = {}
        self._postprocess_params: dict[str, Any] = {}

    def run_single(self, inputs: Any, preprocess_params: dict[str, Any], forward_params: dict[str, Any],
                   postprocess_params: dict[str, Any]) -> Any:
        return self.run_all([inputs], preprocess_params, postprocess_params)[0]

    def get_iterator(self, inputs: Any, num_workers: int, batch_size: int, preprocess_params: dict[str, Any],
                     forward_params: dict[str, Any], postprocess_params: dict[str, Any]) -> Iterator[Any]:
        return iter(self.run_all(list(inputs), preprocess_params, postprocess_params))

    def run_all(self, inputs: list[Any], preprocess_params: dict[str, Any],
                postprocess_params: dict[str, Any]) -> list[Any]:
        """Each input's answer: all their encodings (a chunk pipeline's windows) through one forward."""
        chunked = isinstance(self, ChunkPipeline)
        pipeline: Any = self  # a task pipeline: its preprocess and postprocess are the subclass's
        prepared = [list(pipeline.preprocess(item, **preprocess_params)) if chunked
                    else [pipeline.preprocess(item, **preprocess_params)] for item in inputs]
        outputs = self.forward_all([encoding for encodings in prepared for encoding in encodings])
        return [pipeline.postprocess(mine if chunked else mine[0], **postprocess_params)
                for mine in regroup(outputs, prepared)]

    def forward_all(self, encodings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each encoding (a row of token ids) with the model's outputs for it: `ROWS` encodings of similar length
        at a time, padded alike; its token outputs cut back to its own tokens."""
        order = sorted(range(len(encodings)), key=lambda index: encodings[index]["input_ids"].shape[1])
        found: list[dict[str, Any]] = [{}] * len(encodings)
        for start in range(0, len(order), ROWS):
            chunk = order[start:start + ROWS]
            batch, width = padded_batch(self.tokenizer, [encodings[index] for index in chunk])
            outputs = self.session.run(batch)
            for row, index in enumerate(chunk):
                tokens = own_tokens(self.tokenizer, encodings[index], width)
                mine = {name: value[row:row + 1, tokens] if self.token_outputs else value[row:row + 1]
                        for name, value in outputs.items()}
                found[index] = {**encodings[index], **mine}
        return found


class RuntimeFeatureExtraction(RuntimePipeline, FeatureExtractionPipeline):  # type: ignore[misc]
    def preprocess(self, inputs: Any, **tokenize_kwargs: Any) -> Any:  # type: ignore[override]
        return self.tokenizer(inputs, return_tensors="np", **tokenize_kwargs)

    def postprocess(self, outputs: Any, return_tensors: bool = False) -> Any:  # type: ignore[override]
        hidden = outputs["last_hidden_state"]
        return hidden if return_tensors else hidden.tolist()


class RuntimeTextClassification(RuntimePipeline, TextClassificationPipeline):  # type: ignore[misc]
    token_outputs = False

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(inputs, dict):
            return self.tokenizer(**inputs, return_tensors="np", **tokenizer_kwargs)
        if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], list) and len(inputs[0]) == 2:
            return self.tokenizer(text=inputs[0][0], text_pair=inputs[0][1], return_tensors="np", **tokenizer_kwargs)
        if isinstance(inputs, list):
            raise ValueError('a text pair must be {"text": str, "text_pair": str}')
        return self.tokenizer(inputs, return_tensors="np", **tokenizer_kwargs)

    def postprocess(  # type: ignore[override]
            self, outputs: Any, function_to_apply: Any = None, top_k: int | None = 1, _legacy: bool = True) -> Any:
        config = self.model.config
        if function_to_apply is None:
            if config.problem_type == "regression":
                function_to_apply = ClassificationFunction.NONE
            elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
                function_to_apply = ClassificationFunction.SIGMOID
            elif config.problem_type == "single_label_classification" or config.num_labels > 1:
                function_to_apply = ClassificationFunction.SOFTMAX
            else:
                function_to_apply = getattr(config, "function_to_apply", ClassificationFunction.NONE)
        logits = outputs["logits"][0].astype(np.float32)
        if function_to_apply == ClassificationFunction.SIGMOID:
            scores = sigmoid(logits)
        elif function_to_apply == ClassificationFunction.SOFTMAX:
            scores = softmax(logits)
        elif function_to_apply == ClassificationFunction.NONE:
            scores = logits
        else:
            raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
        if top_k == 1 and _legacy:
            return {"label": config.id2label[scores.argmax().item()], "score": scores.max().item()}
        labelled = [{"label": config.id2label[index], "score": score.item()} for index, score in enumerate(scores)]
        if not _legacy:
            labelled.sort(key=lambda found: found["score"], reverse=True)
            if top_k is not None:
                labelled = labelled[:top_k]
        return labelled


class RuntimeTokenClassification(RuntimePipeline, TokenClassificationPipeline):  # type: ignore[misc]
    def __init__(self, task: str, session: RuntimeSession, tokenizer: Any, config: Any) -> None:
        super().__init__(task, session, tokenizer, config)
        self._args_parser = TokenClassificationArgumentHandler()

    def preprocess(  # type: ignore[override]
            self, sentence: Any, offset_mapping: Any = None, **preprocess_params: Any) -> Any:
        """The text's windows (one unless a `stride` asks for all of a long text); pre-split words are not taken
        (the adapter's parameters have no `is_split_into_words`)."""
        tokenizer_params = preprocess_params.pop("tokenizer_params", {})
        if preprocess_params.get("is_split_into_words") or not isinstance(sentence, str):
            raise ValueError("token-classification takes a text")
        truncation = bool(self.tokenizer.model_max_length and self.tokenizer.model_max_length > 0)
        inputs = self.tokenizer(sentence, return_tensors="np", truncation=truncation, return_special_tokens_mask=True,
                                return_offsets_mapping=self.tokenizer.is_fast, **tokenizer_params)
        inputs.pop("overflow_to_sample_mapping", None)
        windows = len(inputs["input_ids"])
        for index in range(windows):
            window = {name: value[index:index + 1] for name, value in inputs.items()}
            if offset_mapping is not None or "offset_mapping" not in window:
                window["offset_mapping"] = offset_mapping
            yield {**window, "sentence": sentence if index == 0 else None, "is_last": index == windows - 1}

    def postprocess(  # type: ignore[override]
            self, all_outputs: Any, aggregation_strategy: Any = AggregationStrategy.NONE,
            ignore_labels: list[str] | None = None) -> Any:
        ignore_labels = ["O"] if ignore_labels is None else ignore_labels
        entities: list[dict[str, Any]] = []
        for outputs in all_outputs:
            logits = outputs["logits"][0].astype(np.float32)
            shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
            offsets = outputs["offset_mapping"][0] if outputs["offset_mapping"] is not None else None
            pre_entities = self.gather_pre_entities(all_outputs[0]["sentence"], outputs["input_ids"][0], scores,
                                                    offsets, outputs["special_tokens_mask"][0], aggregation_strategy)
            entities += [entity for entity in self.aggregate(pre_entities, aggregation_strategy)
                         if entity.get("entity") not in ignore_labels
                         and entity.get("entity_group") not in ignore_labels]
        return self.aggregate_overlapping_entities(entities) if len(all_outputs) > 1 else entities


class RuntimeFillMask(RuntimePipeline, FillMaskPipeline):  # type: ignore[misc]
    def get_masked_index(self, input_ids: Any) -> np.ndarray:
        return np.argwhere(np.asarray(input_ids) == self.tokenizer.mask_token_id)

    def preprocess(  # type: ignore[override]
            self, inputs: Any, return_tensors: Any = None, tokenizer_kwargs: dict[str, Any] | None = None,
            **preprocess_parameters: Any) -> Any:
        encoding = self.tokenizer(inputs, return_tensors="np", **(tokenizer_kwargs or {}))
        self.ensure_exactly_one_mask_token(encoding)
        return encoding

    def postprocess(  # type: ignore[override]
            self, outputs: Any, top_k: int = 5, target_ids: np.ndarray | None = None) -> Any:
        if target_ids is not None and target_ids.shape[0] < top_k:
            top_k = target_ids.shape[0]
        input_ids = outputs["input_ids"][0]
        masked = np.nonzero(input_ids == self.tokenizer.mask_token_id)[0]
        logits = outputs["logits"][0, masked, :].astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        if target_ids is not None:
            probs = probs[..., target_ids]
        predictions = np.argsort(-probs, axis=-1, kind="stable")[..., :top_k]
        values = np.take_along_axis(probs, predictions, axis=-1)
        single_mask = values.shape[0] == 1
        result = []
        for index, (row_values, row_predictions) in enumerate(zip(values.tolist(), predictions.tolist(), strict=True)):
            row = []
            for score, prediction in zip(row_values, row_predictions, strict=True):
                token = int(target_ids[prediction]) if target_ids is not None else prediction
                tokens = input_ids.copy()
                tokens[masked[index]] = token
                tokens = tokens[tokens != self.tokenizer.pad_token_id]
                # One mask: a readable sentence; several: the other masks stay, so the special tokens do too.
                sequence = self.tokenizer.decode(tokens, skip_special_tokens=single_mask)
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": sequence})
            result.append(row)
        return result[0] if single_mask else result


RUNTIME_PIPELINES: dict[str, type[RuntimePipeline]] = {
    "feature-extraction": RuntimeFeatureExtraction,
    "text-classification": RuntimeTextClassification,
    "token-classification": RuntimeTokenClassification,
    "fill-mask": RuntimeFillMask,
}


def runtime_pipeline(task: str, session: RuntimeSession, tokenizer: Any, config: Any) -> Any:
    """The task's pipeline over `session`: called, configured and read as the transformers one."""
    return RUNTIME_PIPELINES[task](task, session, tokenizer, config)
