"""Constrained decoding with llguidance: a request's `grammar` (any JSON object, a JSON schema, a regex) compiled
once against the model's tokenizer, then one matcher per row, which masks that row's logits at every step to the
tokens the grammar allows and ends the row once the grammar is complete."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.hf
import numpy as np
import tokenizers
import torch

from hubserve.errors import BadRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

JSON_TYPES = ("json", "json_object", "json_schema")
# JSON as `json.dumps` writes it: no free whitespace, which small models otherwise repeat until the length runs out.
JSON_LAYOUT: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Keys of OpenAI's `json_schema` object around the schema itself.
SCHEMA_WRAPPER = frozenset({"name", "description", "schema", "strict"})


@dataclass(frozen=True)
class Grammar:
    """A request's grammar, compiled and checked: each row takes a fresh `matcher()` of it."""

    compiled: llguidance.LLMatcher

    def matcher(self) -> llguidance.LLMatcher:
        return self.compiled.deep_copy()


class GrammarCompiler:
    """Compiles requests' grammars for one model, over its llguidance tokenizer (about a third of a second to build
    for a large vocabulary), which `prepare` starts building in the background at load and the first grammar
    otherwise builds; `tokenizer` is the callers' (only the compiling thread uses it once requests come)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_ids = list(eos_ids)
        self._lock = threading.Lock()
        self._built: llguidance.LLTokenizer | None = None
        self._refused: str | None = None  # why this model takes no grammar

    def prepare(self) -> None:
        """Start building the llguidance tokenizer on another thread, from a copy of the tokenizer's JSON taken now,
        while no request uses the tokenizer (a fast tokenizer refuses to be read while a call reconfigures it)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        snapshot = backend.to_str() if backend is not None else None
        threading.Thread(target=self._build, args=(snapshot,), name="grammar-tokenizer", daemon=True).start()

    @property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """The llguidance tokenizer, once built (waiting for a build under way); BadRequest for a model that has
        none."""
        built = self._built if self._built is not None else self._build()
        if built is None:
            raise BadRequest(f"`grammar` is not available for this model: {self._refused}")
        return built

    def _build(self, snapshot: str | None = None) -> llguidance.LLTokenizer | None:
        with self._lock:
            if self._built is None and self._refused is None:
                try:
                    self._built = self._from(snapshot) if snapshot is not None else llguidance.hf.from_tokenizer(
                        self.tokenizer, self.vocab_size, self.eos_ids or None)
                except ValueError as exc:  # e.g. a slow (Python) tokenizer
                    self._refused = str(exc)
            return self._built

    def _from(self, snapshot: str) -> llguidance.LLTokenizer:
        """llguidance's tokenizer from the tokenizer's JSON, as `llguidance.hf.from_tokenizer` makes it from the
        tokenizer (padding and truncation off)."""
        backend = tokenizers.Tokenizer.from_str(snapshot)
        backend.no_padding()
        backend.no_truncation()
        eos: int | list[int] | None = self.eos_ids or getattr(self.tokenizer, "eos_token_id", None)
        return llguidance.LLTokenizer(backend.to_str(), n_vocab=self.vocab_size, eos_token=eos)

    def compile(self, spec: Any) -> Grammar:
        """The request's `grammar` ({"type": "json"|"json_object"|"json_schema"|"regex", "value": ...}), or a
        BadRequest naming it with llguidance's reason."""
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar_text(spec), log_level=0)
        if matcher.is_error():
            raise BadRequest(f"invalid `grammar`: {matcher.get_error()}")
        return Grammar(matcher)


def grammar_text(spec: Any) -> str:
    """llguidance's grammar for a request's `grammar` object."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in (*JSON_TYPES, "regex"):
        raise BadRequest('`grammar` must be an object whose "type" is "json", "json_object", "json_schema" or "regex"')
    value = spec.get("value")
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise BadRequest('a `grammar` of type "regex" needs its regex as a non-empty string "value"')
        return str(llguidance.LLMatcher.grammar_from_regex(value))
    try:
        return str(llguidance.LLMatcher.grammar_from_json_schema(json_schema(value), defaults=JSON_LAYOUT))
    except ValueError as exc:
        raise BadRequest(f"invalid `grammar` schema: {exc}") from None


def json_schema(value: Any) -> dict[str, Any]:
    """The schema a JSON grammar's `value` gives: any object when none; a JSON string is parsed (TGI takes both);
    OpenAI's {"name", "schema", "strict"} stands for its schema."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"the `grammar` schema is not valid JSON: {exc}") from None
    if not value:
        return {"type": "object"}
    if not isinstance(value, dict):
        raise BadRequest("the `grammar` schema must be a JSON object")
    if "schema" in value and set(value) <= SCHEMA_WRAPPER:
        return json_schema(value["schema"])
    return value


def grammar_vocab_size(model_vocab: int, tokenizer: Any) -> int:
    """The vocabulary llguidance works over: the model's output size, or the tokenizer's when it has more entries
    (a tokenizer may hold tokens the model never predicts; llguidance needs every one)."""
    return max(model_vocab, len(tokenizer))


def refused_tokens(matchers: Sequence[llguidance.LLMatcher], grammar_vocab: int, vocab_size: int,
                   device: torch.device) -> torch.Tensor:
    """Which tokens each matcher refuses next: a boolean (len(matchers), vocab_size) tensor (the model's logits'
    width, out of the `grammar_vocab` llguidance works over). llguidance fills the rows' bitmasks of allowed tokens
    in one call, in parallel and outside the GIL (as `llguidance.torch.fill_next_token_bitmask_par`, whose module
    compiles a kernel with torch.compile on import); numpy inverts and unpacks the bits (bit i of word j is token
    32 * j + i)."""
    bitmask = np.empty((len(matchers), (grammar_vocab + 31) // 32), dtype=np.int32)
    rows = [(matcher, row) for row, matcher in enumerate(matchers)]
    executor().unsafe_compute_mask_ptr(rows, bitmask.ctypes.data, bitmask.shape[1] * 4, bitmask.shape[0])
    bits = np.unpackbits(np.invert(bitmask).view(np.uint8), axis=1, bitorder="little")[:, :vocab_size]
    return torch.from_numpy(bits.view(np.bool_)).to(device)


@functools.cache
def executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor()
