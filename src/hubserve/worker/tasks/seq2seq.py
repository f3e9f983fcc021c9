"""summarization, translation and text2text-generation with a seq2seq model and `generate()`, shaped as the
classic transformers pipelines (removed in transformers 5) returned them."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoModelForSeq2SeqLM

from hubserve.errors import BadRequest
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter, unused_parameters_message
from hubserve.worker.tasks.generation import (
    GENERATION_PARAMETERS,
    check_generation_parameters,
    with_length_default,
)
from hubserve.worker.tasks.loading import load_model, load_tokenizer
from hubserve.worker.tasks.pipeline import require_texts

TRANSLATION_TASK = re.compile(r"^translation_(?P<src>[^_]+)_to_(?P<tgt>[^_]+)$")


class Text2TextGenerationAdapter(TaskAdapter):
    """`[{"generated_text"}]` for a string (one per `num_return_sequences`); for a list of strings, one such
    dict per string (a list of lists when several sequences are returned)."""

    task = "text2text-generation"
    output_key: ClassVar[str] = "generated_text"
    own_parameters: ClassVar[frozenset[str]] = frozenset(
        {"clean_up_tokenization_spaces", "truncation", "generate_parameters"}
    )

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        self.tokenizer = load_tokenizer(model_dir, options)
        self.model: Any = load_model(AutoModelForSeq2SeqLM, model_dir, options)  # a GenerationMixin too
        # As the classic pipelines did: a T5-style model's task_specific_params give a prefix and defaults.
        self.task_specific = getattr(self.model.config, "task_specific_params", None) or {}
        specific = self.task_specific.get(self.task_key(), {})
        self.prefix: str = specific.get("prefix") or ""
        self.defaults = {name: value for name, value in specific.items() if name in GENERATION_PARAMETERS}

    def task_key(self) -> str:
        """The key of this task in the model's `task_specific_params`."""
        return self.task

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        unknown = set(parameters) - self.own_parameters - GENERATION_PARAMETERS
        extra = parameters.get("generate_parameters", {})
        if not isinstance(extra, dict):
            raise BadRequest("generate_parameters must be an object of generation parameters")
        unknown |= {f"generate_parameters.{name}" for name in set(extra) - GENERATION_PARAMETERS}
        if unknown:
            raise BadRequest(unused_parameters_message(sorted(unknown), self.task))

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        texts = require_texts(inputs)
        results = self.generate([texts] if isinstance(texts, str) else texts, parameters)
        if isinstance(texts, str):
            return results[0]
        return [result[0] for result in results] if len(results[0]) == 1 else results

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        texts = [require_texts(item) for item in items]  # single inputs: strings (lists never reach here)
        return self.generate(texts, parameters)  # one padded generate() for every request's text

    def generate(self, batch: list[str], parameters: dict[str, Any]) -> list[list[dict[str, str]]]:
        """One `generate()` over `batch`; per text, its `num_return_sequences` answers."""
        self.check_parameters(parameters)
        generate_kwargs = {name: value for name, value in parameters.items() if name in GENERATION_PARAMETERS}
        generate_kwargs = {**self.defaults, **generate_kwargs, **parameters.get("generate_parameters", {})}
        try:
            encoded = self.tokenize([self.prefix + text for text in batch], parameters)
        except ValueError as exc:
            raise BadRequest(f"invalid parameters for {self.task}: {exc}") from None
        generate_kwargs = {**encoded.pop("generate_kwargs", {}), **generate_kwargs}
        check_generation_parameters(self.model.generation_config, generate_kwargs)
        with torch.inference_mode():
            output = self.model.generate(
                **{name: tensor.to(self.model.device) for name, tensor in encoded.items()},
                **with_length_default(self.model.generation_config, generate_kwargs),
            )
        decoded = self.tokenizer.batch_decode(
            output,
            skip_special_tokens=True,
            clean_up_tokenization_spaces=parameters.get("clean_up_tokenization_spaces"),
        )
        per_input = len(decoded) // len(batch)
        return [
            [{self.output_key: text} for text in decoded[i * per_input : (i + 1) * per_input]]
            for i in range(len(batch))
        ]

    def tokenize(self, texts: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
        """Model inputs for `texts`, plus generation arguments the encoding implies under "generate_kwargs"."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=parameters.get("truncation", False), return_tensors="pt"
        )
        return {name: encoded[name] for name in self.tokenizer.model_input_names if name in encoded}

    def warmup(self) -> None:
        self.predict("warm up", {"max_new_tokens": 1})


class SummarizationAdapter(Text2TextGenerationAdapter):
    """`[{"summary_text"}]`."""

    task = "summarization"
    output_key = "summary_text"


class TranslationAdapter(Text2TextGenerationAdapter):
    """`[{"translation_text"}]`; `src_lang`/`tgt_lang` for multilingual tokenizers (mBART, M2M100, NLLB),
    defaulting to those of a `translation_xx_to_yy` task name, then to those the tokenizer is configured with."""

    task = "translation"
    output_key = "translation_text"
    own_parameters = Text2TextGenerationAdapter.own_parameters | {"src_lang", "tgt_lang"}

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        # Read once: translating sets the tokenizer's src_lang.
        self.tokenizer_languages = (
            getattr(self.tokenizer, "src_lang", None),
            getattr(self.tokenizer, "tgt_lang", None),
        )

    def task_key(self) -> str:
        # As the classic pipeline: plain "translation" on a T5-style model means its first translation_xx_to_yy.
        if self.task == "translation":
            return next((key for key in self.task_specific if key.startswith("translation")), self.task)
        return self.task

    def default_languages(self) -> tuple[str | None, str | None]:
        named = TRANSLATION_TASK.match(self.task_key())
        return (named["src"], named["tgt"]) if named else self.tokenizer_languages

    def tokenize(self, texts: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(self.tokenizer, "_build_translation_inputs"):
            if {"src_lang", "tgt_lang"} & set(parameters):
                raise BadRequest("this model's tokenizer takes no src_lang/tgt_lang: leave them out")
            return super().tokenize(texts, parameters)
        src_default, tgt_default = self.default_languages()
        src_lang = parameters.get("src_lang", src_default)
        tgt_lang = parameters.get("tgt_lang", tgt_default)
        if not isinstance(src_lang, str) or not isinstance(tgt_lang, str):
            raise BadRequest("this model needs parameters src_lang and tgt_lang: language codes it knows")
        try:
            encoded = self.tokenizer._build_translation_inputs(
                texts,
                return_tensors="pt",
                src_lang=src_lang,
                tgt_lang=tgt_lang,
                padding=True,
                truncation=parameters.get("truncation", False),
            )
        except KeyError:  # M2M100 looks the codes up in a table
            raise BadRequest(
                f"unknown language code in src_lang {src_lang!r} or tgt_lang {tgt_lang!r}"
            ) from None
        # Language codes are special tokens: an unknown one becomes the unknown token or a plain one.
        codes = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        special = [
            *getattr(self.tokenizer, "prefix_tokens", []),
            *getattr(self.tokenizer, "suffix_tokens", []),
        ]
        checks = (("src_lang", src_lang, special), ("tgt_lang", tgt_lang, [encoded["forced_bos_token_id"]]))
        for name, language, token_ids in checks:
            if not set(token_ids) <= codes:
                raise BadRequest(f"unknown language code in {name}: {language!r}")
        inputs = {name: encoded[name] for name in self.tokenizer.model_input_names if name in encoded}
        return {**inputs, "generate_kwargs": {"forced_bos_token_id": int(encoded["forced_bos_token_id"])}}

    def warmup(self) -> None:
        # A multilingual model cannot translate without languages: warm up only when they are known.
        if not hasattr(self.tokenizer, "_build_translation_inputs") or all(self.default_languages()):
            super().warmup()


@functools.cache
def translation_adapter(task: str) -> type[TranslationAdapter]:
    """The adapter for a `translation_xx_to_yy` task: translation with xx and yy as default languages."""
    return type("TranslationAdapter", (TranslationAdapter,), {"task": task, "__module__": __name__})
