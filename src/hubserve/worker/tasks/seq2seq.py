"""summarization, translation and text2text-generation with a seq2seq model and `generate()`, shaped as the
classic transformers pipelines (removed in transformers 5) returned them; inputs and generated lengths are held to
the model's context (a longer text is a 400 unless the request asks `truncation`)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoModelForSeq2SeqLM

from hubserve.errors import BadRequest
from hubserve.worker.generation.params import new_tokens
from hubserve.worker.generation.types import check_input_tokens
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter, unused_parameters_message
from hubserve.worker.tasks.generation import (
    GENERATION_PARAMETER_TYPES,
    GENERATION_PARAMETERS,
    LENGTH_PARAMETERS,
    check_generation_parameters,
    with_length_default,
)
from hubserve.worker.tasks.loading import load_model, load_tokenizer
from hubserve.worker.tasks.parameter_types import BOOLEAN, OBJECT, STRING, TRUNCATION, check_types
from hubserve.worker.tasks.pipeline import require_text, require_texts
from hubserve.worker.tasks.truncation import context_length, cut_texts

TRANSLATION_TASK = re.compile(r"^translation_(?P<src>[^_]+)_to_(?P<tgt>[^_]+)$")


class Text2TextGenerationAdapter(TaskAdapter):
    """`[{"generated_text"}]` for a string (one per `num_return_sequences`); for a list of strings, one such
    dict per string (a list of lists when several sequences are returned)."""

    task = "text2text-generation"
    output_key: ClassVar[str] = "generated_text"
    own_parameters: ClassVar[frozenset[str]] = frozenset(
        {"clean_up_tokenization_spaces", "truncation", "generate_parameters"}
    )
    parameter_types = {**GENERATION_PARAMETER_TYPES, "clean_up_tokenization_spaces": BOOLEAN,
                       "truncation": TRUNCATION, "generate_parameters": OBJECT, "src_lang": STRING, "tgt_lang": STRING}

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        self.tokenizer = load_tokenizer(model_dir, options)
        self.model: Any = load_model(AutoModelForSeq2SeqLM, model_dir, options)  # a GenerationMixin too
        # As the classic pipelines did: a T5-style model's task_specific_params give a prefix and defaults.
        self.task_specific = getattr(self.model.config, "task_specific_params", None) or {}
        specific = self.task_specific.get(self.task_key(), {})
        self.prefix: str = specific.get("prefix") or ""
        self.defaults = {name: value for name, value in specific.items() if name in GENERATION_PARAMETERS}
        # The most tokens the encoder reads, and the decoder's positions: the most tokens it can generate.
        self.context = context_length(self.model.config, self.tokenizer)
        decoder = self.model.config.get_text_config(decoder=True)
        self.decoder_positions: int | None = getattr(decoder, "max_position_embeddings", None)

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
        check_types(parameters, self.parameter_types)
        check_types(extra, GENERATION_PARAMETER_TYPES, within="generate_parameters.")

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        texts = require_texts(inputs)
        results = self.generate([texts] if isinstance(texts, str) else texts, parameters)
        if isinstance(texts, str):
            return results[0]
        return [result[0] for result in results] if len(results[0]) == 1 else results

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        texts = [require_text(item) for item in items]  # single inputs: strings (lists never reach here)
        return self.generate(texts, parameters)  # one padded generate() for every request's text

    def generate(self, batch: list[str], parameters: dict[str, Any]) -> list[list[dict[str, str]]]:
        """One `generate()` over `batch`; per text, its `num_return_sequences` answers."""
        self.check_parameters(parameters)
        generate_kwargs = {name: value for name, value in parameters.items() if name in GENERATION_PARAMETERS}
        requested = {**generate_kwargs, **parameters.get("generate_parameters", {})}
        generate_kwargs = {**self.defaults, **requested}
        texts = [self.prefix + text for text in batch]
        if self.truncation(parameters) and self.context is not None:  # only what the encoder reads is tokenized
            texts = cut_texts(texts, self.tokenizer, self.context - self.tokenizer.num_special_tokens_to_add())
        try:
            encoded = self.tokenize(texts, parameters)
        except ValueError as exc:
            raise BadRequest(f"invalid parameters for {self.task}: {exc}") from None
        for count in encoded["attention_mask"].sum(dim=1).tolist() if "attention_mask" in encoded else []:
            check_input_tokens(count, self.context)
        generate_kwargs = {**encoded.pop("generate_kwargs", {}), **generate_kwargs}
        check_generation_parameters(self.model.generation_config, generate_kwargs)
        generate_kwargs = self.fitted(with_length_default(self.model.generation_config, generate_kwargs),
                                      explicit=any(requested.get(name) is not None for name in LENGTH_PARAMETERS))
        with torch.inference_mode():
            output = self.model.generate(
                **{name: tensor.to(self.model.device) for name, tensor in encoded.items()}, **generate_kwargs
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

    def fitted(self, generate_kwargs: dict[str, Any], explicit: bool) -> dict[str, Any]:
        """`generate_kwargs` generating no more tokens than the decoder has positions: a length the request set
        (`explicit`) over it is a BadRequest, a defaulted one is reduced."""
        config = copy.deepcopy(self.model.generation_config)
        config.update(**generate_kwargs)
        most = new_tokens(config, 1)  # an encoder-decoder's max_length counts the decoder's start token
        if self.decoder_positions is None or most <= self.decoder_positions:
            return generate_kwargs
        if explicit:
            raise BadRequest(f"`max_new_tokens` must be <= {self.decoder_positions} for this model. Given: {most}")
        fitted = {name: value for name, value in generate_kwargs.items() if name != "max_length"}
        return {**fitted, "max_new_tokens": self.decoder_positions}

    def truncation(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The tokenizer's truncation arguments for a request: none unless it asks `truncation`, then to the
        model's context (a tokenizer may know none)."""
        truncation = parameters.get("truncation", False)
        if truncation in (False, "do_not_truncate"):
            return {}
        return {"truncation": truncation, "max_length": self.context}

    def tokenize(self, texts: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
        """Model inputs for `texts`, plus generation arguments the encoding implies under "generate_kwargs"."""
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt", **self.truncation(parameters))
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
                **self.truncation(parameters),
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
