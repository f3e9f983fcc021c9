"""question-answering: extractive answers (a span of the context), computed as the classic transformers
pipeline did (removed in transformers 5): long contexts are split into overlapping windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoModelForQuestionAnswering, BatchEncoding

from hubserve.errors import BadRequest
from hubserve.worker.backends import Export, RuntimeSession, open_runtime
from hubserve.worker.backends.torch_session import TorchSession
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter
from hubserve.worker.tasks.encodings import own_tokens, padded_batch
from hubserve.worker.tasks.loading import load_model

OUTPUTS = ("start_logits", "end_logits")


@dataclass(frozen=True)
class Settings:
    """A request's parameters, with the classic pipeline's defaults."""

    top_k: int = 1
    max_answer_len: int = 15
    doc_stride: int = 128
    max_seq_len: int = 384
    max_question_len: int = 64
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    @classmethod
    def parse(cls, parameters: dict[str, Any]) -> Settings:
        for name, value in parameters.items():
            default = getattr(cls, name)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise BadRequest(f"parameter {name} must be true or false")
            if not isinstance(default, bool) and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if name == "doc_stride" else 1)
            ):
                raise BadRequest(f"parameter {name} must be a positive integer")
        return cls(**parameters)


class QuestionAnsweringAdapter(TaskAdapter):
    """`{"question", "context"}` -> `{"score", "start", "end", "answer"}` with `answer == context[start:end]`
    (a list of the `top_k` best when top_k > 1); a list of inputs gives a list of those."""

    task = "question-answering"
    parameters = frozenset(Settings.__dataclass_fields__)

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        export = Export(model_dir, "AutoModelForQuestionAnswering", OUTPUTS, options)
        self.tokenizer = export.tokenizer
        if not self.tokenizer.is_fast:
            raise ValueError("question-answering needs a fast tokenizer (it maps tokens back to characters)")
        session = open_runtime(self, export)
        self.session: RuntimeSession = session or TorchSession(
            load_model(AutoModelForQuestionAnswering, model_dir, options), self.tokenizer.model_input_names, OUTPUTS)
        self.question_first = self.tokenizer.padding_side == "right"

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        examples = inputs if isinstance(inputs, list) else [inputs]
        shaped = self.answer_all(examples, parameters)
        return shaped if isinstance(inputs, list) else shaped[0]

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        return self.answer_all(items, parameters)  # one forward over every request's windows

    def answer_all(self, examples: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Per example, its best answer (or its `top_k` best), from one forward over all their windows."""
        self.check_parameters(parameters)
        settings = Settings.parse(parameters)
        for example in examples:
            if not (
                isinstance(example, dict)
                and isinstance(example.get("question"), str)
                and isinstance(example.get("context"), str)
            ):
                raise BadRequest('inputs must be {"question": str, "context": str} or a list of those')
            if not example["question"].strip() or not example["context"].strip():
                raise BadRequest("question and context must not be empty")
        encodings = [self.encode(example["question"], example["context"], settings) for example in examples]
        answers = [
            self.answer(encoding, example["context"], starts, ends, settings)
            for example, encoding, (starts, ends) in zip(examples, encodings, self.logits(encodings), strict=True)
        ]
        return [found[0] if settings.top_k == 1 else found for found in answers]

    def logits(self, encodings: list[BatchEncoding]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of each encoding's windows, from one forward with them all padded alike."""
        batch, width = padded_batch(self.tokenizer, encodings)
        output = self.session.run(batch)
        starts, ends = output["start_logits"], output["end_logits"]
        result, row = [], 0
        for encoding in encodings:
            rows = encoding["input_ids"].shape[0]
            kept = own_tokens(self.tokenizer, encoding, width)
            result.append((starts[row:row + rows, kept], ends[row:row + rows, kept]))
            row += rows
        return result

    def answer(self, encoding: BatchEncoding, context: str, starts: np.ndarray, ends: np.ndarray,
               settings: Settings) -> list[dict[str, Any]]:
        """The best spans of `context` given its windows' logits."""
        context_id = 1 if self.question_first else 0
        best: dict[tuple[int, int], float] = {}
        null_score = 1.0
        for index in range(len(starts)):
            allowed = np.array([sequence == context_id for sequence in encoding.sequence_ids(index)])
            cls = _cls_index(encoding, index, self.tokenizer.cls_token_id)
            usable = allowed.copy()
            usable[cls] = True  # the CLS token's score says "no answer"
            start = _softmax(np.where(usable, starts[index], -10000.0))
            end = _softmax(np.where(usable, ends[index], -10000.0))
            null_score = min(null_score, float(start[cls] * end[cls]))
            start[cls] = end[cls] = 0.0
            for first, last, score in _best_spans(start, end, allowed, settings):
                span = self.char_span(encoding, index, first, last, context_id, settings.align_to_words)
                best[span] = max(score, best.get(span, 0.0))
        answers: list[dict[str, Any]] = [
            {"score": score, "start": first, "end": last, "answer": context[first:last]}
            for (first, last), score in best.items()
        ]
        if settings.handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        return sorted(answers, key=lambda found: found["score"], reverse=True)[: settings.top_k]

    def encode(self, question: str, context: str, settings: Settings) -> BatchEncoding:
        """The (question, context) windows: the context split with `doc_stride` tokens of overlap."""
        question_tokens = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        if len(question_tokens["input_ids"]) > settings.max_question_len:
            question = question[: question_tokens["offset_mapping"][settings.max_question_len - 1][1]]
        max_seq_len = min(settings.max_seq_len, self.tokenizer.model_max_length)
        question_len = min(len(question_tokens["input_ids"]), settings.max_question_len)
        room = max_seq_len - question_len - self.tokenizer.num_special_tokens_to_add(pair=True)
        if room < 2:
            raise BadRequest(f"max_seq_len {max_seq_len} leaves no room for the context after the question")
        stride = min(settings.doc_stride, max_seq_len // 2, room - 1)
        first, second = (question, context) if self.question_first else (context, question)
        return self.tokenizer(
            first,
            second,
            padding="longest",
            truncation="only_second" if self.question_first else "only_first",
            max_length=max_seq_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_tensors="np",
        )

    @staticmethod
    def char_span(
        encoding: BatchEncoding, index: int, first: int, last: int, context_id: int, align_to_words: bool
    ) -> tuple[int, int]:
        """Character offsets in the context of tokens `first`..`last`, widened to whole words if asked."""
        window = encoding[index]
        if align_to_words:
            first_word, last_word = window.token_to_word(first), window.token_to_word(last)
            if first_word is not None and last_word is not None:
                start = window.word_to_chars(first_word, context_id)
                end = window.word_to_chars(last_word, context_id)
                if start is not None and end is not None:
                    return start[0], end[1]
        return window.offsets[first][0], window.offsets[last][1]

    def warmup(self) -> None:
        self.predict({"question": "Where do I live?", "context": "My name is Sarah and I live in London"}, {})


def _cls_index(encoding: BatchEncoding, index: int, cls_token_id: int | None) -> int:
    ids = encoding["input_ids"][index].tolist()
    return ids.index(cls_token_id) if cls_token_id in ids else 0


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def _best_spans(
    start: np.ndarray, end: np.ndarray, allowed: np.ndarray, settings: Settings
) -> list[tuple[int, int, float]]:
    """The `top_k` best (first token, last token, score) spans of at most `max_answer_len` tokens."""
    scores = np.tril(np.triu(np.outer(start, end)), settings.max_answer_len - 1)
    scores[~allowed, :] = 0.0
    scores[:, ~allowed] = 0.0
    flat = scores.ravel()
    count = min(settings.top_k, int(np.count_nonzero(flat)))
    order = np.argsort(-flat, kind="stable")[:count]
    firsts, lasts = np.unravel_index(order, scores.shape)
    return [
        (int(first), int(last), float(scores[first, last])) for first, last in zip(firsts, lasts, strict=True)
    ]
