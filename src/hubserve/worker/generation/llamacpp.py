"""A GGUF file on llama.cpp as the scheduler's `BatchModel`: its own quantised weights, one `llama_context` with
one sequence per row, driven through llama-cpp-python's low-level API. The scheduler keeps doing everything else
(continuous batching, sampling, stop strings, grammars, streaming, cancellation): llama.cpp runs the forwards and
hands back logits.

Each sequence has a KV cache of its own (llama.cpp's non-unified cache: one stream per sequence, as llama-server's
slots with `--parallel`), emptied before the next row takes it, so a row's tokens sit where a fresh context puts them.
One cache shared by all rows (`kv_unified`) has each row attend over every row's cells: measured, a step took
1.27-1.50x as long without flash attention, 1.10-1.16x with it.

By default the context runs as llama-server does: flash attention on, and the prompts admitted together prefilled
in shared forwards of FORWARD_TOKENS tokens. A request decoded alone answers as llama.cpp's own generation with
flash attention (`Llama(..., flash_attn=True)`) token for token; beside other rows its logits may change in their
last bits, as on llama-server: flash attention's kernels change with the batch (ggml's CPU kernel splits the cache
across threads for a lone one-token row once it attends to 512 cells or more, a row past 256 tokens, and not for a
row decoded beside others; it tiles a prompt piece of many tokens, not a short one), so a greedy answer can part
from its lone one at a near tie. Measured, interleaved step by step (SmolLM2-135M, 2 threads, a shared 2-core
machine at load 2.6-5): a step with flash attention takes 0.92x the time of one without for 1 row (bf16 and Q4_1),
0.73x (bf16) and 0.82x (Q4_1) for 16 rows.

Batch-invariant (`engine.batch_invariant`), every row's logits are bit for bit those of llama.cpp running that
request alone (`Llama(...)`'s defaults), whatever else is in the batch, because each computes as it would there:
flash attention is off, and each prompt is prefilled on its own, in the same pieces as llama.cpp's (FORWARD_TOKENS
from its start): a matrix product over one token runs other kernels than one over several.

A decode step's rows are handed to llama.cpp in the order of their sequence ids, and rows take the lowest free ids:
llama.cpp decodes a run of consecutive sequences in one pass, and one pass more for each gap.

Rows that share a prompt prefix copy its sequence's cache; a long prompt's chunks build up a sequence the row then
adopts. Sequences of rows and prefixes that go away are emptied on the generation thread, at the next forward.

llama.cpp runs a forward on OpenMP threads (llama-cpp-python's build, as llama-server's), which wait for each other
after every operation in an OpenMP barrier (the libgomp torch loads: the two share it). The barriers spin only while
the process has no more OpenMP threads than cores, so every forward runs on the one generation thread, and torch
runs there on one thread (`torch_threads`): a second thread's team made a step 1.7x as long (measured, 2 cores), its
barriers sleeping and waking instead. This is also why ggml's polling threadpool (llama-server's `--poll`) is not
attached: with OpenMP, ggml computes on OpenMP's threads whatever threadpool a context has.
"""

from __future__ import annotations

import atexit
import ctypes
import heapq
import logging
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp._utils
import numpy as np
import torch

from hubserve.worker.generation.batch import PAD, left_padded
from hubserve.worker.huge_pages import Collapsed, NewMemory, collapse
from hubserve.worker.torch_threads import on_new_thread

log = logging.getLogger("hubserve.worker.generation")

# Tokens in one llama_decode (llama.cpp's n_batch and n_ubatch, and `Llama(...)`'s): a step's rows, or one piece of
# a prompt; prompts are prefilled in pieces of this size from their start, as llama.cpp's own generation does.
FORWARD_TOKENS = 512
# Sequences beyond the rows: the kept shared prefix, and a long prompt being prefilled in chunks.
SPARE_SEQUENCES = 2
# llama.cpp's most sequences in one context (LLAMA_MAX_SEQ).
MAX_SEQUENCES = 256
# Columns a batch's token ids grow by at least when full (LlamaBatch.append).
TOKEN_ROOM = 64
# The KV cache of all sequences together, unless TGI's MAX_BATCH_TOTAL_TOKENS sizes it: each sequence holds a
# request's longest (max_total_tokens), so that many rows fit, or, where max_total_tokens was left to the model's
# context, as many tokens per row as fit (at least MIN_ROW_TOKENS) beside max_batch_size rows.
KV_CACHE_BYTES = 2 << 30
MIN_ROW_TOKENS = 2048
KV_PADDING = 256  # llama.cpp pads the cache it attends to: rows hold a multiple of it

# llama-cpp-python opens os.devnull twice on import and never closes it: closed at exit, not left to a ResourceWarning.
for _devnull in (llama_cpp._utils.outnull_file, llama_cpp._utils.errnull_file):
    atexit.register(_devnull.close)


def _onto_huge_pages(name: str, memory: NewMemory) -> Collapsed:
    """Move the weights llama.cpp read into `memory` onto huge pages."""
    if memory.unavailable is not None:
        return Collapsed(failure=memory.unavailable)
    moved = collapse(memory.ranges)
    log.info("llama.cpp's weights of %s: %d of %d MiB on huge pages%s", name, moved.huge >> 20, moved.size >> 20,
             f" ({moved.failure})" if moved.failure else "")
    return moved


class LlamaCppError(RuntimeError):
    """llama.cpp refused a model file or a forward."""


@dataclass(frozen=True)
class CacheShape:
    """How many rows the context decodes together, and the most tokens (prompt and generated) each holds."""

    rows: int
    row_tokens: int


class Sequences:
    """One context's sequence ids: taken by rows and prefixes, given back from any thread (a finalizer), emptied
    on the generation thread by `flush`."""

    def __init__(self, memory: Any, count: int) -> None:
        self.memory = memory
        self.free = list(range(count))  # a heap: the lowest ids are taken first
        self.released: deque[int] = deque()

    def take(self, count: int) -> list[int]:
        self.flush()
        if count > len(self.free):
            raise LlamaCppError(f"no free llama.cpp sequence for {count} more rows")
        return [heapq.heappop(self.free) for _ in range(count)]

    def release(self, seqs: list[int]) -> None:
        """Give back `seqs` (emptying the list: its owner holds none any more)."""
        self.released.extend(seqs)
        seqs.clear()

    def flush(self) -> None:
        while self.released:
            seq = self.released.popleft()
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            heapq.heappush(self.free, seq)


@dataclass
class LlamaPrefix:
    """Prompt tokens held in a sequence of their own (`seqs`: its id, until it goes) of one context."""

    token_ids: tuple[int, ...]
    seqs: list[int] = field(repr=False)
    owner: Sequences = field(repr=False)


@dataclass(frozen=True)
class Span:
    """Tokens `start:end` of `prompt` to decode into sequence `seq` (which holds those before `start`); `row`: the
    batch row that takes the logits of the prompt's last token (None: no logits)."""

    prompt: Sequence[int]
    start: int
    end: int
    seq: int
    row: int | None = None

    def pieces(self) -> list[Span]:
        """This span in the pieces llama.cpp's own generation decodes a prompt in: FORWARD_TOKENS tokens from the
        prompt's start."""
        ends = [*range((self.start // FORWARD_TOKENS + 1) * FORWARD_TOKENS, self.end, FORWARD_TOKENS), self.end]
        return [replace(self, start=start, end=end) for start, end in zip([self.start, *ends[:-1]], ends, strict=True)]


class LlamaBatch:
    """Rows decoded together: row i is sequence `seqs[i]`, holding `positions[i]` tokens. `token_ids` as the torch
    batch keeps them (left-padded with -1, the token each row feeds next last), for the penalties: a torch view of a
    numpy buffer, which a step touches only in numpy. Its sequences go back to `owner` as rows leave, and when it
    goes."""

    def __init__(self, seqs: list[int], positions: np.ndarray, token_ids: torch.Tensor | np.ndarray,
                 owner: Sequences) -> None:
        self.seqs = seqs
        self.positions = positions
        self.token_ids = token_ids
        self.owner = owner
        weakref.finalize(self, owner.release, seqs)

    @property
    def token_ids(self) -> torch.Tensor:
        return torch.from_numpy(self._tokens[:, :self._width])

    @token_ids.setter
    def token_ids(self, value: torch.Tensor | np.ndarray) -> None:
        self._tokens = value.numpy() if isinstance(value, torch.Tensor) else value
        self._width = self._tokens.shape[1]

    @property
    def next_tokens(self) -> np.ndarray:
        """The token each row feeds next."""
        return self._tokens[:, self._width - 1]

    @property
    def size(self) -> int:
        return len(self.seqs)

    def append(self, tokens: torch.Tensor | np.ndarray) -> None:
        """Add a column, into room kept after the last (a step's new copy of every row's tokens cost 50 us)."""
        if self._width == self._tokens.shape[1]:
            room = np.full((self._tokens.shape[0], max(TOKEN_ROOM, self._width)), PAD, dtype=self._tokens.dtype)
            self._tokens = np.concatenate([self._tokens[:, :self._width], room], axis=1)
        self._tokens[:, self._width] = tokens
        self._width += 1

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order): the others' sequences go, and the columns that are padding in every
        row kept."""
        index = list(rows)
        kept = set(index)
        self.owner.release([seq for row, seq in enumerate(self.seqs) if row not in kept])
        self.seqs[:] = [self.seqs[row] for row in index]  # in place: the finalizer's list
        self.positions = self.positions[index]
        token_ids = self._tokens[index, :self._width]
        self.token_ids = token_ids[:, int((token_ids != PAD).any(axis=0).argmax()):]

    def extend(self, other: LlamaBatch) -> None:
        """Take `other`'s rows after these."""
        width = max(self.token_ids.shape[1], other.token_ids.shape[1])
        self.token_ids = left_padded([self.token_ids, other.token_ids], width, PAD)
        self.positions = np.concatenate([self.positions, other.positions])
        self.seqs.extend(other.seqs)
        other.seqs.clear()


class Weights:
    """A loaded llama_model, freed when it goes (after every context over it: each holds it)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        if model:
            weakref.finalize(self, llama_cpp.llama_model_free, model)


class LlamaCppModel:
    """A GGUF file loaded by llama.cpp on the CPU: the scheduler's `BatchModel`. Its context is made at the first
    forward for the last `reshape`, and made again (when no row is running) for a new one."""

    device = torch.device("cpu")
    step_tokens = FORWARD_TOKENS
    # torch only chooses tokens beside llama.cpp (sampled rows; greedy ones use numpy): on one thread, so that its
    # small ops do not each wake a second OpenMP thread on the cores llama.cpp's forwards run on.
    torch_threads = 1

    def __init__(self, path: Path, threads: int, batch_invariant: bool = False, huge_pages: bool = True) -> None:
        llama_cpp.llama_backend_init()
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's chatter on stderr
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        self.name = path.name
        self.threads = threads
        self.batch_invariant = batch_invariant
        # Read into memory to be moved onto huge pages (on a thread of its own, while the replica loads and serves);
        # where that cannot be, mapped from the file (and shared) as llama.cpp does by default.
        memory = NewMemory(off=None if huge_pages else "engine.huge_pages is off")
        params.load_mode = (llama_cpp.LLAMA_LOAD_MODE_NONE if memory.unavailable is None
                            else llama_cpp.LLAMA_LOAD_MODE_MMAP)
        with memory:
            self.weights = Weights(llama_cpp.llama_model_load_from_file(str(path).encode(), params))
        if not self.weights.model:
            raise LlamaCppError(f"llama.cpp could not load {path.name}")
        if memory.unavailable is not None:
            log.info("llama.cpp mapped %s from the file: %s", path.name, memory.unavailable)
        # The weights' move onto huge pages: what it did, once done.
        self.huge_pages = on_new_thread(_onto_huge_pages, path.name, memory, name="huge-pages")
        self.model = self.weights.model
        self.vocab = vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.context_tokens = int(llama_cpp.llama_model_n_ctx_train(self.model))
        # The GGUF's end-of-generation tokens: where llama.cpp's own generation stops.
        self.eos_ids = tuple(token for token in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, token))
        self.shape = CacheShape(1, min(self.context_tokens, MIN_ROW_TOKENS))
        self.context: Context | None = None
        self._making: Future[Context] | None = None  # a context being made in the background (`reshape`)
        self._batches: weakref.WeakSet[LlamaBatch] = weakref.WeakSet()

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokens for `text` (special tokens parsed, none added)."""
        data = text.encode()
        size = len(data) + 1
        while True:
            tokens = (llama_cpp.llama_token * size)()
            count = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, size, False, True)
            if count >= 0:
                return list(tokens[:count])
            size = -count

    def bytes_per_token(self) -> int:
        """The KV cache one token takes (keys and values of every layer, 16 bits each)."""
        model = self.model
        heads = max(llama_cpp.llama_model_n_head(model), 1)
        head_size = llama_cpp.llama_model_n_embd(model) // heads
        return max(llama_cpp.llama_model_n_layer(model) * llama_cpp.llama_model_n_head_kv(model) * head_size * 4, 1)

    def fit(self, max_batch_size: int, max_total_tokens: int | None, total_tokens: int | None = None) -> CacheShape:
        """The cache shape for these limits: `max_total_tokens` per row (None: the model's context, or less) and
        up to `max_batch_size` rows, within `total_tokens` for all (None: what KV_CACHE_BYTES holds)."""
        budget = total_tokens if total_tokens is not None else KV_CACHE_BYTES // self.bytes_per_token()
        sequences = min(max_batch_size, MAX_SEQUENCES - SPARE_SEQUENCES) + SPARE_SEQUENCES
        if max_total_tokens is None:
            row_tokens = min(self.context_tokens, max(MIN_ROW_TOKENS, budget // sequences))
        else:
            row_tokens = min(self.context_tokens, max_total_tokens)
        row_tokens = max(KV_PADDING, row_tokens // KV_PADDING * KV_PADDING)
        rows = max(1, min(sequences, budget // row_tokens) - SPARE_SEQUENCES)
        return CacheShape(rows, row_tokens)

    def reshape(self, shape: CacheShape, background: bool = False) -> None:
        """Hold `shape` from now on: its context is made at the next forward, or (`background`, while there is no
        context yet) starting now on another thread, so that its cache's allocation (about a second for 2 GiB)
        overlaps the rest of the replica's load; the next forward waits for it."""
        self.shape = shape
        if background and self.context is None and self._making is None:
            self._making = on_new_thread(Context, self, shape, name="llama-context")

    def prefill(self, prompts: Sequence[Sequence[int]], prefix: LlamaPrefix | None = None,
                adopt: bool = False) -> tuple[LlamaBatch, np.ndarray]:
        context = self._context()
        sequences = context.sequences
        if prefix is not None and prefix.owner is not sequences:  # made in a context since replaced: recompute
            prefix = None
        if prefix is not None and adopt:
            seqs = list(prefix.seqs)
            prefix.seqs.clear()
        else:
            seqs = sequences.take(len(prompts))
        batch = LlamaBatch(seqs, np.array([len(prompt) for prompt in prompts], dtype=np.int32),
                           left_padded([torch.tensor([list(prompt)]) for prompt in prompts],
                                       max(len(prompt) for prompt in prompts), PAD), sequences)
        self._batches.add(batch)
        spans = []
        for row, (prompt, seq) in enumerate(zip(prompts, seqs, strict=True)):
            start = 0 if prefix is None else len(prefix.token_ids)
            if prefix is not None and not adopt:
                if not self.batch_invariant or prefix_splits_alike(start, len(prompt)):
                    llama_cpp.llama_memory_seq_cp(sequences.memory, prefix.seqs[0], seq, -1, -1)
                else:
                    start = 0
            spans.append(Span(prompt, start, len(prompt), seq, row))
        logits = np.empty((len(prompts), self.vocab_size), dtype=np.float32)
        context.prefill(self.forwards(spans), logits)
        return batch, logits

    def forwards(self, spans: list[Span]) -> list[list[Span]]:
        """The forwards that prefill `spans`: batch-invariant, each prompt on its own in llama.cpp's own pieces (see
        the module docstring); otherwise all of them packed FORWARD_TOKENS tokens at a time, as llama-server does."""
        if self.batch_invariant:
            return [[piece] for span in spans for piece in span.pieces()]
        forwards: list[list[Span]] = [[]]
        room = FORWARD_TOKENS
        for span in sorted(spans, key=lambda span: span.seq):  # consecutive sequences: fewer passes (see above)
            start = span.start
            while start < span.end:
                if room == 0:
                    forwards.append([])
                    room = FORWARD_TOKENS
                end = min(span.end, start + room)
                forwards[-1].append(replace(span, start=start, end=end))
                room -= end - start
                start = end
        return forwards

    def decode(self, batch: LlamaBatch) -> np.ndarray:
        logits = self._context().decode(batch.next_tokens.astype(np.int32), batch.positions,
                                        np.asarray(batch.seqs, dtype=np.int32))
        batch.positions = batch.positions + 1
        return logits

    def prefix(self, token_ids: Sequence[int], after: LlamaPrefix | None = None) -> LlamaPrefix:
        context = self._context()
        sequences = context.sequences
        if after is not None and after.owner is sequences:
            seqs, done = list(after.seqs), after.token_ids
            after.seqs.clear()  # used up: its sequence is the new prefix's
        else:  # none, or one made in a context since replaced: all computed here
            seqs, done = sequences.take(1), ()
        prefix = LlamaPrefix((*(after.token_ids if after is not None else ()), *token_ids), seqs, sequences)
        weakref.finalize(prefix, sequences.release, seqs)
        context.prefill(self.forwards([Span(prefix.token_ids, len(done), len(prefix.token_ids), seqs[0])]))
        return prefix

    def close(self) -> None:
        """Free the context (once one being made in the background is made); the model goes with its last user."""
        making, self._making, self.context = self._making, None, None
        if making is not None:
            making.exception()  # waits; what went wrong no longer matters

    def _context(self) -> Context:
        """The context for the current shape (made again only when no row is running)."""
        if self._making is not None:
            made, self._making = self._making.result(), None  # raises what making it raised
            if self.context is None and made.shape == self.shape:
                self.context = made
            del made  # one for another shape goes now, with its cache's memory
        current = self.context
        if current is None or (current.shape != self.shape and not self._batches):
            self.context = None  # the old one goes first: its cache's memory with it
            self.context = Context(self, self.shape)
            if current is not None:
                log.info("llama.cpp context resized from %s to %s", current.shape, self.shape)
            return self.context
        return current


class Context:
    """One llama_context in a shape, and its forwards (prompts' pieces, a step's rows) through one `llama_batch`
    whose arrays are numpy's (filled without a Python loop)."""

    def __init__(self, model: LlamaCppModel, shape: CacheShape) -> None:
        sequences = shape.rows + SPARE_SEQUENCES
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = sequences * shape.row_tokens
        params.n_batch = params.n_ubatch = FORWARD_TOKENS
        params.n_seq_max = sequences
        params.n_threads = params.n_threads_batch = model.threads
        params.kv_unified = False
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED if model.batch_invariant
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED)
        params.no_perf = True
        self.context = llama_cpp.llama_init_from_model(model.model, params)
        if not self.context:
            raise LlamaCppError(f"llama.cpp could not make a context of {sequences} x {shape.row_tokens} tokens for "
                                f"{model.name}")
        weakref.finalize(self, llama_cpp.llama_free, self.context)
        self.weights = model.weights
        self.shape = shape
        self.vocab_size = model.vocab_size
        self.logits_views: dict[tuple[int, int], np.ndarray] = {}
        self.sequences = Sequences(llama_cpp.llama_get_memory(self.context), sequences)
        size = FORWARD_TOKENS  # at least MAX_SEQUENCES: a step's rows fit
        self.token = np.zeros(size, dtype=np.int32)
        self.pos = np.zeros(size, dtype=np.int32)
        self.n_seq_id = np.ones(size, dtype=np.int32)
        self.seq = np.zeros(size, dtype=np.int32)
        self.output = np.zeros(size, dtype=np.int8)
        int_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self.seq_ptrs = (int_p * size)(*[ctypes.cast(base + 4 * i, int_p) for i in range(size)])
        self.batch = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(int_p),
            embd=None,
            pos=self.pos.ctypes.data_as(int_p),
            n_seq_id=self.n_seq_id.ctypes.data_as(int_p),
            seq_id=ctypes.cast(self.seq_ptrs, ctypes.POINTER(int_p)),
            logits=self.output.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def prefill(self, forwards: list[list[Span]], logits: np.ndarray | None = None) -> None:
        """Decode each forward's spans into their sequences (each holding its prompt up to the span's start); the
        logits of a prompt's last token go to its span's row of `logits`."""
        self.sequences.flush()
        for spans in forwards:
            count = 0
            outputs = []
            for span in spans:
                end = count + span.end - span.start
                self.token[count:end] = span.prompt[span.start:span.end]
                self.pos[count:end] = np.arange(span.start, span.end, dtype=np.int32)
                self.seq[count:end] = span.seq
                self.output[count:end] = 0
                if span.row is not None and span.end == len(span.prompt):
                    self.output[end - 1] = 1
                    outputs.append(span.row)
                count = end
            self._decode(count)
            if outputs and logits is not None:
                logits[outputs] = self._logits(len(outputs))

    def decode(self, tokens: np.ndarray, positions: np.ndarray, seqs: np.ndarray) -> np.ndarray:
        """Decode one token for each row (sequence `seqs[i]`, at `positions[i]`): every row's logits, in order (a
        view of llama.cpp's buffer when the rows are in sequence order: valid until the next forward)."""
        self.sequences.flush()
        count = len(tokens)
        # Rows usually are in sequence order already (always, alone): then no reordering either way.
        order = None if count == 1 or bool((seqs[1:] > seqs[:-1]).all()) else np.argsort(seqs, kind="stable")
        self.token[:count] = tokens if order is None else tokens[order]
        self.pos[:count] = positions if order is None else positions[order]
        self.seq[:count] = seqs if order is None else seqs[order]
        self.output[:count] = 1
        self._decode(count)
        logits = self._logits(count)
        return logits if order is None else logits[np.argsort(order)]

    def _logits(self, rows: int) -> np.ndarray:
        """The first `rows` rows of llama.cpp's logits buffer, as an array on its memory. Views are kept by the
        buffer's address and rows: a step's view costs a lookup, not a new ctypes array type (microseconds a token
        for one row). A buffer llama.cpp reallocates has a new address; one at an old address holds these rows too
        (the forward just wrote them)."""
        address = ctypes.cast(llama_cpp.llama_get_logits(self.context), ctypes.c_void_p).value
        if address is None:
            raise LlamaCppError("llama.cpp returned no logits")
        view = self.logits_views.get((address, rows))
        if view is None:
            if len(self.logits_views) >= MAX_SEQUENCES:
                self.logits_views.clear()
            array = (ctypes.c_float * (rows * self.vocab_size)).from_address(address)
            view = self.logits_views[(address, rows)] = np.ctypeslib.as_array(array).reshape(rows, self.vocab_size)
        return view

    def _decode(self, count: int) -> None:
        self.batch.n_tokens = count
        code = llama_cpp.llama_decode(self.context, self.batch)
        if code != 0:
            raise LlamaCppError(f"llama_decode failed: {DECODE_ERRORS.get(code, code)}")


def prefix_splits_alike(start: int, length: int) -> bool:
    """Whether a prompt of `length` tokens prefilled after a prefix of `start` (in pieces of FORWARD_TOKENS from its
    start) has no piece of one token where llama.cpp's own prefill (pieces from 0) has several: its first piece."""
    first = min(length, (start // FORWARD_TOKENS + 1) * FORWARD_TOKENS) - start
    return first > 1 or start % FORWARD_TOKENS == 0


DECODE_ERRORS = {1: "no room in the KV cache", 2: "aborted", -1: "invalid input batch"}

