"""Continuous batching for text generation inside a replica: `GenerationEngine` runs one batched forward per step
for every running request on one background thread; requests join at the next step and leave when they end."""

from hubserve.worker.generation.engine import GenerationEngine
from hubserve.worker.generation.stream import TokenStream
from hubserve.worker.generation.types import GenerationLimits, GenerationResult, SamplingParams, TokenEvent, TopToken

__all__ = ["GenerationEngine", "GenerationLimits", "GenerationResult", "SamplingParams", "TokenEvent", "TokenStream",
           "TopToken"]
