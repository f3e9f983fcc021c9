"""Choosing every row's next token at once: generate()'s repetition penalty, min_new_tokens, temperature, top-k and
top-p as per-row tensors, greedy rows by one argmax, sampled rows each with their own seeded `torch.Generator`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hubserve.worker.generation.types import SamplingParams


@dataclass
class RowSampling:
    """The settings of a batch's rows as tensors: rebuilt when rows join or leave, not at every step."""

    sampled: torch.Tensor | None  # row indices that sample (None: all greedy)
    temperature: torch.Tensor  # of the sampled rows, like the three below
    top_k: torch.Tensor  # 0 (off) already replaced by the vocabulary size
    top_p: torch.Tensor
    generators: list[torch.Generator]
    penalty: torch.Tensor | None  # every row's repetition penalty (None: no row has one)
    min_new: list[tuple[int, int, list[int]]]  # (row, min_new_tokens, eos ids) of rows that bound EOS

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
        return cls(
            sampled=torch.tensor(rows, device=device) if rows else None,
            temperature=torch.tensor([p.temperature for p in picked], device=device),
            top_k=torch.tensor([p.top_k or vocab_size for p in picked], device=device).clamp(max=vocab_size),
            top_p=torch.tensor([p.top_p for p in picked], device=device),
            generators=[_generator(generators[row]) for row in rows],
            penalty=torch.tensor(penalties, device=device) if any(p != 1.0 for p in penalties) else None,
            min_new=[(row, p.min_new_tokens, list(eos_ids[row])) for row, p in enumerate(params) if p.min_new_tokens],
        )


def _generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        raise ValueError("a sampled row needs its generator")
    return generator


def choose(
    logits: torch.Tensor, rows: RowSampling, token_ids: torch.Tensor, generated: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of every row and its log-probability under the distribution it was chosen from.

    `token_ids` holds every row's tokens so far (prompt included, -1 where left padding), for the penalty;
    `generated` how many tokens each row generated so far, for min_new_tokens.
    """
    scores = logits.float()
    for row, min_new, eos in rows.min_new:
        if generated[row] < min_new and eos:
            scores[row, eos] = -float("inf")
    if rows.penalty is not None:
        scores = penalize(scores, token_ids, rows.penalty)
    tokens = scores.argmax(dim=-1)
    logprobs = scores.gather(1, tokens[:, None]).squeeze(1) - scores.logsumexp(dim=-1)
    if rows.sampled is not None:
        picked, picked_logprobs = sample(scores[rows.sampled], rows)
        tokens[rows.sampled] = picked
        logprobs[rows.sampled] = picked_logprobs
    return tokens, logprobs


def penalize(scores: torch.Tensor, token_ids: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """generate()'s repetition penalty: the scores of tokens already in a row divided by its penalty (multiplied
    when negative); padding (-1) goes to a spare column that is dropped."""
    vocab = scores.shape[-1]
    seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, token_ids.masked_fill(token_ids < 0, vocab), True)
    factor = penalty[:, None].to(scores.dtype)
    penalized = torch.where(scores < 0, scores * factor, scores / factor)
    return torch.where(seen[:, :vocab], penalized, scores)


def sample(scores: torch.Tensor, rows: RowSampling) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, then top-k, then top-p (generate()'s order), then one multinomial draw per row."""
    scores = scores / rows.temperature[:, None]
    widest = int(rows.top_k.max())
    values, indices = scores.topk(widest, dim=-1)  # sorted, largest first
    ranks = torch.arange(widest, device=scores.device)
    values = values.masked_fill(ranks[None, :] >= rows.top_k[:, None], -float("inf"))
    if bool((rows.top_p < 1.0).any()):
        probs = values.softmax(dim=-1)
        # generate() drops the tokens whose ascending cumulative probability is <= 1 - top_p: in descending
        # order, those whose predecessors already hold top_p (the most likely token always stays).
        before = probs.cumsum(dim=-1) - probs
        values = values.masked_fill(before >= rows.top_p[:, None], -float("inf"))
    probs = values.softmax(dim=-1)
    draws = torch.cat(
        [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(rows.generators)]
    )
    chosen = probs.gather(1, draws[:, None]).squeeze(1)
    return indices.gather(1, draws[:, None]).squeeze(1), chosen.log()
