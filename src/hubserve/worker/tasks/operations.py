"""What protocol routes ask of an adapter besides its task's own answer: texts pooled into vectors (TEI's /embed and
/similarity, OpenAI embeddings) and a classifier's raw scores (TEI's /predict and /rerank). Each travels as a
request's `inputs` through the dynamic batcher, so concurrent requests share one forward pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubserve.errors import BadRequest
from hubserve.worker.backends import RuntimeSession
from hubserve.worker.tasks.base import TaskAdapter, regroup
from hubserve.worker.tasks.truncation import leading_text, trailing_text

# Texts per forward pass when one request brings more than a batch.
CHUNK = 32
# The context of a model whose config names none (BERT's).
UNKNOWN_CONTEXT = 512
Pair = tuple[str, str]


@dataclass(frozen=True)
class Embed:
    """Texts to pool into one vector each; a tuple of ints is this model's token ids, read as the text they decode
    to (special tokens dropped)."""

    texts: tuple[str | tuple[int, ...], ...]


@dataclass(frozen=True)
class Score:
    """Texts or (text, text) pairs to classify: the answer is their logits, one row per input."""

    inputs: tuple[str | Pair, ...]


@dataclass(frozen=True)
class Pooled:
    """An `Embed`'s answer: one vector per text (float32, as pooled: not normalised) and the tokens the model read
    for each, special tokens and prompt included."""

    vectors: np.ndarray
    tokens: list[int]


@dataclass(frozen=True)
class Truncation:
    """What happens to a text longer than the model reads (TEI's `truncate` and `truncation_direction`): it is cut
    to its first tokens, to its last (`left`), or refused (`truncate` false)."""

    truncate: bool = True
    left: bool = False

    def parameters(self) -> dict[str, Any]:
        """As a request's parameters: requests that share them share a forward pass."""
        return {"truncate": self.truncate, "truncation_direction": "left" if self.left else "right"}

    @classmethod
    def of(cls, parameters: dict[str, Any]) -> Truncation:
        return cls(parameters.get("truncate", True), parameters.get("truncation_direction") == "left")

    def cut(self, tokenizer: Any, text: str, tokens: int) -> str:
        if not self.truncate:
            if leading_text(tokenizer, text, tokens) != text:
                raise BadRequest(f"`inputs` must have less than {tokens} tokens (besides special tokens and the "
                                 "prompt); send `truncate: true` to cut it")
            return text
        return trailing_text(tokenizer, text, tokens) if self.left else leading_text(tokenizer, text, tokens)


def is_operation(inputs: Any) -> bool:
    """Whether a request's inputs are a protocol route's `Embed` or `Score` (a batch holds only such, or none)."""
    return isinstance(inputs, Embed | Score)


class Operations(TaskAdapter):
    """An adapter that also answers `Embed` or `Score` inputs, those of every request in a batch in one forward.
    An adapter that defines its own `predict` or `predict_items` hands them on here (see `is_operation`)."""

    # The prompts a request may name (`prompt_name`), and the one it gets when it names none, as
    # sentence-transformers configures them.
    prompts: dict[str, str] = {}
    default_prompt_name: str | None = None

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        if is_operation(inputs):
            return self.operate([inputs], parameters)[0]
        return super().predict(inputs, parameters)

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        if items and is_operation(items[0]):
            return self.operate(items, parameters)
        return super().predict_items(items, parameters)

    def operate(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    @property
    def tokenizer(self) -> Any:
        raise NotImplementedError

    @property
    def max_input_length(self) -> int:
        """The most tokens of one input the model reads, special tokens included."""
        raise NotImplementedError

    # The forward pass over token ids that `encoder_rows` runs: the runtime's, or the torch model's.
    session: RuntimeSession | None = None

    @property
    def model_dtype(self) -> str:
        """What the model computes in ("float32", "bfloat16", ...)."""
        assert self.session is not None
        return self.session.dtype

    def tokens_per_text(self, prompt: str | None = None) -> int:
        """How many tokens of a text fit besides the special tokens and `prompt`."""
        extra = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
        return self.max_input_length - self.tokenizer.num_special_tokens_to_add(pair=False) - extra


class Embedder(Operations):
    """An embedding model: `pool` gives a vector per text."""

    # How token vectors become one (TEI's `pooling`: mean, cls, lasttoken, ...).
    pooling = "mean"

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def pool(self, texts: list[str], prompt_name: str | None) -> Pooled:
        raise NotImplementedError

    def operate(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        groups = [item.texts for item in items]  # all Embed: other requests have other parameters
        truncation = Truncation.of(parameters)
        prompt_name = parameters.get("prompt_name")
        tokens = self.tokens_per_text(self.prompts.get(prompt_name or self.default_prompt_name or ""))
        texts = [truncation.cut(self.tokenizer, self.text(text), tokens) for group in groups for text in group]
        pooled = self.pool(texts, prompt_name)
        return [Pooled(vectors, counts) for vectors, counts
                in zip(regroup(pooled.vectors, groups), regroup(pooled.tokens, groups), strict=True)]

    def text(self, text: str | tuple[int, ...]) -> str:
        return text if isinstance(text, str) else self.tokenizer.decode(list(text), skip_special_tokens=True)


class Scorer(Operations):
    """A sequence classifier (a reranker when it has one label): `Score` inputs get its logits."""

    @property
    def classifier(self) -> Any:
        """The model whose `logits` are the scores (its `config` names the labels)."""
        raise NotImplementedError

    @property
    def id2label(self) -> dict[int, str]:
        return {int(index): str(label) for index, label in self.classifier.config.id2label.items()}

    def operate(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        groups = [item.inputs for item in items]  # all Score: other requests have other parameters
        truncation = Truncation.of(parameters)
        inputs = [self.cut(truncation, value) for group in groups for value in group]
        assert self.session is not None
        rows, _ = encoder_rows(self.session, self.tokenizer, inputs, self.max_input_length,
                               lambda outputs, mask: outputs["logits"])
        return regroup(rows, groups)

    def cut(self, truncation: Truncation, value: str | Pair) -> str | Pair:
        """A text cut to what the model reads. A pair's texts are each cut to that much (the tokenizer then cuts
        the longer as the pair needs), or refused (`truncate` false) when the two are too long together."""
        if isinstance(value, str):
            return truncation.cut(self.tokenizer, value, self.tokens_per_text())
        first, second = (Truncation(left=truncation.left).cut(self.tokenizer, text, self.tokens_per_text())
                         for text in value)
        if not truncation.truncate and ((first, second) != value or len(
                self.tokenizer(first, second)["input_ids"]) > self.max_input_length):
            raise BadRequest(f"a text pair must have less than {self.max_input_length} tokens with its special "
                             "tokens; send `truncate: true` to cut it")
        return first, second


def encoder_rows(session: RuntimeSession, tokenizer: Any, inputs: Sequence[str | Pair], max_length: int,
                 read: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """`read(outputs, attention mask)` of the model for every text or pair, `CHUNK` texts (then pairs) at a time in
    order of length (less padding): one float32 row per input, and how many tokens each had."""
    rows: list[np.ndarray] = [np.empty(0)] * len(inputs)
    counts = [0] * len(inputs)
    for kind in (str, tuple):
        indices = sorted((index for index, value in enumerate(inputs) if isinstance(value, kind)),
                         key=lambda index: -len("".join(inputs[index])))
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start:start + CHUNK]
            values = [inputs[index] for index in chunk]
            firsts = [value if isinstance(value, str) else value[0] for value in values]
            seconds = [value[1] for value in values if isinstance(value, tuple)] or None
            encoding = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=max_length,
                                 return_tensors="np")
            mask = encoding["attention_mask"]
            found = read(session.run(encoding), mask).astype(np.float32)
            for index, row, count in zip(chunk, found, mask.sum(axis=1).tolist(), strict=True):
                rows[index], counts[index] = row, int(count)
    return np.stack(rows), counts


def mean_pooled(outputs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The mean of each text's token vectors (its padding left out)."""
    weights = mask[..., None].astype(np.float32)
    hidden = outputs["last_hidden_state"]
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


class PipelineModel:
    """`tokenizer` and `max_input_length` of an `Operations` adapter that runs a transformers pipeline."""

    pipe: Any
    context_tokens: int | None

    @property
    def tokenizer(self) -> Any:
        return self.pipe.tokenizer

    @property
    def max_input_length(self) -> int:
        return self.context_tokens or UNKNOWN_CONTEXT


class SentenceTransformersModel:
    """`tokenizer` and `max_input_length` of an `Operations` adapter that runs a sentence-transformers model."""

    model: Any

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_input_length(self) -> int:
        return int(self.model.max_seq_length or self.tokenizer.model_max_length)
