"""Choosing every row's next token at once: generate()'s repetition penalty, min_new_tokens, temperature, top-k,
top-p and typical-p as per-row tensors, OpenAI's frequency and presence penalties, a grammar's mask; greedy rows by
one argmax, sampled rows each with their own seeded `torch.Generator`. Each setting costs nothing to the batches
whose rows leave it off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hubserve.worker.generation.forward import Logits
from hubserve.worker.generation.types import SamplingParams

NEG_INF = -float("inf")


@dataclass
class RowSampling:
    """The settings of a batch's rows as tensors (rows as lists, which index tensors without waiting for a device):
    rebuilt when rows join or leave, not at every step."""

    sampled: list[int]  # rows that sample
    temperature: torch.Tensor  # of the sampled rows, like the four below
    top_k: torch.Tensor  # 0 (off) already replaced by the vocabulary size
    top_p: torch.Tensor
    typical_p: torch.Tensor | None  # None: no sampled row has one
    generators: list[torch.Generator]
    penalty: torch.Tensor | None  # every row's repetition penalty (None: no row has one)
    counted: list[int]  # rows with a frequency or presence penalty, like the two below
    frequency: torch.Tensor
    presence: torch.Tensor
    min_new: list[tuple[int, int, np.ndarray]]  # (row, min_new_tokens, eos ids) of rows that bound EOS
    constrained: list[int]  # rows with a grammar, in the order of the mask `choose` takes
    top_n: dict[int, int]  # row -> how many alternatives it asks for
    # Every row greedy, with no penalty and no alternatives: `choose` then needs only each row's argmax and its log
    # probability, which it computes in numpy (see `choose_greedy`).
    plain_greedy: bool = False
    scratch: np.ndarray | None = field(default=None, repr=False)  # `choose_greedy`'s work buffer, kept between steps

    @property
    def penalized(self) -> bool:
        """Whether any row has a penalty, which needs the rows' tokens so far."""
        return self.penalty is not None or bool(self.counted)

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
        eos_ids: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
    ) -> RowSampling:
        rows = [row for row, p in enumerate(params) if p.do_sample]
        picked = [params[row] for row in rows]
        penalties = [p.repetition_penalty for p in params]
        counted = [row for row, p in enumerate(params) if p.frequency_penalty or p.presence_penalty]
        return cls(
            sampled=rows,
            temperature=torch.tensor([p.temperature for p in picked], device=device),
            top_k=torch.tensor([p.top_k or vocab_size for p in picked], device=device).clamp(max=vocab_size),
            top_p=torch.tensor([p.top_p for p in picked], device=device),
            typical_p=(torch.tensor([p.typical_p for p in picked], device=device)
                       if any(p.typical_p < 1.0 for p in picked) else None),
            generators=[_generator(generators[row]) for row in rows],
            penalty=torch.tensor(penalties, device=device) if any(p != 1.0 for p in penalties) else None,
            counted=counted,
            frequency=torch.tensor([params[row].frequency_penalty for row in counted], device=device),
            presence=torch.tensor([params[row].presence_penalty for row in counted], device=device),
            # A grammar decides itself when its answer may end.
            # EOS ids as index arrays: numpy and torch index with them as they are (a list is converted each step).
            min_new=[(row, p.min_new_tokens, np.asarray(eos_ids[row], dtype=np.intp)) for row, p in enumerate(params)
                     if p.min_new_tokens and p.grammar is None],
            constrained=[row for row, p in enumerate(params) if p.grammar is not None],
            top_n={row: p.top_n_tokens for row, p in enumerate(params) if p.top_n_tokens},
            plain_greedy=not rows and all(p.repetition_penalty == 1.0 and not p.frequency_penalty
                                          and not p.presence_penalty and not p.top_n_tokens and p.grammar is None
                                          for p in params),
        )


def _generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        raise ValueError("a sampled row needs its generator")
    return generator


@dataclass
class Choice:
    """Every row's next token, its log-probability under the distribution it was chosen from, and for the rows
    that ask, the most likely tokens of that distribution (ids and log-probabilities, most likely first)."""

    tokens: torch.Tensor | np.ndarray  # numpy from the greedy path (`choose_greedy`)
    logprobs: torch.Tensor | np.ndarray
    top: dict[int, tuple[list[int], list[float]]]


def choose(
    logits: Logits,
    rows: RowSampling,
    token_ids: torch.Tensor | None,
    generated: Sequence[int],
    refused: torch.Tensor | None = None,
) -> Choice:
    """The next token of every row.

    `token_ids` holds every row's tokens so far (prompt included, -1 where left padding, generated tokens last),
    for the penalties (None where no row has one: `rows.penalized`); `generated` how many tokens each row generated
    so far, for min_new_tokens and the frequency and presence penalties; `refused` the tokens each of
    `rows.constrained` may not take (a boolean row each).
    """
    if isinstance(logits, np.ndarray):
        if rows.plain_greedy and refused is None:
            return choose_greedy(logits, rows, generated)
        logits = torch.from_numpy(logits)
    elif rows.plain_greedy and refused is None and logits.device.type == "cpu":
        return choose_greedy(logits.detach().float().numpy(), rows, generated)
    scores = logits.float()
    for row, min_new, eos in rows.min_new:
        if generated[row] < min_new and len(eos):
            scores[row, torch.from_numpy(eos)] = NEG_INF
    if rows.penalized:
        assert token_ids is not None, "penalties need each row's tokens"
        if rows.penalty is not None:
            scores = penalize(scores, token_ids, rows.penalty)
        if rows.counted:
            scores = penalize_counts(scores, token_ids, generated, rows)
    if refused is not None and len(rows.constrained) == len(scores):  # every row: in place, no copies
        scores.masked_fill_(refused, NEG_INF)
    elif refused is not None:
        scores[rows.constrained] = scores[rows.constrained].masked_fill(refused, NEG_INF)
    tokens = scores.argmax(dim=-1)
    norms = scores.logsumexp(dim=-1)
    logprobs = scores.gather(1, tokens[:, None]).squeeze(1) - norms
    top: dict[int, tuple[list[int], list[float]]] = {}
    sampled = rows.sampled
    greedy = [row for row in rows.top_n if row not in sampled]
    if greedy:
        values, ids = scores[greedy].topk(widest(greedy, rows.top_n, scores), dim=-1)
        top.update(alternatives(greedy, rows.top_n, values - norms[greedy, None], ids))
    if sampled:
        picked, picked_logprobs, probs, indices = sample(scores[sampled], rows)
        tokens[sampled] = picked
        logprobs[sampled] = picked_logprobs
        asking = [at for at, row in enumerate(sampled) if row in rows.top_n]
        if asking:
            asking_rows = [sampled[at] for at in asking]
            values, at = probs[asking].topk(widest(asking_rows, rows.top_n, probs), dim=-1)
            top.update(alternatives(asking_rows, rows.top_n, values.log(), indices[asking].gather(1, at)))
    return Choice(tokens, logprobs, top)


def choose_greedy(values: np.ndarray, rows: RowSampling, generated: Sequence[int]) -> Choice:
    """Every row's most likely token (the first, among equals: torch's argmax too) and its log-probability, in
    numpy on the float32 scores' own memory: one thread, no copy of the logits (torch's argmax and logsumexp over a
    49k vocabulary cost several times as much CPU on a small batch, and wake torch's thread pool beside the model's).
    The EOS of rows short of their min_new_tokens (`generated` so far) is refused here too: in numpy, right after a
    forward each torch call costs tens of microseconds more (measured: a step's choice took 0.35 ms through torch,
    0.2 ms so). Tokens and log-probabilities stay numpy arrays: a step of a llama.cpp model touches no torch."""
    if not values.flags.c_contiguous:
        values = np.ascontiguousarray(values)
    for row, min_new, eos in rows.min_new:
        if generated[row] < min_new and len(eos):
            values[row, eos] = NEG_INF
    tokens = values.argmax(axis=-1)
    best = values[np.arange(len(values)), tokens]
    if rows.scratch is None or rows.scratch.shape != values.shape:
        rows.scratch = np.empty_like(values)
    shifted = np.subtract(values, best[:, None], out=rows.scratch)
    # log p(token) = token's score - logsumexp(scores) = -log(sum(exp(scores - token's score))).
    logprobs = -np.log(np.exp(shifted, out=shifted).sum(axis=-1))
    return Choice(tokens, logprobs, {})


def widest(rows: list[int], top_n: dict[int, int], scores: torch.Tensor) -> int:
    return min(max(top_n[row] for row in rows), scores.shape[-1])


def alternatives(
    rows: list[int], top_n: dict[int, int], logprobs: torch.Tensor, ids: torch.Tensor
) -> dict[int, tuple[list[int], list[float]]]:
    """For each of `rows`, its `top_n[row]` most likely tokens (`ids`, their `logprobs`: one row each, sorted) that
    have any probability."""
    top = {}
    for row, row_logprobs, row_ids in zip(rows, logprobs.tolist(), ids.tolist(), strict=True):
        kept = [k for k, value in enumerate(row_logprobs[: top_n[row]]) if value != NEG_INF]
        top[row] = ([row_ids[k] for k in kept], [row_logprobs[k] for k in kept])
    return top


def penalize(scores: torch.Tensor, token_ids: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """generate()'s repetition penalty: the scores of tokens already in a row divided by its penalty (multiplied
    when negative); padding (-1) goes to a spare column that is dropped."""
    vocab = scores.shape[-1]
    seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, token_ids.masked_fill(token_ids < 0, vocab), True)
    factor = penalty[:, None].to(scores.dtype)
    penalized = torch.where(scores < 0, scores * factor, scores / factor)
    return torch.where(seen[:, :vocab], penalized, scores)


def penalize_counts(
    scores: torch.Tensor, token_ids: torch.Tensor, generated: Sequence[int], rows: RowSampling
) -> torch.Tensor:
    """OpenAI's penalties on the rows that have one: a token's score minus `frequency` times how often the row
    generated it, minus `presence` once it did. Generated tokens are each row's last columns of `token_ids`; older
    columns go to a spare column that is dropped."""
    vocab = scores.shape[-1]
    width = max(generated[row] for row in rows.counted)
    if width == 0:
        return scores
    counts_of = torch.tensor([generated[row] for row in rows.counted], device=scores.device)
    recent = token_ids[rows.counted, -width:]
    older = torch.arange(width, device=scores.device)[None, :] < (width - counts_of)[:, None]
    recent = recent.masked_fill(older, vocab)
    counts = torch.zeros(recent.shape[0], vocab + 1, device=scores.device)
    counts.scatter_add_(1, recent, torch.ones_like(recent, dtype=counts.dtype))
    counts = counts[:, :vocab]
    penalty = rows.frequency[:, None] * counts + rows.presence[:, None] * (counts > 0)
    scores[rows.counted] -= penalty.to(scores.dtype)
    return scores


def sample(scores: torch.Tensor, rows: RowSampling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Temperature, then top-k, then top-p, then typical-p (generate()'s order), then one multinomial draw per row:
    the tokens, their log-probabilities, and the distribution drawn from (probabilities over the token ids beside)."""
    scores = scores / rows.temperature[:, None]
    widest = int(rows.top_k.max())
    values, indices = scores.topk(widest, dim=-1)  # sorted, largest first
    ranks = torch.arange(widest, device=scores.device)
    values = values.masked_fill(ranks[None, :] >= rows.top_k[:, None], NEG_INF)
    if bool((rows.top_p < 1.0).any()):
        probs = values.softmax(dim=-1)
        # generate() drops the tokens whose ascending cumulative probability is <= 1 - top_p: in descending
        # order, those whose predecessors already hold top_p (the most likely token always stays).
        before = probs.cumsum(dim=-1) - probs
        values = values.masked_fill(before >= rows.top_p[:, None], NEG_INF)
    if rows.typical_p is not None:
        values = typical(values, rows.typical_p)
    probs = values.softmax(dim=-1)
    draws = torch.cat(
        [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(rows.generators)]
    )
    chosen = probs.gather(1, draws[:, None]).squeeze(1)
    return indices.gather(1, draws[:, None]).squeeze(1), chosen.log(), probs, indices


def typical(values: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """transformers' `TypicalLogitsWarper` per row (`mass` 1.0 leaves a row as it is): keep the tokens whose
    information is closest to the distribution's entropy, the fewest that hold `mass` (the closest always stays)."""
    logprobs = values.log_softmax(dim=-1)
    entropy = -(logprobs * logprobs.exp()).nansum(dim=-1, keepdim=True)
    distance, order = (-logprobs - entropy).abs().sort(dim=-1)
    cumulative = values.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass[:, None]).sum(dim=1).clamp(max=values.shape[-1] - 1)
    dropped = distance > distance.gather(1, last[:, None])
    dropped[:, 0] = False
    dropped = dropped.scatter(1, order, dropped) & (mass[:, None] < 1.0)
    return values.masked_fill(dropped, NEG_INF)
