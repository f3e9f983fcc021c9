"""Embeddings: feature-extraction (a transformers pipeline), and sentence-transformers' sentence-embeddings,
sentence-similarity and sentence-ranking (a cross-encoder), shaped as the Hugging Face inference toolkit's; each
also pools texts or scores pairs for the protocol routes (see operations). On a runtime (ONNX Runtime) the library's
model is replaced by its runtime counterpart (runtime_pipelines, runtime_sentence), called the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.base.modules.normalize import Normalize

from hubserve.errors import BadRequest
from hubserve.worker.backends import Export, open_runtime
from hubserve.worker.backends.torch_session import TorchSession
from hubserve.worker.tasks.base import LoadOptions, regroup
from hubserve.worker.tasks.loading import sentence_transformers_kwargs
from hubserve.worker.tasks.operations import (
    Embedder,
    PipelineModel,
    Pooled,
    Scorer,
    SentenceTransformersModel,
    encoder_rows,
    is_operation,
    mean_pooled,
)
from hubserve.worker.tasks.parameter_types import BOOLEAN, OBJECT, POSITIVE_INTEGER, STRING, TRUNCATION
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_text, require_texts
from hubserve.worker.tasks.runtime_sentence import (
    BiEncoderModules,
    RuntimeCrossEncoder,
    RuntimeSentenceTransformer,
    Unsupported,
    bi_encoder_modules,
    cross_encoder_modules,
)
from hubserve.worker.tasks.truncation import cut_texts

ENCODE_PARAMETERS = frozenset({"normalize_embeddings", "prompt_name", "prompt", "batch_size", "truncate_dim"})
ENCODE_PARAMETER_TYPES = {"normalize_embeddings": BOOLEAN, "prompt_name": STRING, "prompt": STRING,
                          "batch_size": POSITIVE_INTEGER, "truncate_dim": POSITIVE_INTEGER}


def readable(model: Any, texts: Any) -> Any:
    """`texts` (strings, alone, listed or paired) cut to the tokens the model reads: its `max_seq_length`."""
    if model.max_seq_length is None:
        return texts
    tokens = model.max_seq_length - model.tokenizer.num_special_tokens_to_add(pair=False)
    return cut_texts(texts, model.tokenizer, tokens)


class FeatureExtractionAdapter(PipelineModel, Embedder, PipelineAdapter):
    """The last hidden states: `[[[float]]]` (1 x tokens x hidden) per text; pooled, their mean."""

    task = "feature-extraction"
    default_max_batch_size = 32
    parameters = frozenset({"truncation", "tokenize_kwargs"})
    parameter_types = {"truncation": TRUNCATION, "tokenize_kwargs": OBJECT}
    warmup_inputs = "warm up"
    runtime_export = ("AutoModel", ("last_hidden_state",))

    def prepare(self, inputs: Any) -> Any:
        return require_texts(inputs)

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        return self.text_tokens

    def item_output(self, output: Any, item: Any, kwargs: dict[str, Any]) -> Any:
        # Within a batch every text is padded to the longest: keep each text's own tokens only.
        tokenizer: Any = self.pipe.tokenizer
        tokenize = {"truncation": kwargs.get("truncation", False), **kwargs.get("tokenize_kwargs", {})}
        count = len(tokenizer(item, **tokenize)["input_ids"])
        rows = output[0]
        return [rows[len(rows) - count:] if tokenizer.padding_side == "left" else rows[:count]]

    @property
    def dimension(self) -> int:
        return int(self.pipe.model.config.hidden_size)

    def pool(self, texts: list[str], prompt_name: str | None) -> Pooled:
        assert self.session is not None
        return Pooled(*encoder_rows(self.session, self.tokenizer, texts, self.max_input_length, mean_pooled))


class SentenceTransformerAdapter(SentenceTransformersModel, Embedder):
    """A `SentenceTransformer` bi-encoder on the options' device and dtype, or its runtime counterpart."""

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        try:
            modules: BiEncoderModules | None = bi_encoder_modules(model_dir)
            unsupported = None
        except Unsupported as exc:
            modules, unsupported = None, f"sentence-transformers runs {exc}"
        export = Export(modules.transformer.path if modules else model_dir, "AutoModel", ("last_hidden_state",),
                        options)
        self.session = open_runtime(self, export, unsupported)
        if self.session is not None and modules is not None:
            self.model: Any = RuntimeSentenceTransformer.load(self.session, export, modules)
            self.pooler: Any = self.model.unnormalized()
            self.pooling = modules.pooling
        else:
            self.model = SentenceTransformer(str(model_dir), **sentence_transformers_kwargs(options))
            # Pooled vectors come from the same modules but a last Normalize: a protocol route normalises when asked.
            children = list(self.model.children())
            self.pooler = self.model if not isinstance(children[-1], Normalize) else SentenceTransformer(
                modules=children[:-1], device=options.device, prompts=self.model.prompts,
                default_prompt_name=self.model.default_prompt_name)
            self.pooling = next((str(module.pooling_mode) for module in children if hasattr(module, "pooling_mode")),
                                "mean")
        self.prompts = {name: prompt or "" for name, prompt in self.model.prompts.items()}
        self.default_prompt_name = self.model.default_prompt_name

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension() or 0)

    @property
    def model_dtype(self) -> str:
        if self.session is not None:
            return self.session.dtype
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def pool(self, texts: list[str], prompt_name: str | None) -> Pooled:
        outputs: Any = self.pooler.encode(texts, prompt_name=prompt_name, output_value=None,
                                          convert_to_numpy=False, show_progress_bar=False)
        vectors = np.stack([as_numpy(output["sentence_embedding"]) for output in outputs])
        return Pooled(vectors, [int(output["attention_mask"].sum()) for output in outputs])

    def encode(self, texts: str | list[str], parameters: dict[str, Any]) -> Any:
        self.check_parameters(parameters)
        prompt_name = parameters.get("prompt_name")
        if prompt_name is not None and prompt_name not in self.model.prompts:
            known = ", ".join(sorted(self.model.prompts)) or "none"
            raise BadRequest(f"unknown prompt_name {prompt_name!r}: this model's prompts are {known}")
        return self.model.encode(readable(self.model, texts), show_progress_bar=False, convert_to_numpy=True,
                                 **parameters)


class SentenceEmbeddingsAdapter(SentenceTransformerAdapter):
    """`{"embeddings": [float]}` for a string, `{"embeddings": [[float], ...]}` for a list of strings."""

    task = "sentence-embeddings"
    default_max_batch_size = 32
    parameters = ENCODE_PARAMETERS
    parameter_types = ENCODE_PARAMETER_TYPES

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        if is_operation(inputs):
            return super().predict(inputs, parameters)
        return {"embeddings": self.encode(require_texts(inputs), parameters).tolist()}

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        if is_operation(items[0]):
            return super().predict_items(items, parameters)
        texts = [require_text(item) for item in items]  # single inputs: strings (lists never reach here)
        return [{"embeddings": vector.tolist()} for vector in self.encode(texts, parameters)]

    def warmup(self) -> None:
        self.predict("warm up", {})


class SentenceSimilarityAdapter(SentenceTransformerAdapter):
    """`{"source_sentence": str, "sentences": [str]}` -> `{"similarities": [cosine similarity per sentence]}`."""

    task = "sentence-similarity"
    parameters = ENCODE_PARAMETERS
    parameter_types = ENCODE_PARAMETER_TYPES

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        return self.predict_items([inputs], parameters)[0]

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Every request's sentences encoded together, then each request's similarities."""
        if is_operation(items[0]):
            return super().predict_items(items, parameters)
        groups = [_similarity_texts(inputs) for inputs in items]
        embeddings = self.encode([text for group in groups for text in group], parameters)
        return [{"similarities": cosine_similarities(mine[0], mine[1:]).tolist()}
                for mine in regroup(embeddings, groups)]

    def warmup(self) -> None:
        self.predict({"source_sentence": "warm up", "sentences": ["warm"]}, {})


def _similarity_texts(inputs: Any) -> list[str]:
    """The source sentence, then the sentences to compare it with."""
    source = inputs.get("source_sentence") if isinstance(inputs, dict) else None
    sentences = inputs.get("sentences") if isinstance(inputs, dict) else None
    if not isinstance(source, str) or not isinstance(sentences, list) or not sentences:
        raise BadRequest('inputs must be {"source_sentence": str, "sentences": [str, ...]}')
    return [source, *require_texts(sentences)]


class SentenceRankingAdapter(SentenceTransformersModel, Scorer):
    """A cross-encoder: `[[query, text], ...]` (or `{"query", "texts"}`) -> `{"scores": [float per pair]}`."""

    task = "sentence-ranking"
    aliases = ("text-ranking",)  # the Hub's pipeline_tag for rerankers
    parameters = frozenset({"batch_size", "apply_softmax"})
    parameter_types = {"batch_size": POSITIVE_INTEGER, "apply_softmax": BOOLEAN}

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        export = Export(model_dir, "AutoModelForSequenceClassification", ("logits",), options)
        try:
            module, activation = cross_encoder_modules(model_dir, export.config)
            unsupported = None
        except Unsupported as exc:
            unsupported = f"sentence-transformers runs {exc}"
        self.session = open_runtime(self, export, unsupported)
        if self.session is not None:
            self.model: Any = RuntimeCrossEncoder(self.session, export, module, activation)
        else:
            self.model = CrossEncoder(str(model_dir), **sentence_transformers_kwargs(options))
            self.session = TorchSession(self.model.model, self.tokenizer.model_input_names, ("logits",))

    @property
    def classifier(self) -> Any:
        return self.model.model

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        return self.predict_items([inputs], parameters)[0]

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Every request's pairs scored together, then each request's scores."""
        if is_operation(items[0]):
            return super().predict_items(items, parameters)
        self.check_parameters(parameters)
        groups = [_ranking_pairs(inputs) for inputs in items]
        pairs = readable(self.model, [pair for group in groups for pair in group])
        scores = self.model.predict(pairs, show_progress_bar=False, convert_to_numpy=True, **parameters).tolist()
        return [{"scores": mine} for mine in regroup(scores, groups)]

    def warmup(self) -> None:
        self.predict([["warm up", "warm"]], {})


def as_numpy(vector: Any) -> np.ndarray:
    """A vector as float32 numpy: a runtime's already is; a torch tensor may be on a GPU, or in bfloat16."""
    return vector if isinstance(vector, np.ndarray) else vector.float().cpu().numpy()


def cosine_similarities(source: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The cosine similarity of `source` with each row of `others` (norms at least 1e-12, as torch's)."""
    unit = others / np.maximum(np.linalg.norm(others, axis=1, keepdims=True), 1e-12)
    return unit @ (source / max(float(np.linalg.norm(source)), 1e-12))


def _ranking_pairs(inputs: Any) -> list[Any]:
    """A ranking request's (query, text) pairs."""
    if isinstance(inputs, dict) and isinstance(inputs.get("query"), str) and isinstance(inputs.get("texts"), list):
        inputs = [[inputs["query"], text] for text in inputs["texts"]]
    elif isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(text, str) for text in inputs):
        inputs = [inputs]
    if not (isinstance(inputs, list) and inputs and all(_is_pair(pair) for pair in inputs)):
        raise BadRequest('inputs must be [[query, text], ...] or {"query": str, "texts": [str, ...]}')
    return inputs


def _is_pair(pair: Any) -> bool:
    return isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(text, str) for text in pair)
