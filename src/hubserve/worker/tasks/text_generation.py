"""text-generation: the transformers pipeline over a causal LM (also GGUF), for prompts or chat messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hubserve.errors import BadRequest
from hubserve.worker.tasks.base import LoadOptions
from hubserve.worker.tasks.generation import (
    GENERATION_PARAMETERS,
    check_generation_parameters,
    with_length_default,
)
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts

# Names clients use for stop strings; the pipeline takes them as `stop_sequence`.
STOP_ALIASES = ("stop", "stop_sequences", "stop_strings")
PIPELINE_PARAMETERS = frozenset(
    {
        "return_full_text",
        "return_text",
        "return_tensors",
        "clean_up_tokenization_spaces",
        "prefix",
        "handle_long_generation",
        "stop_sequence",
        "truncation",
        "continue_final_message",
        "skip_special_tokens",
        "tokenizer_encode_kwargs",
        "tools",
        "documents",
    }
)


def is_chat(inputs: Any) -> bool:
    """Whether `inputs` is one conversation: a non-empty list of {"role", "content"} messages."""
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(message, dict) and {"role", "content"} <= set(message) for message in inputs)
    )


class TextGenerationAdapter(PipelineAdapter):
    """`[{"generated_text": str}]` per prompt (the prompt included unless `return_full_text` is false); for chat
    messages, `[{"generated_text": [...the messages, {"role": "assistant", "content": reply}]}]`."""

    task = "text-generation"
    parameters = GENERATION_PARAMETERS | PIPELINE_PARAMETERS | frozenset(STOP_ALIASES)
    warmup_inputs = "warm up"
    warmup_parameters = {"max_new_tokens": 1}

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        # What the pipeline's generate() calls start from: the model's config, sampling or not as the pipeline
        # defaults to when the model's config does not say (which decides what other parameters are valid).
        self.generation_config = copy.deepcopy(self.pipe.model.generation_config)
        defaults = self.pipe._default_generation_config
        if defaults is not None and "do_sample" not in self.generation_config.to_diff_dict():
            self.generation_config.do_sample = defaults.do_sample

    def prepare(self, inputs: Any) -> Any:
        if isinstance(inputs, dict) and "messages" in inputs:
            inputs = inputs["messages"]
        chats = [inputs] if is_chat(inputs) else inputs
        if isinstance(chats, list) and chats and all(is_chat(chat) for chat in chats):
            if getattr(self.pipe.tokenizer, "chat_template", None) is None:
                raise BadRequest("this model has no chat template: send a prompt string instead of messages")
            return inputs
        return require_texts(inputs)

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        stops = [parameters.pop(name) for name in (*STOP_ALIASES, "stop_sequence") if name in parameters]
        if stops:
            flat = [stop for value in stops for stop in (value if isinstance(value, list) else [value])]
            if not all(isinstance(stop, str) and stop for stop in flat):
                raise BadRequest("stop sequences must be non-empty strings")
            parameters["stop_sequence"] = flat
        check_generation_parameters(self.generation_config, parameters)
        return with_length_default(self.pipe.model.generation_config, parameters)
