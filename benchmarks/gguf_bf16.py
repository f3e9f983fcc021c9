"""A bf16 GGUF of a quantised GGUF's weights: every tensor dequantised and rounded to bf16, every other field as is.

Why not `convert_hf_to_gguf.py` from the model transformers dequantises: that path writes the tokenizer fields anew
from a `tokenizer.json` transformers itself rebuilt from the GGUF (and needs `sentencepiece`), so the two files could
tokenize differently. Here the tokenizer, chat template and hyperparameters are copied field by field, and each
weight is `bf16(dequantize(q))` with gguf-py's `dequantize`, the function transformers' GGUF loader uses: the values
are bit for bit those hubserve's torch backend serves at `dtype: bfloat16` from the quantised file.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

FORMAT_VERSION = "2"  # of this conversion: a change makes a new cache entry


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def bf16_gguf(quantised: Path, cache: Path) -> Path:
    """The bf16 GGUF of `quantised`, written under `cache/gguf-bf16/` the first time (keyed by the file's content)."""
    out = cache / "gguf-bf16" / _content_hash(quantised) / (quantised.stem.split(".")[0] + ".BF16.gguf")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(f".{os.getpid()}.partial")
        write_bf16(quantised, partial)
        partial.rename(out)  # a whole file or none: an interrupted run leaves only the partial one
    return out


def write_bf16(source: Path, target: Path) -> None:
    """Write `source`'s fields and tensors to `target`: every tensor of two or more dimensions dequantised and stored
    as BF16, one-dimensional ones (norms) as F32, as llama.cpp's own converter does with `--outtype bf16`."""
    import gguf

    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, architecture, endianess=reader.endianess)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by the writer itself
        value = field.contents()
        if key == "general.file_type":
            value = gguf.LlamaFileType.MOSTLY_BF16
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if weights.ndim < 2:
            writer.add_tensor(tensor.name, weights)
        else:
            packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(tensor.name, packed, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def file_type(path: Path) -> str:
    """What a GGUF file holds: "Q4_1", "BF16", "F32", ... as its `general.file_type` says, else the type most of its
    matrices have."""
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields.get("general.file_type")
    if field is not None:
        return gguf.LlamaFileType(field.contents()).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    kinds = Counter(tensor.tensor_type.name for tensor in reader.tensors if len(tensor.shape) > 1)
    return kinds.most_common(1)[0][0] if kinds else "unknown type"
