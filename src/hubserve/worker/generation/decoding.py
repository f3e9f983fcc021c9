"""Incremental detokenization of one request (TGI's prefix/read offsets: decode a short window, emit what it adds,
hold back text ending in an incomplete UTF-8 character) and stop-sequence matching on the text so far."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Prompt tokens decoded before the first generated one, so that it gets the leading space it would have in context.
CONTEXT_TOKENS = 5


class TextStream:
    """The text of one request's generated tokens, one token at a time."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int], stop: Sequence[str]) -> None:
        self._decode = raw_decoder(tokenizer)
        self.ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = tuple(stop)
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.text = ""  # the generated text so far, special tokens left out: what stop sequences match against

    def push(self, token_id: int, special: bool) -> str:
        """Add a token: the text it adds (a special token's text is its own, kept out of `text`)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        added = after[len(before) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        if not special:
            self.text += added
        return added

    def stopped(self, added: str) -> bool:
        """Whether the text now contains a stop sequence (searching only where `added` can have completed one)."""
        if not self.stop or not added:
            return False
        tail = self.text[-(len(added) + self.longest_stop - 1) :]
        return any(stop in tail for stop in self.stop)


def raw_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """`tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)`: straight from the Rust
    tokenizer when transformers' decode would only hand the ids to it (its wrappers cost several times the decode of
    a few tokens, twice a token), else through transformers."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._decode is TokenizersBackend._decode and backend:
        decode: Callable[..., str] = backend.decode
        return lambda ids: decode(ids, skip_special_tokens=False)

    def through_transformers(ids: list[int]) -> str:
        text: str = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text

    return through_transformers
