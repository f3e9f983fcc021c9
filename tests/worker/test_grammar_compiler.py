"""The grammar compiler's llguidance tokenizer: built in the background from a snapshot of the model's tokenizer at
load (`prepare`), the same as llguidance builds it from the tokenizer itself, and refused with the reason for a
tokenizer llguidance cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import llguidance
import llguidance.hf
import pytest
from transformers.models.ctrl.tokenization_ctrl import CTRLTokenizer

from hubserve.errors import BadRequest
from hubserve.worker.generation.grammar import GrammarCompiler
from tiny_models import chat_tokenizer

TEXTS = ("Hello world!", '{"name": "Ada", "age": 36}', "  spaces\tand\nlines ", "<s>special</s>")


def test_the_tokenizer_prepared_from_a_snapshot_is_llguidances_own() -> None:
    tokenizer = chat_tokenizer()
    eos = [tokenizer.eos_token_id]
    compiler = GrammarCompiler(tokenizer, len(tokenizer), eos)
    compiler.prepare()
    prepared = compiler.ll_tokenizer
    own = llguidance.hf.from_tokenizer(tokenizer, len(tokenizer), eos)
    assert prepared.vocab_size == own.vocab_size and prepared.eos_tokens == own.eos_tokens
    for text in TEXTS:
        assert prepared.tokenize_str(text) == own.tokenize_str(text)
    # It serves the grammars: a row's matcher allows what the grammar does.
    grammar = compiler.compile({"type": "regex", "value": "(yes|no)"})
    assert not grammar.matcher().is_error()


def test_a_tokenizer_llguidance_cannot_take_refuses_grammars_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "a@@": 2, "<unk>": 3}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    slow = CTRLTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))  # Python: no Rust one
    compiler = GrammarCompiler(slow, len(slow), [slow.eos_token_id])
    compiler.prepare()
    for _ in range(2):  # and again for the next request
        with pytest.raises(BadRequest, match="`grammar` is not available for this model: Only fast tokenizers"):
            compiler.compile({"type": "json"})
