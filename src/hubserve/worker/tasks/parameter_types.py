"""The JSON types task parameters take, checked strictly before a request reaches a model: `true` is not an
integer (although Python's bool is one), `1.5` is not an integer, `"ten"` is not a number. A parameter of the
wrong type is the caller's error (400) naming it, never the model's (424), nor silently read as something else."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hubserve.errors import BadRequest


@dataclass(frozen=True)
class Expected:
    """What a parameter accepts, and how an error message says it."""

    description: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: Expected) -> Expected:
        return Expected(f"{self.description} or {other.description}",
                        lambda value: self.accepts(value) or other.accepts(value))


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


INTEGER = Expected("an integer", _integer)
POSITIVE_INTEGER = Expected("a positive integer", lambda value: _integer(value) and value > 0)
NUMBER = Expected("a number", lambda value: isinstance(value, int | float) and not isinstance(value, bool))
BOOLEAN = Expected("true or false", lambda value: isinstance(value, bool))
STRING = Expected("a string", lambda value: isinstance(value, str))
STRINGS = Expected("a list of strings",
                   lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value))
INTEGERS = Expected("a list of integers", lambda value: isinstance(value, list) and all(map(_integer, value)))
LIST = Expected("a list", lambda value: isinstance(value, list))
OBJECT = Expected("an object", lambda value: isinstance(value, dict))
NULL = Expected("null", lambda value: value is None)


def one_of(*choices: str) -> Expected:
    return Expected("one of " + ", ".join(json.dumps(choice) for choice in choices),
                    lambda value: isinstance(value, str) and value in choices)


def optional(expected: Expected) -> Expected:
    """`expected`, or null for "not set" (as TGI's optional parameters take it)."""
    return Expected(expected.description, lambda value: value is None or expected.accepts(value))


# The tokenizer's `truncation` and `padding` values (its TruncationStrategy and PaddingStrategy).
TRUNCATION = BOOLEAN | one_of("longest_first", "only_first", "only_second", "do_not_truncate")
PADDING = BOOLEAN | one_of("longest", "max_length", "do_not_pad")
# What the classification pipelines apply to their logits.
FUNCTION_TO_APPLY = one_of("sigmoid", "softmax", "none")


def check_types(parameters: Mapping[str, Any], types: Mapping[str, Expected], within: str = "") -> None:
    """BadRequest naming the first parameter whose value `types` does not accept (names it has no type for pass)."""
    for name, value in parameters.items():
        expected = types.get(name)
        if expected is not None and not expected.accepts(value):
            shown = json.dumps(value, default=repr)
            raise BadRequest(f"parameter `{within}{name}` must be {expected.description}; got {shown[:40]}")
