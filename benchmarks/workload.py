"""The fixed workloads: deterministic 12-word sentences and 16 chat prompts, the same for every configuration."""

from __future__ import annotations

import random

SENTENCE_WORDS = 12
NEW_TOKENS = 64

# Common English words; sentences are drawn from them with a seeded RNG, so every run sends the same text.
_WORD_TEXT = (
    "the a one two three some every small large old new quiet busy bright dark early late happy tired "
    "city river mountain garden kitchen office station market school library museum harbour forest road "
    "train bus car bicycle ship plane bridge tower window door table chair book letter song picture "
    "child teacher doctor farmer driver painter student friend neighbour family dog cat bird horse "
    "walks runs reads writes sings paints builds opens closes finds carries watches visits crosses "
    "near behind under over beside through across along around before after during since with without "
    "morning evening night summer winter spring autumn rain snow wind sunlight silence music"
)
WORDS = _WORD_TEXT.split()

# Sixteen distinct chat prompts for the generation suite (each answered with exactly NEW_TOKENS tokens).
PROMPTS = (
    "Describe a quiet morning in a small fishing village.",
    "Explain how a bicycle gear system works.",
    "Write a short story about a lost umbrella.",
    "What are three tips for learning a new language?",
    "Summarize the water cycle for a ten-year-old.",
    "Give advice to someone starting their first job.",
    "Describe the taste of a ripe summer peach.",
    "Why do leaves change colour in autumn?",
    "Write a haiku sequence about city trains.",
    "Explain what a database index is.",
    "List some ideas for a rainy weekend at home.",
    "Describe a busy market in the early evening.",
    "How does a refrigerator keep food cold?",
    "Write a letter thanking a teacher.",
    "What makes a good cup of tea?",
    "Tell me about the history of paper.",
)


def sentences(count: int, seed: int = 0, words: int = SENTENCE_WORDS) -> list[str]:
    """`count` sentences of `words` words each, the same for the same arguments."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=words)).capitalize() + "." for _ in range(count)]


def chat(prompt: str) -> list[dict[str, str]]:
    """The one-message conversation every generation configuration sends for `prompt`."""
    return [{"role": "user", "content": prompt}]
