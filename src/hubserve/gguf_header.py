"""A GGUF file's header read with `struct` alone: its architecture, and whether it reads as GGUF at all.

gguf-py's `GGUFReader` builds a numpy view of every metadata value, which takes seconds for a tokenizer's
vocabulary of 50,000 strings (4 s for SmolLM2's, on each of several reads per load); this walks the same bytes in
tens of milliseconds, and needs neither numpy nor torch (the API process' catalog reads it too).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

# Value types of fixed size (bytes); 8 is a string, 9 an array.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# No key, name or string value of a sane file is longer: a larger length is a corrupt file, not one to read.
_LONGEST_STRING = 1 << 24
_MOST_DIMENSIONS = 8


def gguf_architecture(path: Path) -> str:
    """`general.architecture` ("" when unreadable): the key-value pairs are read in order until it comes, which is
    first in files that llama.cpp's and gguf's writers make."""
    try:
        with open(path, "rb") as handle:
            pairs = _header(handle)[1]
            for _ in range(pairs):
                key = _string(handle)
                (kind,) = struct.unpack("<I", handle.read(4))
                if key == "general.architecture" and kind == _STRING:
                    return _string(handle)
                _skip_value(handle, kind)
    except (OSError, ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return ""
    return ""


def check_gguf(path: Path) -> None:
    """A ValueError, saying what is wrong, unless the file's header, metadata and tensor table read as GGUF and
    every tensor's data starts inside the file."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            tensors, pairs = _header(handle)
            for _ in range(pairs):
                _string(handle)
                (kind,) = struct.unpack("<I", handle.read(4))
                _skip_value(handle, kind)
            for _ in range(tensors):
                name = _string(handle)
                (dimensions,) = struct.unpack("<I", handle.read(4))
                if dimensions > _MOST_DIMENSIONS:
                    raise ValueError(f"tensor {name!r} has {dimensions} dimensions")
                handle.seek(8 * dimensions + 4, os.SEEK_CUR)  # the dimensions, then the tensor type
                (offset,) = struct.unpack("<Q", handle.read(8))
                if offset >= size:
                    raise ValueError(f"tensor {name!r} starts past the end of the file")
            if handle.tell() > size:
                raise ValueError("the file ends inside its header")
    except struct.error:
        raise ValueError("the file ends inside its header") from None
    except UnicodeDecodeError:
        raise ValueError("a key or a name is not UTF-8") from None


def _header(handle: BinaryIO) -> tuple[int, int]:
    """The counts of tensors and of key-value pairs, after the magic and a version this reader knows."""
    magic, version, tensors, pairs = struct.unpack("<4sIQQ", handle.read(24))
    if magic != b"GGUF":
        raise ValueError("it does not start with the GGUF magic")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not one this server reads (2 or 3)")
    return tensors, pairs


def _string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > _LONGEST_STRING:
        raise ValueError(f"a string of {length} bytes")
    data = handle.read(length)
    if len(data) < length:
        raise struct.error("short read")
    return data.decode()


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SIZES:
        handle.seek(_SIZES[kind], os.SEEK_CUR)
    elif kind == _STRING:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > _LONGEST_STRING:
            raise ValueError(f"a string of {length} bytes")
        handle.seek(length, os.SEEK_CUR)
    elif kind == _ARRAY:
        item_kind, count = struct.unpack("<IQ", handle.read(12))
        if item_kind in _SIZES:
            handle.seek(_SIZES[item_kind] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(handle, item_kind)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
