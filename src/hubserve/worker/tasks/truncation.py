"""How many tokens a model reads (`context_length`), and long texts cut before a tokenizer sees them whole: to
their first tokens (`leading_text`), to their last (`trailing_ids`), or refused as soon as they are known to be too
long (`prompt_ids`). A 6 MB text then costs what its first (or last) few hundred tokens cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hubserve.errors import BadRequest
from hubserve.worker.generation.types import check_input_tokens

# A tokenizer's `model_max_length` above this is transformers' "no limit known" placeholder (int(1e30)), not a
# context length.
SANE_MODEL_MAX_LENGTH = 10**9
# The first guess of how many characters hold a token (English averages about 4); too few only costs a doubling.
CHARS_PER_TOKEN = 4


def context_length(config: Any, tokenizer: Any) -> int | None:
    """The most tokens the model takes in one sequence: its (text) config's `max_position_embeddings` and its
    tokenizer's `model_max_length` when that is a real one, the smaller; None when neither tells."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    lengths = [
        getattr(text_config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    known = [length for length in lengths if isinstance(length, int) and 0 < length < SANE_MODEL_MAX_LENGTH]
    return min(known, default=None)


def leading_text(tokenizer: Any, text: str, tokens: int) -> str:
    """The start of `text` that tokenizes to its first `tokens` tokens (special tokens aside; fewer when the last
    of them shares a character with the next); all of it when it has no more. Only a prefix of about twice the kept
    size is ever tokenized: it grows (doubling) from a guess until its tokens past the first `tokens` include the
    start of another word, since the cut may have split its last word (and a word's tokens depend on all of it).
    A slow tokenizer (no offsets) gets the text whole."""
    if tokens < 1 or not getattr(tokenizer, "is_fast", False):
        return "" if tokens < 1 else text
    for whole, _, encoding in windows(tokenizer, text, tokens, from_end=False):
        offsets = encoding["offset_mapping"]
        if len(offsets) <= tokens and whole:
            return text
        if len(offsets) > tokens:
            words = encoding.word_ids()
            if whole or words[tokens - 1] != words[-1]:
                (start, end), after = offsets[tokens - 1], offsets[tokens][0]
                # A byte-level BPE may split a character into several tokens: never keep part of one.
                return text[: after if start <= after < end else end]
    raise AssertionError("the last window is the whole text")  # pragma: no cover


def trailing_ids(tokenizer: Any, text: str, tokens: int) -> list[int]:
    """The ids of the last `tokens` tokens of `text` (no special tokens added), tokenizing only a suffix of about
    twice that: it grows (doubling) from a guess until its first word, which the cut may have split, lies before
    the tokens kept. A slow tokenizer (no word ids) gets the text whole."""
    size = tokens * CHARS_PER_TOKEN
    while True:
        whole = size >= len(text) or not getattr(tokenizer, "is_fast", False)
        encoding = tokenizer(text if whole else text[-size:], add_special_tokens=False)
        ids: list[int] = list(encoding["input_ids"])
        if whole:
            return ids[-tokens:]
        if len(ids) > tokens:
            words = encoding.word_ids()
            if words[0] is None or words[0] != words[len(ids) - tokens]:
                return ids[-tokens:]
        size *= 2


def trailing_text(tokenizer: Any, text: str, tokens: int) -> str:
    """The end of `text` that tokenizes to at most its last `tokens` tokens (special tokens aside), starting at a
    word: a word cut in two would tokenize differently alone. All of it when it has no more; only a suffix of about
    twice the kept size is tokenized, as in `trailing_ids`. A slow tokenizer (no offsets) gets the text whole."""
    if tokens < 1 or not getattr(tokenizer, "is_fast", False):
        return "" if tokens < 1 else text
    for whole, suffix, encoding in windows(tokenizer, text, tokens, from_end=True):
        offsets, words = encoding["offset_mapping"], encoding.word_ids()
        if len(offsets) <= tokens and whole:
            return text
        if len(offsets) > tokens:
            first = len(offsets) - tokens
            while first < len(offsets) and words[first] is not None and words[first] == words[first - 1]:
                first += 1
            if whole or words[0] != words[min(first, len(offsets) - 1)]:
                return suffix[offsets[first][0]:] if first < len(offsets) else ""
    raise AssertionError("the last window is the whole text")  # pragma: no cover


def windows(tokenizer: Any, text: str, tokens: int, *, from_end: bool) -> Iterator[tuple[bool, str, Any]]:
    """Ever larger pieces of `text` from its start (or end), from a guess of `tokens` tokens' length, doubling, each
    with its encoding (offsets included) and whether it is the whole text, which comes last."""
    size = tokens * CHARS_PER_TOKEN
    while True:
        whole = size >= len(text)
        piece = text if whole else (text[-size:] if from_end else text[:size])
        yield whole, piece, tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
        if whole:
            return
        size *= 2


def prompt_ids(tokenizer: Any, text: str, *, truncate: int | None, max_input_tokens: int | None) -> list[int]:
    """A prompt's ids (no special tokens added) as far as a generation can use them: its last `truncate` (TGI's
    `truncate`), else all of them, unless it has over `max_input_tokens`: then a BadRequest, from its first
    tokens only."""
    if truncate is not None:
        return trailing_ids(tokenizer, text, truncate)
    if max_input_tokens is not None and leading_text(tokenizer, text, max_input_tokens + 1) != text:
        raise BadRequest(f"`inputs` must have less than {max_input_tokens} tokens. Given: more than "
                         f"{max_input_tokens + 1}")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    check_input_tokens(len(ids), max_input_tokens)
    return ids


def cut_texts(value: Any, tokenizer: Any, tokens: int) -> Any:
    """`value` with every string in it (alone, in lists, as the values of a dict such as a text pair) cut to its
    first `tokens` tokens."""
    if isinstance(value, str):
        return leading_text(tokenizer, value, tokens)
    if isinstance(value, list | tuple):
        return [cut_texts(item, tokenizer, tokens) for item in value]
    if isinstance(value, dict):
        return {key: cut_texts(item, tokenizer, tokens) for key, item in value.items()}
    return value
